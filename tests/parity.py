"""Stored activations against the plain Hugging Face forward (no hooks of ours, whole model).

resid_pre and resid_post of layer L must equal the forward's hidden states L and L + 1. The
residual contributions must add up: resid_post = resid_pre + attn_out + mlp_out holds in every
supported family (sequential blocks, GPT-NeoX's parallel one, and Gemma 2/3's sandwich norms,
whose attn_out and mlp_out are the normalised outputs the block adds), so a hook point read at
the wrong module (a pre-norm instead of a post-norm, the MLP's input) cannot pass.
"""

from __future__ import annotations

import numpy as np
import torch

from mistudio.core.activations.store import open_activations
from mistudio.core.data.tokenization import open_tokenized
from mistudio.core.models.registry import load_model
from mistudio.core.store.workspace import Workspace

REL_TOL = 2e-5
"""Per row, relative to the row's norm: float32 rounding of two forward passes batched apart."""


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = np.linalg.norm(want, axis=1) + 1.0
    err = np.linalg.norm(got - want, axis=1) / scale
    worst = int(err.argmax())
    assert err[worst] <= REL_TOL, f"{what}: row {worst} off by {err[worst]:.2e} of its norm"


def check_parity(ws: Workspace, set_name: str, model: str, layers: tuple[int, ...],
                 sum_check: bool = True) -> int:
    """Assert the set's rows match the plain forward; returns the rows compared."""
    acts = open_activations(ws, set_name)
    pos = acts.row_positions(0, acts.n_rows)
    ids, mask = open_tokenized(ws, acts.manifest.config["tokenized"]).slice(
        0, int(pos[:, 0].max()) + 1)
    lm = load_model(ws, model)
    with torch.inference_mode():
        hs = lm.model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                      attention_mask=torch.from_numpy(mask.astype(np.int64)),
                      output_hidden_states=True).hidden_states
    seq, p = torch.from_numpy(pos[:, 0]).long(), torch.from_numpy(pos[:, 1]).long()
    for layer in layers:
        assert layer + 1 < len(hs) - 1, "the last hidden state is after the final norm"
        rows = {hook: acts.rows(f"layers.{layer}.{hook}", 0, acts.n_rows).astype(np.float64)
                for hook in ("resid_pre", "resid_post", "attn_out", "mlp_out")
                if f"layers.{layer}.{hook}" in acts.manifest.summary.hook_points}
        for hook, index in (("resid_pre", layer), ("resid_post", layer + 1)):
            if hook in rows:
                _close(rows[hook], hs[index][seq, p].double().numpy(),
                       f"{model} layer {layer} {hook}")
        if sum_check:
            _close(rows["resid_pre"] + rows["attn_out"] + rows["mlp_out"], rows["resid_post"],
                   f"{model} layer {layer}: resid_pre + attn_out + mlp_out vs resid_post")
    return acts.n_rows
