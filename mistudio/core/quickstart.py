"""The whole workflow on the embedded defaults, as one job (grows as the app gains steps)."""

from __future__ import annotations

import time
from typing import Any

from mistudio.core.datasets import ensure_builtin_dataset
from mistudio.core.extraction import ExtractConfig, default_layer, extract_activations
from mistudio.core.jobs import SubTask, TaskState, silent_task
from mistudio.core.models import ensure_embedded_model, model_info
from mistudio.core.tokenization import TokenizeConfig, tokenize_dataset
from mistudio.core.workspace import Workspace

QUICKSTART_NAME = "quickstart"


def run_quickstart(ws: Workspace, task: TaskState | None = None, max_tokens: int = 20_000,
                   context_length: int = 128, device: str = "auto") -> dict[str, Any]:
    """Built-in corpus -> embedded model -> tokenize -> extract a middle layer. Reuses what exists."""
    task = task or silent_task()
    t0 = time.perf_counter()
    task.set_status("Registering the embedded model")
    model = ensure_embedded_model(ws)
    info = model_info(ws, model)
    task.set_status("Adding the built-in corpus")
    dataset = ensure_builtin_dataset(ws, "pydoc", SubTask(task, 0.0, 0.05))
    tok = tokenize_dataset(ws, TokenizeConfig(dataset, model, context_length),
                           task=SubTask(task, 0.05, 0.15))
    layer = default_layer(info.n_layers)
    cfg = ExtractConfig(model, tok["name"], (layer,), ("resid_post",), context_length,
                        max_tokens=max_tokens, device=device)
    existing = ws.catalog.find("activations", QUICKSTART_NAME)
    if existing is not None and existing.status == "complete" and \
            existing.config.get("data") == cfg.data_fields():
        acts = {"summary": existing.summary, "name": QUICKSTART_NAME, "reused": True}
    else:
        acts = extract_activations(ws, cfg, QUICKSTART_NAME, SubTask(task, 0.15, 1.0),
                                   overwrite=existing is not None and existing.status == "complete")
    task.set_progress(1.0)
    return {
        "workspace": str(ws.root),
        "model": {"name": model, **{k: getattr(info, k) for k in
                                   ("family", "n_layers", "d_model", "n_params")}},
        "dataset": {"name": dataset, **ws.catalog.get("dataset", dataset).summary},
        "tokenized": {"name": tok["name"], **tok["summary"]},
        "activations": {"name": QUICKSTART_NAME, "layer": layer, "hook": "resid_post",
                        "reused": bool(acts.get("reused")), **acts["summary"]},
        "seconds": round(time.perf_counter() - t0, 1),
    }
