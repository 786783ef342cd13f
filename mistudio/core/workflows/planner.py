"""What fits: for a model and a device, each dtype and quantization with the memory it needs.

Three parts are estimated separately, because they are separate choices:

- weights: parameters x bytes per parameter (int8 / int4 with their scales), plus a 10%
  margin for buffers and allocator slack;
- activations of a forward pass of ``batch_tokens`` tokens: the residual stream and MLP
  intermediates of one block at a time, one layer's attention scores, and the float32 logits
  over the vocabulary (on a 128k vocabulary the logits alone are half a gigabyte per 1k tokens);
- training the default SAE on that device (:func:`mistudio.core.sae.train_config.training_bytes`).

The recommendation is the most precise option whose total fits in what is free now; when none
fits, one line says what would help. ``benchmarks/models.py`` compares these estimates with the
peak memory measured when loading and running real-size models.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from mistudio.core.models.devices import available_memory
from mistudio.core.models.quantize import quantized_bytes
from mistudio.core.runtime.errors import ResourceError
from mistudio.core.store.files import human_bytes

RUNTIME_BYTES = 400 * 2**20
"""The process itself: Python, torch and transformers loaded (measured here: 0.3-0.45 GB)."""
OPTIONS = {"float32": ("none", 4), "bfloat16": ("none", 2), "float16": ("none", 2),
           "int8": ("int8", None), "int4": ("int4", None), "nf4": ("nf4", None),
           "bnb8": ("bnb8", None)}


class PlanRow(NamedTuple):
    option: str
    """float32, bfloat16, float16, int8, int4, nf4 or bnb8."""
    weights: int
    activations: int
    training: int
    total: int
    fits: bool
    note: str


class MemoryPlan(NamedTuple):
    device: str
    free: int
    rows: list[PlanRow]
    recommended: str | None
    """The most precise option that fits, or None."""

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "free": self.free, "recommended": self.recommended,
                "rows": [r._asdict() for r in self.rows]}


def activation_bytes(info: Any, batch_tokens: int, context: int, element: int) -> int:
    """One forward pass: a block's residual and MLP tensors, one layer's attention scores, the
    float32 logits."""
    heads = max(1, (info.d_attn or info.d_model) // 64)
    block = batch_tokens * (6 * info.d_model + 3 * info.d_mlp) * element
    scores = heads * batch_tokens * context * 4
    logits = batch_tokens * info.vocab_size * 4
    return int(block + scores + logits)


def plan_memory(info: Any, device: torch.device, batch_tokens: int = 1024, context: int = 128,
                expansion: int = 8, free: int | None = None) -> MemoryPlan:
    """Every option on ``device`` for the model described by ``info`` (a ModelInfo)."""
    from mistudio.core.sae.train_config import TrainConfig, training_bytes

    free = available_memory(device) if free is None else free
    training = training_bytes(TrainConfig("plan", expansion=expansion), info.d_model)
    bnb = device.type == "cuda"
    rows = []
    for option, (mode, per) in OPTIONS.items():
        if option in ("nf4", "bnb8") and not bnb:
            continue
        if option == "float16" and device.type == "cpu":
            continue  # CPUs compute float16 slowly and no better than bfloat16
        weights = info.n_params * per if per else quantized_bytes(info.n_params, mode)
        weights = int(weights * 1.1)
        element = 4 if option == "float32" or (mode in ("int8", "int4") and device.type == "cpu") \
            else 2
        acts = activation_bytes(info, batch_tokens, context, element)
        total = weights + acts + training + (RUNTIME_BYTES if device.type != "cuda" else 0)
        note = {"int8": "weights int8, activations in float", "int4": "4-bit weights, "
                "slower on a CPU", "nf4": "bitsandbytes", "bnb8": "bitsandbytes"}.get(option, "")
        rows.append(PlanRow(option, weights, acts, training, total, total <= free, note))
    recommended = next((r.option for r in rows if r.fits), None)
    return MemoryPlan(device.type, free, rows, recommended)


def refuse_if_nothing_fits(plan: MemoryPlan, what: str) -> None:
    """One clear line when even the smallest option does not fit."""
    if plan.recommended is not None:
        return
    smallest = min(plan.rows, key=lambda r: r.total)
    raise ResourceError(
        f"{what} does not fit on {plan.device} in any precision: even {smallest.option} needs "
        f"about {human_bytes(smallest.total)}, and {human_bytes(plan.free)} is free.",
        "Free memory, extract an earlier layer (only the blocks up to it are loaded), use a "
        "smaller batch, or another device.")


def plan_text(plan: MemoryPlan) -> str:
    """The plan as lines for the CLI and the app."""
    lines = [f"On {plan.device}, {human_bytes(plan.free)} free now:"]
    for r in plan.rows:
        mark = "fits" if r.fits else "does not fit"
        lines.append(f"  {r.option:<9} weights {human_bytes(r.weights):>9}  activations "
                     f"{human_bytes(r.activations):>9}  SAE training {human_bytes(r.training):>9}"
                     f"  total {human_bytes(r.total):>9}  {mark}" + (f"  ({r.note})" if r.note
                                                                       else ""))
    lines.append(f"Recommended: {plan.recommended}" if plan.recommended else
                 "Nothing fits: free memory, or extract an earlier layer.")
    return "\n".join(lines)
