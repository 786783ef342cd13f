"""Held-out contexts and the one scoring every label gets: detection and fuzzing.

As in delphi, contexts are windows of 32 tokens (each sequence cut into consecutive windows).
Sequences are split in two by parity: even sequences are the *explain* split (labels are chosen
there), odd ones the *held-out* split (labels are scored there), so no window is on both sides.

For one feature and one split, :func:`sample_contexts` draws activating windows evenly from ten
bands of the feature's per-window maximum (weak and strong alike), and as many silent windows
(the feature fires nowhere in them): half *hard* ones holding the tokens the feature usually
fires on, the rest at random. Two balanced accuracies follow:

- **detection**: does the label say, for each window, whether the feature fires somewhere in it;
- **fuzzing**: in each activating window, the tokens the feature fires on are marked, and, as a
  decoy, as many other tokens of the window; does the label tell the true marks (most marked
  tokens fit it) from the decoys (most do not).

A rule label (a formula) is judged by executing it; an LLM label by an LLM judge reading the
same windows (:mod:`.llm`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

WINDOW = 32
BANDS = 10


class Windows(NamedTuple):
    """The analysis's rows cut into windows, and the split of each."""

    window: np.ndarray
    """[N] window index of each row."""
    starts: np.ndarray
    """[W + 1] first row of each window (and the end)."""
    held_out: np.ndarray
    """[W] whether the window is in the held-out split."""
    row_held_out: np.ndarray
    """[N] the same per row."""


def make_windows(rows: np.ndarray) -> Windows:
    """Windows of ``rows`` ([N, 3] sequence, position, token; in sequence order)."""
    seq, pos = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    key = seq * (1 << 20) + pos // WINDOW
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    window = np.cumsum(new) - 1
    starts = np.append(np.flatnonzero(new), len(key))
    held = (seq[starts[:-1]] % 2) == 1
    return Windows(window, starts, held, held[window])


class Contexts(NamedTuple):
    """One feature's sampled windows in one split, laid out as rows for fast rule checks."""

    pos_rows: np.ndarray
    """Rows of the activating windows, concatenated."""
    pos_seg: np.ndarray
    """Which activating window each of those rows is in (0..P-1)."""
    pos_active: np.ndarray
    """Whether the feature fires on that row (the true marks)."""
    pos_decoy: np.ndarray
    """Whether that row is a decoy mark (as many silent rows of the window as true marks)."""
    neg_rows: np.ndarray
    neg_seg: np.ndarray
    n_pos: int
    n_neg: int
    n_hard: int
    pos_windows: np.ndarray
    neg_windows: np.ndarray


def _rows_of(win: Windows, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``windows`` concatenated, and which window each row is in."""
    lo, hi = win.starts[windows], win.starts[windows + 1]
    sizes = hi - lo
    seg = np.repeat(np.arange(len(windows)), sizes)
    offset = np.arange(seg.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # within window
    return lo[seg] + offset, seg


def sample_contexts(win: Windows, f_rows: np.ndarray, f_vals: np.ndarray,
                    trigger_rows: np.ndarray, held_out: bool, n: int,
                    rng: np.random.Generator) -> Contexts | None:
    """Up to ``n`` activating and ``n`` silent windows of one split (None: the feature never
    fires there). ``trigger_rows``: rows holding the feature's usual tokens."""
    in_split = win.row_held_out[f_rows] == held_out
    rows, vals = f_rows[in_split], f_vals[in_split]
    if len(rows) == 0:
        return None
    w_of = win.window[rows]
    active_w, first = np.unique(w_of, return_index=True)
    peak = np.maximum.reduceat(vals, first)
    order = np.argsort(peak, kind="stable")
    per_band = max(1, -(-n // BANDS))
    pos_w = np.concatenate([rng.choice(active_w[b], size=min(per_band, len(b)), replace=False)
                            for b in np.array_split(order, BANDS) if len(b)])[:n]
    silent = np.flatnonzero(win.held_out == held_out)
    silent = np.setdiff1d(silent, active_w, assume_unique=True)  # may be none: n_neg 0
    hard = np.setdiff1d(np.unique(win.window[trigger_rows]), active_w)
    hard = hard[win.held_out[hard] == held_out]
    hard = rng.choice(hard, size=min(n // 2, len(hard)), replace=False)
    rest = np.setdiff1d(silent, hard, assume_unique=True)
    neg_w = np.concatenate([hard, rng.choice(rest, size=min(n - len(hard), len(rest)),
                                             replace=False)]).astype(np.int64)
    pos_w = np.sort(pos_w).astype(np.int64)
    pos_rows, pos_seg = _rows_of(win, pos_w)
    pos_active = np.isin(pos_rows, rows, assume_unique=False)
    pos_decoy = _decoys(pos_seg, pos_active, rng)
    neg_rows, neg_seg = _rows_of(win, neg_w)
    return Contexts(pos_rows, pos_seg, pos_active, pos_decoy, neg_rows, neg_seg, len(pos_w),
                    len(neg_w), len(hard), pos_w, neg_w)


def _decoys(seg: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """In each window, as many silent rows as active ones, at random (fewer if there are not
    enough)."""
    decoy = np.zeros(len(seg), dtype=bool)
    keys = rng.random(len(seg))
    keys[active] = 2.0  # never chosen
    order = np.lexsort((keys, seg))
    n_active = np.bincount(seg, weights=active, minlength=seg.max(initial=-1) + 1).astype(int)
    starts = np.searchsorted(seg[order], np.arange(len(n_active)))
    rank = np.arange(len(seg)) - np.repeat(starts, np.bincount(seg, minlength=len(n_active)))
    chosen = order[(rank < n_active[seg[order]]) & (keys[order] < 2.0)]
    decoy[chosen] = True
    return decoy


class Scores(NamedTuple):
    detection: float | None
    fuzzing: float | None


def _any_per(seg: np.ndarray, hit: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(seg, weights=hit, minlength=n) > 0


def score_mask(ctx: Contexts, pos_hit: np.ndarray, neg_hit: np.ndarray) -> Scores:
    """Detection and fuzzing of a rule, given where it holds on the positive and negative rows."""
    detection = None
    if ctx.n_pos and ctx.n_neg:
        tpr = _any_per(ctx.pos_seg, pos_hit, ctx.n_pos).mean()
        tnr = 1.0 - _any_per(ctx.neg_seg, neg_hit, ctx.n_neg).mean()
        detection = float(0.5 * (tpr + tnr))
    n = ctx.n_pos
    true_n = np.bincount(ctx.pos_seg, weights=ctx.pos_active, minlength=n)
    decoy_n = np.bincount(ctx.pos_seg, weights=ctx.pos_decoy, minlength=n)
    fits_true = np.bincount(ctx.pos_seg, weights=pos_hit & ctx.pos_active, minlength=n)
    fits_decoy = np.bincount(ctx.pos_seg, weights=pos_hit & ctx.pos_decoy, minlength=n)
    ok = (true_n > 0) & (decoy_n > 0)
    if not ok.any():
        return Scores(detection, None)
    right = fits_true[ok] >= 0.5 * true_n[ok]
    rejected = fits_decoy[ok] < 0.5 * decoy_n[ok]
    return Scores(detection, float(0.5 * (right.mean() + rejected.mean())))
