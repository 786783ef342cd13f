"""In-model evaluation: an SAE's reconstruction metrics plus its effect inside the model."""

from __future__ import annotations

from pathlib import Path

from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.tasks import TaskState, silent_task
from mistudio.core.sae.io import open_sae
from mistudio.core.sae.splice import splice_eval
from mistudio.core.store.files import write_json_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.manifests import SAESummary
from mistudio.core.store.workspace import Workspace


def evaluate_in_model(ws: Workspace, name: str, n_sequences: int = 32, device: str = "auto",
                      task: TaskState | None = None,
                      loaded: LoadedModel | None = None) -> SAESummary:
    """CE loss score and KL on held-out text, stored in the SAE's manifest and catalog row;
    returns the SAE's summary with them. ``loaded``: the SAE's model, already in memory."""
    task = task or silent_task()
    sae, cfg = open_sae(ws, name)
    meta = dict(cfg["metadata"])
    if not meta.get("dataset_path") or ws.catalog.find("tokenized", meta["dataset_path"]) is None:
        # An imported SAE: evaluate on the built-in corpus, tokenized for its model.
        from mistudio.core.data.datasets import ensure_builtin_dataset
        from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset

        ensure_builtin_dataset(ws)
        meta["dataset_path"] = tokenize_dataset(
            ws, TokenizeConfig("pydoc", meta["model_name"], 128)).name
    if loaded is None:
        task.set_status(f"Loading {meta['model_name']}")
        loaded = load_model(ws, meta["model_name"], device,
                            quantize=meta.get("model_quantization") or "none")
    task.set_status("Evaluating with the SAE spliced in")
    result = splice_eval(ws, sae, meta, n_sequences, loaded=loaded, task=task)
    manifest = ws.manifest("sae", name)
    manifest.summary = manifest.summary.replace(**result, in_model_error=None)
    write_json_atomic(Path(ws.catalog.get("sae", name).path) / MANIFEST, manifest.to_json())
    ws.register(manifest)
    return manifest.summary
