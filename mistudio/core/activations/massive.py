"""Massive activations: the few tokens whose residual norm is tens of times the typical one.

Language models park attention on one or two "sink" tokens (usually the first of a sequence)
and give them activation norms 30-150x the median ("massive activations", Sun et al. 2024). On
the embedded SmolLM2, 17 of 112,141 stored layer-15 tokens had norms of 5,600-24,200 against a
median of 170: one such token among 11k held-out tokens carried 80% of their variance, so an
explained variance computed over all tokens measured little but how well the SAE reproduced
that one token. The anchors keep them out (SAELens excludes special tokens from its store;
SAEBench masks BOS before its metrics), and so does miStudio:

- extraction stores every row's norm per hook point and flags rows whose norm exceeds
  ``factor`` x the median of that hook point (default 10x), at any of the set's hook points;
- training, held-out evaluation and feature analysis leave flagged rows out unless the user asks
  to keep them (``keep_massive``);
- inside the model (in-model evaluation, steering, the text probe) an SAE is applied only to
  tokens under its threshold: the one recorded when it was trained, or ``factor`` x the median
  of the tokens at hand for an imported SAE.

The rows stay on disk; only what they are used for changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mistudio.core.store.manifests import (
    HookMassive,
    MassiveExample,
    MassiveReport,
    NormStats,
)

if TYPE_CHECKING:  # torch is imported where a tensor is used: the CLI's listings stay fast
    from torch import Tensor

DEFAULT_FACTOR = 10.0
"""A token is massive when its norm exceeds this multiple of the median norm."""
_EXAMPLES = 20


class MassiveFlags(NamedTuple):
    """What the flagging pass found over one activation set."""

    rows: np.ndarray
    """Sorted int64 indices of flagged rows (massive at any hook point)."""
    report: MassiveReport
    """The manifest's ``massive`` section: factor, per-hook median / threshold / count,
    positions of the flagged rows and a few examples."""
    stats: dict[str, NormStats]
    """Norm statistics per hook point over the rows that are kept (what training scales by),
    with the all-row mean beside them."""


def flag_massive(norms_NK: np.ndarray, keys: list[str], positions_N2: np.ndarray,
                 d_model: int, factor: float = DEFAULT_FACTOR) -> MassiveFlags:
    """Flag rows from their per-hook norms [N, n_keys] and (sequence, position) [N, 2]."""
    norms_NK = np.asarray(norms_NK, dtype=np.float64)
    n = len(norms_NK)
    by_hook: dict[str, HookMassive] = {}
    massive_N = np.zeros(n, dtype=bool)
    for j, key in enumerate(keys):
        col = norms_NK[:, j]
        median = float(np.median(col)) if n else 0.0
        threshold = factor * median
        hit = col > threshold if median > 0 else np.zeros(n, dtype=bool)
        massive_N |= hit
        by_hook[key] = HookMassive(median, threshold, int(hit.sum()),
                                   float(col.max()) if n else 0.0)
    rows = np.flatnonzero(massive_N).astype(np.int64)
    pos = positions_N2[rows, 1] if len(rows) else np.zeros(0, np.int64)
    values, counts = np.unique(pos, return_counts=True)
    report = MassiveReport(
        factor, len(rows), len(rows) / max(n, 1), by_hook,
        # position in the sequence -> how many flagged rows sit there
        {str(int(p)): int(c) for p, c in zip(values, counts, strict=True)},
        [MassiveExample(int(r), int(positions_N2[r, 0]), int(positions_N2[r, 1]),
                        round(float(norms_NK[r].max()), 1)) for r in rows[:_EXAMPLES]])
    keep = ~massive_N
    stats = {}
    for j, key in enumerate(keys):
        col, kept = norms_NK[:, j], norms_NK[keep, j]
        mean = float(kept.mean()) if len(kept) else 0.0
        stats[key] = NormStats(len(kept), mean, float(kept.std()) if len(kept) else 0.0,
                               (d_model ** 0.5) / mean if mean > 0 else 1.0,
                               float(col.mean()) if n else 0.0)
    return MassiveFlags(rows, report, stats)


def describe_positions(report: MassiveReport | None, limit: int = 4) -> str:
    """"17 tokens at positions 1 (15), 2 (2)" for a manifest's ``massive`` section."""
    if not report or not report.count:
        return "none"
    pos = sorted(report.positions.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{p} ({c})" for p, c in pos[:limit])
    more = f", {len(pos) - limit} more" if len(pos) > limit else ""
    return (f"{report.count:,} token{'s' if report.count != 1 else ''} over "
            f"{report.factor:g}x the median norm, at position{'s' if len(pos) > 1 else ''} "
            f"{shown}{more}")


def ev_phrase(s: Any) -> str:
    """"explained variance 0.851 (0.960 over all tokens, 1 massive included)" for an SAE's
    summary (or an in-model evaluation): the all-token figure only where massive tokens were
    left out and it differs."""
    ev = s.explained_variance
    if ev is None:
        return "explained variance n/a"
    text = f"explained variance {ev:.3f}"
    ev_all, n = s.explained_variance_all_tokens, s.massive_excluded or 0
    if n and ev_all is not None and abs(ev_all - ev) >= 0.0005:
        text += (f" ({ev_all:.3f} over all tokens, {n:,} massive token{'s' if n != 1 else ''} "
                 "included)")
    return text


def token_mask(h_TD: Tensor, threshold: float | None,
               factor: float = DEFAULT_FACTOR) -> Tensor:
    """True for the tokens an SAE is meant for: norm at most ``threshold``, or, without one,
    at most ``factor`` x the median norm of the tokens given (an imported SAE). [..., D] ->
    [...] bool. ``threshold`` = inf means every token (an SAE trained with massive tokens)."""
    import torch

    norms = h_TD.float().norm(dim=-1)
    if threshold is None:
        if norms.numel() < 3:  # too few tokens for a median to mean anything
            return torch.ones_like(norms, dtype=torch.bool)
        threshold = factor * float(norms.flatten().median())
    return norms <= threshold


def sae_threshold(meta: dict[str, Any]) -> float | None:
    """The norm threshold an SAE was trained under, from its cfg.json ``metadata``: a number,
    inf when it was trained on every token, None when unknown (imported: use the median rule)."""
    if meta.get("keep_massive"):
        return float("inf")
    value = meta.get("massive_norm_threshold")
    return float(value) if value is not None else None
