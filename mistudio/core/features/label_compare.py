"""Explainers side by side on the same features and the same held-out windows, nothing stored
(the command line's label comparison, ``benchmarks/labels.py``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.features.explainers import make_explainer
from mistudio.core.features.label_setup import usable_explainer
from mistudio.core.features.labels import LabelConfig, choose_features, describe, label_context
from mistudio.core.features.store import Label, open_features
from mistudio.core.runtime.tasks import SubTask, TaskState, check_cancelled, silent_task
from mistudio.core.store.workspace import Workspace


class Comparison(NamedTuple):
    explainers: list[str]
    """The explainers compared (those that could run)."""
    features: list[int]
    labels: dict[str, list[Label]]
    """Per explainer, one label per feature (in ``features`` order)."""
    notes: list[str]
    """One line per explainer that could not be used."""

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per explainer: labelled, mean detection and fuzzing, labels reaching 0.7."""
        out = {}
        for name, labels in self.labels.items():
            det = [lb.detection for lb in labels if lb.detection is not None]
            fuzz = [lb.fuzzing for lb in labels if lb.fuzzing is not None]
            out[name] = {"labelled": len(det),
                         "mean_detection": round(float(np.mean(det)), 4) if det else None,
                         "mean_fuzzing": round(float(np.mean(fuzz)), 4) if fuzz else None,
                         "detection_ge_0_7": int(sum(d >= 0.7 for d in det)),
                         "distinct_labels": len({lb.label for lb in labels if lb.status == "ok"})}
        return out


def sample_features(ws: Workspace, analysis: str, n: int, seed: int = 0) -> list[int]:
    """``n`` live features at random (the same ones for every explainer)."""
    alive = choose_features(open_features(ws, analysis), None)
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(alive, size=min(n, len(alive)), replace=False))


def compare_explainers(ws: Workspace, analysis: str, explainers: list[str],
                       features: list[int], cfg: LabelConfig | None = None,
                       task: TaskState | None = None) -> Comparison:
    """Label ``features`` with each explainer on the same windows; returns every label."""
    task = task or silent_task()
    cfg = cfg or LabelConfig()
    store = open_features(ws, analysis)
    ctx = label_context(ws, store, cfg, True, SubTask(task, 0.0, 0.3))
    labels: dict[str, list[Label]] = {}
    notes: list[str] = []
    for i, name in enumerate(explainers):
        explainer, note = usable_explainer(ws, replace(cfg, explainer=name), make_explainer)
        if note:
            notes.append(note)
            continue
        sub = SubTask(task, 0.3 + 0.7 * i / len(explainers), 0.3 + 0.7 * (i + 1) / len(explainers))
        out = []
        for j, f in enumerate(features):
            check_cancelled(task)
            out.append(describe(explainer, int(f), ctx))
            sub.set_progress((j + 1) / len(features))
        labels[explainer.name] = out
    return Comparison(list(labels), [int(f) for f in features], labels, notes)
