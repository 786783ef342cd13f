"""Massive activations: the few tokens whose residual norm is tens of times the typical one.

Language models park attention on one or two "sink" tokens (usually the first of a sequence)
and give them activation norms 30-150x the median ("massive activations", Sun et al. 2024). On
the embedded SmolLM2, 17 of 112,141 stored layer-15 tokens had norms of 5,600-24,200 against a
median of 170: one such token among 11k held-out tokens carried 80% of their variance, so an
explained variance computed over all tokens measured little but how well the SAE reproduced
that one token. The anchors keep them out (SAELens excludes special tokens from its store;
SAEBench masks BOS before its metrics), and so does miStudio:

- extraction stores every row's norm per hook point and flags, per hook point, the rows whose
  norm exceeds ``factor`` x that hook point's median (default 10x): flags are not pooled, since
  an early layer can give ordinary tokens (Gemma 3's commas at layer 0) high norms that later
  layers do not;
- training, held-out evaluation and feature analysis at a hook point leave out the rows flagged
  at that hook point (for a transcoder, at its input or its target) unless the user asks to keep
  them (``keep_massive``);
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
    """Sorted int64 indices of rows flagged at any hook point (what the report counts)."""
    by_hook: dict[str, np.ndarray]
    """Each hook point's own flagged rows (sorted int64): what work at that hook leaves out."""
    report: MassiveReport
    """The manifest's ``massive`` section: factor, per-hook median / threshold / count /
    positions / examples, and the same over the rows flagged anywhere."""
    stats: dict[str, NormStats]
    """Norm statistics per hook point over the rows kept at that hook point (what training
    scales by), with the all-row mean beside them."""


def flag_massive(norms_NK: np.ndarray, keys: list[str], positions_N2: np.ndarray,
                 d_model: int, factor: float = DEFAULT_FACTOR) -> MassiveFlags:
    """Flag rows from their per-hook norms [N, n_keys] and (sequence, position) [N, 2], each
    hook point against its own median."""
    norms_NK = np.asarray(norms_NK, dtype=np.float64)
    n = len(norms_NK)
    hits: dict[str, np.ndarray] = {}
    by_hook: dict[str, HookMassive] = {}
    stats: dict[str, NormStats] = {}
    for j, key in enumerate(keys):
        col = norms_NK[:, j]
        median = float(np.median(col)) if n else 0.0
        hit = col > factor * median if median > 0 else np.zeros(n, dtype=bool)
        hits[key] = np.flatnonzero(hit).astype(np.int64)
        by_hook[key] = HookMassive(median, factor * median, int(hit.sum()),
                                   float(col.max()) if n else 0.0,
                                   _positions(positions_N2, hits[key]),
                                   _examples(hits[key], positions_N2, {key: col}))
        kept = col[~hit]
        mean = float(kept.mean()) if len(kept) else 0.0
        stats[key] = NormStats(len(kept), mean, float(kept.std()) if len(kept) else 0.0,
                               (d_model ** 0.5) / mean if mean > 0 else 1.0,
                               float(col.mean()) if n else 0.0)
    rows = (np.unique(np.concatenate(list(hits.values()))) if hits
            else np.zeros(0, np.int64)).astype(np.int64)
    flagged_at = {key: np.where(np.isin(np.arange(n), hits[key]), norms_NK[:, j], np.nan)
                  for j, key in enumerate(keys)}
    report = MassiveReport(factor, len(rows), len(rows) / max(n, 1), by_hook,
                           _positions(positions_N2, rows),
                           _examples(rows, positions_N2, flagged_at))
    return MassiveFlags(rows, hits, report, stats)


def _positions(positions_N2: np.ndarray, rows: np.ndarray) -> dict[str, int]:
    """Position in the sequence -> how many of ``rows`` sit there."""
    pos = positions_N2[rows, 1] if len(rows) else np.zeros(0, np.int64)
    values, counts = np.unique(pos, return_counts=True)
    return {str(int(p)): int(c) for p, c in zip(values, counts, strict=True)}


def _examples(rows: np.ndarray, positions_N2: np.ndarray,
              norms_by_hook: dict[str, np.ndarray]) -> list[MassiveExample]:
    """The first flagged rows, each with its norm at the first hook point that flagged it."""
    out = []
    for r in rows[:_EXAMPLES]:
        hook = next(k for k, col in norms_by_hook.items() if np.isfinite(col[r]))
        out.append(MassiveExample(int(r), int(positions_N2[r, 0]), int(positions_N2[r, 1]),
                                  round(float(norms_by_hook[hook][r]), 1), hook))
    return out


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
