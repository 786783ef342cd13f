"""The concept explainer: each feature labelled with the formula over concepts (or tokens) that
best matches where it fires, chosen on one half of the text and scored on the other.

Search (Mu & Andreas' compositional explanations, on the explain split): every concept of the
token and of the token before it is scored by IoU with the tokens the feature fires on; the best
few are a beam, each combined with every atom by AND, OR and AND NOT (counts from one matrix
product per feature, so the search is exact). The token explainer's rules (these tokens, these
tokens after those, any token after those) are candidates too, so a feature that really is
"the" keeps that label. Each candidate is then judged on the explain split's windows by
detection and fuzzing (:mod:`.contexts`); the simplest within ``SIMPLER_WINS`` of the best is
the label, and its scores are measured on the held-out split.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

from mistudio.core.features.concepts.annotate import Annotations
from mistudio.core.features.concepts.catalogue import KEYS
from mistudio.core.features.contexts import (
    Contexts,
    Scores,
    Windows,
    make_windows,
    sample_contexts,
    score_mask,
)
from mistudio.core.features.examples import FeatureReader, TokenText
from mistudio.core.features.explain import norm as norm_text
from mistudio.core.features.formula import Formula, TokenTable, words

MIN_WINDOWS = 3
"""Activating windows a feature needs in each split to be labelled (fewer: too few to judge)."""
MIN_SUPPORT = 8
"""Tokens an atom must cover in the explain split to enter the search."""
BEAM = 8
COMPOSE_GAIN = 1.1
"""A pair must beat its first atom's IoU by this factor to be offered (a 2% gain was mostly
noise: "runs of spaces, except after adverb modifiers")."""
MAX_TOKENS = 4
SIMPLER_WINS = 0.02
"""A simpler label is kept unless a longer formula scores this much better (explain split)."""


class Case(NamedTuple):
    """One feature's windows: where its label is chosen and where it is scored."""

    explain: Contexts
    held_out: Contexts
    k_rows: np.ndarray
    """Rows of the explain split where it fires."""
    k_vals: np.ndarray


class Space(NamedTuple):
    """Everything labelling one analysis needs, built once."""

    reader: FeatureReader
    table: TokenTable
    windows: Windows
    atoms: list[str]
    X_NA: np.ndarray
    """[N, A] float32 0/1: each searchable atom on each row."""
    explain_rows: np.ndarray
    """[N] whether the row is in the explain split."""
    size_A: np.ndarray
    """[A] explain-split count of each atom."""
    pairs_AA: np.ndarray
    """[A, A] explain-split count of each pair of atoms together."""
    by_norm: tuple[np.ndarray, np.ndarray]
    """(norm ids sorted, their rows): rows holding a given token text."""
    norm_texts: list[str]
    linguistic: str


def _norm_table(rows: np.ndarray, text: TokenText) -> tuple[np.ndarray, list[str], dict[str, int]]:
    uniq, inverse = np.unique(np.asarray(rows[:, 2]), return_inverse=True)
    norm = [norm_text(text(int(t))) for t in uniq]  # as plugin rules compare them
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(s, len(index)) for s in norm], dtype=np.int64)
    return ids[inverse], list(index), index


def build_table(reader: FeatureReader, ann: Annotations, text: TokenText) -> TokenTable:
    """Concepts and token texts of every analysed row, and of the row before it."""
    rows = np.asarray(reader.rows)
    bits = ann.for_rows(rows[:, 0], rows[:, 1])
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:, 0] != rows[:-1, 0]
    prev_bits = np.zeros_like(bits)
    prev_bits[1:] = bits[:-1]
    prev_bits[first] = False
    norm_ids, _, index = _norm_table(rows, text)
    prev_norm = np.full(len(rows), -1, dtype=np.int64)
    prev_norm[1:] = norm_ids[:-1]
    prev_norm[first] = -1
    return TokenTable(bits, prev_bits, norm_ids, prev_norm, index)


def build_space(reader: FeatureReader, ann: Annotations, text: TokenText,
                search: bool = True) -> Space:
    """The tables labelling needs; ``search=False`` leaves out the concept search's matrices
    (enough to draw and judge a feature's windows)."""
    table = build_table(reader, ann, text)
    win = make_windows(np.asarray(reader.rows))
    explain = ~win.row_held_out
    X_NA = np.concatenate([table.bits, table.prev_bits], axis=1).astype(np.float32)
    atoms = list(KEYS) + [f"prev:{k}" for k in KEYS]
    if not search:
        X_NA, atoms = X_NA[:, :0], []
    size_A = X_NA[explain].sum(0)
    keep = (size_A >= MIN_SUPPORT) & (size_A < explain.sum())
    X_NA, size_A = X_NA[:, keep], size_A[keep]
    atoms = [a for a, k in zip(atoms, keep, strict=True) if k]
    XE_NA = X_NA[explain]
    order = np.argsort(table.norm_ids, kind="stable")
    return Space(reader, table, win, atoms, X_NA, explain, size_A, XE_NA.T @ XE_NA,
                 (table.norm_ids[order], order), list(table.norm_index), ann.linguistic)


def concept_candidates(space: Space, k_rows: np.ndarray, n: int = 6) -> list[Formula]:
    """The best atoms and AND / OR / AND NOT pairs by IoU with the firing rows ``k_rows``."""
    if len(k_rows) == 0 or not space.atoms:
        return []
    M_KA = space.X_NA[k_rows]
    k = float(len(k_rows))
    inter_A = M_KA.sum(0)
    iou_A = inter_A / (k + space.size_A - inter_A)
    beam = np.argsort(-iou_A)[:BEAM]
    beam = beam[inter_A[beam] > 0]
    both_BA = M_KA[:, beam].T @ M_KA  # firing rows holding both atoms
    pair_BA = space.pairs_AA[beam]
    inter_B, size_B = inter_A[beam][:, None], space.size_A[beam][:, None]
    inter_1A, size_1A = inter_A[None, :], space.size_A[None, :]
    options = {  # (firing rows the formula holds on, rows it holds on) per (beam atom, atom)
        "and": (both_BA, pair_BA),
        "or": (inter_B + inter_1A - both_BA, size_B + size_1A - pair_BA),
        "and not": (inter_B - both_BA, size_B - pair_BA),
    }
    scored: list[tuple[float, Formula]] = [(float(iou_A[b]), Formula.atom(space.atoms[b]))
                                           for b in beam[:3]]
    for op, (i, s) in options.items():
        val = i / np.maximum(k + s - i, 1.0)
        val[np.arange(len(beam)), beam] = -1.0  # an atom with itself
        for bi, a in zip(*np.unravel_index(np.argsort(-val, axis=None)[:n], val.shape),
                         strict=True):
            if val[bi, a] > iou_A[beam[bi]] * COMPOSE_GAIN:
                scored.append((float(val[bi, a]), _pair(space.atoms[beam[bi]], op,
                                                        space.atoms[a])))
    scored.sort(key=lambda s: -s[0])
    unique = list(dict.fromkeys(f for _, f in scored))
    return unique[: n + 3]


def _pair(first: str, op: str, second: str) -> Formula:
    """``first op second``, the token's own concept first where the operator allows (AND and
    OR commute: "nouns after articles" rather than "the token after articles, also nouns")."""
    if op != "and not" and first.startswith("prev:") and not second.startswith("prev:"):
        first, second = second, first
    return Formula.atom(first).extend(op, second)


def token_candidates(space: Space, k_rows: np.ndarray, k_vals: np.ndarray) -> list[Formula]:
    """The token explainer's rules from the stronger half of the firing rows."""
    if len(k_rows) == 0:
        return []
    strong = k_rows[k_vals >= np.median(k_vals)]
    n = len(strong)
    firing = Counter(space.table.norm_ids[strong].tolist())
    before = Counter(x for x in space.table.prev_norm_ids[strong].tolist() if x >= 0)

    def covering(counts: Counter[int], share: float) -> list[int]:
        chosen, covered = [], 0
        for item, c in counts.most_common(MAX_TOKENS):
            if c < 2 and chosen:
                break
            chosen.append(item)
            covered += c
            if covered >= share * n:
                break
        return chosen if covered >= 0.3 * n else []

    tokens, afters = covering(firing, 0.6), covering(before, 0.5)
    tok = [f"tok:{space.norm_texts[t]}" for t in tokens]
    aft = [f"prevtok:{space.norm_texts[t]}" for t in afters]
    out = []
    if tok:
        out.append(_chain(tok, "or"))
        if aft:  # these tokens after the most common token before them
            out.append(_chain(tok, "or").extend("and", aft[0]))
    if aft:
        out.append(_chain(aft, "or"))
    return out


def _chain(atoms: list[str], op: str) -> Formula:
    f = Formula.atom(atoms[0])
    for a in atoms[1:]:
        f = f.extend(op, a)
    return f


def judge(space: Space, formula: Formula, ctx: Contexts) -> Scores:
    return score_mask(ctx, space.table.evaluate(formula, ctx.pos_rows),
                      space.table.evaluate(formula, ctx.neg_rows))


def trigger_rows(space: Space, k_rows: np.ndarray, top: int = 3) -> np.ndarray:
    """Rows holding the token texts the feature fires on most (hard negatives come from them)."""
    common = [t for t, _ in Counter(space.table.norm_ids[k_rows].tolist()).most_common(top)]
    sorted_ids, order = space.by_norm
    parts = [order[np.searchsorted(sorted_ids, t, "left"): np.searchsorted(sorted_ids, t,
                                                                           "right")]
             for t in common]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def feature_case(space: Space, feature: int, n: int, seed: int) -> Case | str:
    """The feature's explain and held-out windows, or why it cannot be judged."""
    f_rows, f_vals = space.reader.firing(feature)
    in_explain = space.explain_rows[f_rows]
    k_rows, k_vals = f_rows[in_explain], f_vals[in_explain]
    triggers = trigger_rows(space, k_rows)
    rng = np.random.default_rng([seed, feature])
    explain = sample_contexts(space.windows, f_rows, f_vals, triggers, False, n, rng)
    held = sample_contexts(space.windows, f_rows, f_vals, triggers, True, n, rng)
    if explain is None or held is None or min(explain.n_pos, held.n_pos) < MIN_WINDOWS:
        got = 0 if explain is None or held is None else min(explain.n_pos, held.n_pos)
        return (f"too few activations to judge a label ({len(f_rows)} tokens; {got} "
                f"activating windows in one half of the text, {MIN_WINDOWS} needed)")
    if min(explain.n_neg, held.n_neg) < MIN_WINDOWS:
        return "fires almost everywhere (too few silent windows to judge a label against)"
    return Case(explain, held, k_rows, k_vals)


def _mean(s: Scores) -> float:
    vals = [v for v in s if v is not None]
    return float(np.mean(vals)) if vals else 0.0


def explain_feature(space: Space, feature: int, case: Case,
                    concepts: bool = True) -> tuple[str, Formula] | None:
    """The label and formula chosen on the explain split (``concepts=False``: the token
    explainer's rules only); None when nothing matches."""
    candidates = token_candidates(space, case.k_rows, case.k_vals)
    if concepts:
        candidates += concept_candidates(space, case.k_rows)
    if not candidates:
        return None
    scored = [(_mean(judge(space, f, case.explain)), f.complexity(), i, f)
              for i, f in enumerate(candidates)]
    top = max(s[0] for s in scored)
    # the simplest formula within SIMPLER_WINS of the best on the explain split, then the best
    # of those: "runs of spaces, except after adverb modifiers" does not beat "runs of spaces"
    best = min((s for s in scored if s[0] >= top - SIMPLER_WINS),
               key=lambda s: (s[1], -s[0], s[2]))[3]
    return words(best), best
