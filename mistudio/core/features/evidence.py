"""Why a label got its scores: the feature's held-out windows, each with whether the feature
fires in it, whether the label's rule says it does, and so whether the label passed there
(the Features tab's "Label evidence")."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mistudio.core.features.concept_explainer import Space, feature_case
from mistudio.core.features.formula import Formula
from mistudio.core.features.labels import LabelConfig, label_context
from mistudio.core.features.store import open_features
from mistudio.core.runtime.tasks import TaskState, silent_task
from mistudio.core.store.workspace import Workspace

SHOWN = 12
"""Windows shown of each kind (passed, failed)."""


class Window(NamedTuple):
    sequence: int
    positions: np.ndarray
    token_ids: np.ndarray
    activations: np.ndarray
    """The feature's activation on each token of the window."""
    fires: bool
    """The feature fires somewhere in the window."""
    said: bool | None
    """What the label's rule says (None: the label has no rule to execute)."""
    hard: bool
    """A hard negative: silent although it holds the tokens the feature usually fires on."""

    @property
    def passed(self) -> bool | None:
        return None if self.said is None else self.said == self.fires


class Evidence(NamedTuple):
    feature: int
    label: str
    formula: str
    """The rule in symbols ("pos:NOUN AND prev:morph:PronType=Art"), or why there is none."""
    detection: float | None
    fuzzing: float | None
    passed: list[Window]
    failed: list[Window]
    unjudged: list[Window]
    """Windows of a label without a rule (an LLM's or a person's words)."""
    note: str


def _windows(space: Space, feature: int, formula: Formula | None, rows_list: list[np.ndarray],
             fires: bool, hard: int) -> list[Window]:
    f_rows, f_vals = space.reader.firing(feature)
    out = []
    for i, rows in enumerate(rows_list):
        acts = np.zeros(len(rows), dtype=np.float32)
        at = np.searchsorted(f_rows, rows)
        hit = (at < len(f_rows)) & (f_rows[np.minimum(at, len(f_rows) - 1)] == rows)
        acts[hit] = f_vals[at[hit]]
        said = None if formula is None else bool(space.table.evaluate(formula, rows).any())
        seq = np.asarray(space.reader.rows[rows])
        out.append(Window(int(seq[0, 0]), seq[:, 1], seq[:, 2], acts, fires, said, i < hard))
    return out


def label_evidence(ws: Workspace, analysis: str, feature: int, contexts: int = 60,
                   seed: int = 0, task: TaskState | None = None) -> Evidence:
    """The held-out windows ``feature``'s label was scored on (the same ones: same seed and
    count as the label run), split into those it got right and wrong."""
    store = open_features(ws, analysis)
    store.check_index(feature)
    lb = store.label(feature)
    ctx = label_context(ws, store, LabelConfig(contexts=contexts, seed=seed), True,
                        task or silent_task(), search=False)
    formula = Formula.from_text(lb.formula) if lb is not None and lb.formula else None
    case = feature_case(ctx.space, feature, contexts, seed)
    label = lb.label if lb is not None else "(no label yet)"
    if isinstance(case, str):
        return Evidence(feature, label, "", None, None, [], [], [], case)
    h = case.held_out
    pos = [h.pos_rows[h.pos_seg == i] for i in range(h.n_pos)]
    neg = [h.neg_rows[h.neg_seg == i] for i in range(h.n_neg)]
    windows = _windows(ctx.space, feature, formula, pos, True, 0) + \
        _windows(ctx.space, feature, formula, neg, False, h.n_hard)
    note = "" if formula is not None else (
        "A person's words: no rule to execute, so no score." if lb is not None
        and lb.source == "human" else "This label has no rule to execute (an LLM's words are "
        "judged by the judge model).")
    return Evidence(feature, label, formula.shown() if formula else "",
                    lb.detection if lb else None, lb.fuzzing if lb else None,
                    [w for w in windows if w.passed is True][:SHOWN],
                    [w for w in windows if w.passed is False][:SHOWN],
                    [w for w in windows if w.passed is None][:SHOWN], note)
