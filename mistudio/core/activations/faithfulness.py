"""How faithful a quantized model's activations are to full precision, on the same tokens.

A user holding a 3B model's weights in int4 to fit it should see what it costs where miStudio
reads: the activations. Both models (truncated to the layer read) run over the same sequences of
the built-in corpus; per token, the cosine similarity of the two activation vectors and the
relative error ||quantized - full|| / ||full|| are summarised. Position 0 and massive tokens
(attention sinks) are left out, as everywhere (:mod:`mistudio.core.activations.massive`). Results are kept
in the model's folder, per quantization, layer and hook point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mistudio.core.runtime.tasks import SubTask, TaskState, check_cancelled, silent_task
from mistudio.core.store.files import write_json_atomic
from mistudio.core.store.records import Record
from mistudio.core.store.workspace import Workspace

CACHE = "faithfulness.json"
VERSION = 2
"""Results measured with other quantization kernels are not shown (2: CPU int8 / int4 kernels
with bfloat16 inputs for few rows)."""


@dataclass
class Faithfulness(Record):
    """Quantized against full-precision activations at one hook point, on the same tokens."""

    version: int = VERSION
    model: str = ""
    quantize: str = ""
    hook: str = ""
    tokens: int = 0
    """Tokens compared (massive ones left out)."""
    cosine_mean: float = 0.0
    cosine_min: float = 0.0
    cosine_p1: float = 0.0
    """1st percentile of the per-token cosine."""
    relative_error_mean: float = 0.0
    relative_error_p99: float = 0.0


def _sequences(ws: Workspace, model: str, n_tokens: int, task: TaskState) -> np.ndarray:
    """[n, 128] token ids of the built-in corpus, tokenized for ``model``."""
    from mistudio.core.data.datasets import ensure_builtin_dataset
    from mistudio.core.data.tokenization import TokenizeConfig, open_tokenized, tokenize_dataset

    ensure_builtin_dataset(ws)
    name = tokenize_dataset(ws, TokenizeConfig("pydoc", model, 128), task=task).name
    tokens = open_tokenized(ws, name)
    n = max(1, min(tokens.n_sequences, -(-n_tokens // 127)))
    step = max(1, tokens.n_sequences // n)  # spread over the corpus
    ids, _ = tokens.slice(0, tokens.n_sequences)
    return ids[::step][:n].astype(np.int64)


@torch.no_grad()
def _activations(loaded: Any, ids: np.ndarray, key: str, task: TaskState) -> torch.Tensor:
    from mistudio.core.models.adapters import parse_hook_key
    from mistudio.core.models.hooks import capture, forward

    out = []
    with capture(loaded, [parse_hook_key(key)]) as seen:
        for s in range(0, len(ids), 4):
            check_cancelled(task)
            batch = torch.from_numpy(ids[s:s + 4]).to(loaded.device)
            forward(loaded, batch, torch.ones_like(batch))
            out.append(seen[key][:, 1:].float().cpu())  # position 0 is never stored
            task.set_progress((s + 4) / len(ids))
    return torch.cat(out).reshape(-1, out[0].shape[-1])


def quantization_faithfulness(ws: Workspace, model: str, quantize: str, layer: int | None = None,
                              hook: str = "resid_post", n_tokens: int = 2048,
                              device: str = "cpu", task: TaskState | None = None,
                              recompute: bool = False) -> Faithfulness:
    """Cosine and relative error of ``quantize``'s activations against full precision."""
    from mistudio.core.activations.extraction import default_layer
    from mistudio.core.activations.massive import DEFAULT_FACTOR
    from mistudio.core.models.adapters import hook_key
    from mistudio.core.models.registry import load_model, model_info

    task = task or silent_task()
    info = model_info(ws, model)
    layer = default_layer(info.n_layers) if layer is None else layer
    key = hook_key(layer, hook)
    path = Path(ws.catalog.get("model", model).path) / CACHE
    cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    entry = f"{quantize}/{key}/{n_tokens}/v{VERSION}"
    if entry in cache and not recompute:
        return Faithfulness.from_json(cache[entry])
    ids = _sequences(ws, model, n_tokens, SubTask(task, 0.0, 0.1))
    acts = {}
    for i, mode in enumerate(("none", quantize)):
        task.set_status(f"Reading {key} with {'full precision' if mode == 'none' else mode}")
        loaded = load_model(ws, model, device, "float32", quantize=mode, n_layers=layer + 1)
        acts[mode] = _activations(loaded, ids, key, SubTask(task, 0.1 + 0.45 * i,
                                                            0.55 + 0.45 * i))
        del loaded
    full, quant = acts["none"], acts[quantize]
    norms = full.norm(dim=-1)
    keep = norms <= DEFAULT_FACTOR * norms.median()  # massive tokens out
    cos = torch.nn.functional.cosine_similarity(full[keep], quant[keep], dim=-1)
    rel = (quant[keep] - full[keep]).norm(dim=-1) / full[keep].norm(dim=-1).clamp_min(1e-12)
    result = Faithfulness(VERSION, model, quantize, key, int(keep.sum()), float(cos.mean()),
                          float(cos.min()), float(cos.quantile(0.01)), float(rel.mean()),
                          float(rel.quantile(0.99)))
    cache[entry] = result.to_json()
    try:
        write_json_atomic(path, cache)
    except OSError:
        pass  # derived: computed again next time
    task.set_progress(1.0)
    return result


def known_faithfulness(ws: Workspace, model: str) -> list[Faithfulness]:
    """The results already measured for ``model`` with the current kernels (no model loaded)."""
    path = Path(ws.catalog.get("model", model).path) / CACHE
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return []  # derived: a damaged file is measured again
    return [Faithfulness.from_json(r) for r in cache.values()
            if isinstance(r, dict) and r.get("version") == VERSION]


def faithfulness_line(r: Faithfulness) -> str:
    """One result as a sentence (the CLI and the Models panel)."""
    return (f"{r.quantize} against full precision at {r.hook} of {r.model}, "
            f"{r.tokens:,} tokens: cosine mean {r.cosine_mean:.4f} (1st percentile "
            f"{r.cosine_p1:.4f}, min {r.cosine_min:.4f}), relative error mean "
            f"{r.relative_error_mean:.1%} (99th percentile {r.relative_error_p99:.1%}).")
