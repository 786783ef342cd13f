"""Lesson mode's core: the quick start sized for one class period, and features in the order a
class should meet them.

- :func:`lesson_train_steps` sizes the training run from a measured warm-up on the machine at
  hand (a short run of the same SAE; its training throughput, not its start-up, sets the
  step count), so the live curves fill about ``seconds``.
- :func:`run_lesson` is :func:`mistudio.core.workflows.quickstart.run_quickstart` with that step count.
- :func:`lesson_features` lists the best feature of each family of labels (names, quotes,
  negation, code, ... before single words, punctuation and newlines), so the first screen is
  not a column of newline detectors.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

from mistudio.core.runtime.tasks import SubTask, TaskState, silent_task
from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.quickstart import QuickstartConfig, run_quickstart
from mistudio.core.workflows.results import QuickstartResult

LESSON_SECONDS = 270.0
"""Training time a lesson aims for (the seed: "live-trains a small SAE in about five minutes"):
four and a half, so that on two CPU cores the first steered text comes within ten minutes of an
empty workspace (the rest, first model load and extraction included, took about 300 s)."""
WARMUP_STEPS = 20
MIN_STEPS, MAX_STEPS = 100, 4000
WARMUP_NAME = "lesson-warmup"
LESSON_SAE = "lesson-topk"
"""The SAE each lesson trains live (the previous lesson's is replaced)."""


class _WithoutPartials(SubTask):
    """The warm-up's progress and status, but not its metric rows (they are not the run's)."""

    def emit_partial(self, obj: Any) -> None:
        pass


class LessonFeature(NamedTuple):
    feature: int
    label: str
    score: float
    """Held-out detection balanced accuracy."""
    frequency: float
    """Share of analysed tokens it fires on."""
    family: str = ""


def lesson_train_steps(ws: Workspace, activations: str, batch_size: int, device: str = "auto",
                       seconds: float = LESSON_SECONDS, task: TaskState | None = None) -> int:
    """Training steps that take about ``seconds`` here: ``WARMUP_STEPS`` of the quick start's
    SAE are trained (and removed), and their logged tokens/s sets the count."""
    from mistudio.core.sae.checkpoints import read_metrics
    from mistudio.core.sae.trainer import TrainConfig, train_sae

    cfg = TrainConfig(activations, steps=WARMUP_STEPS, batch_size=batch_size, device=device,
                      log_every=WARMUP_STEPS // 2, eval_tokens=batch_size)
    train_sae(ws, cfg, WARMUP_NAME, task or silent_task(),
              overwrite=ws.catalog.find("sae", WARMUP_NAME) is not None)
    try:
        art = ws.catalog.get("sae", WARMUP_NAME)
        rows = [r for r in read_metrics(Path(art.path) / "metrics.jsonl")
                if r.get("tokens_per_s")]
        tokens_per_s = float(rows[-1]["tokens_per_s"]) if rows else 0.0
    finally:
        ws.remove("sae", WARMUP_NAME)
    if tokens_per_s <= 0:
        return MIN_STEPS
    steps = seconds * tokens_per_s / batch_size
    return int(min(max(math.floor(steps), MIN_STEPS), MAX_STEPS))


def run_lesson(ws: Workspace, task: TaskState | None = None, seconds: float = LESSON_SECONDS,
               cfg: QuickstartConfig | None = None) -> QuickstartResult:
    """The quick start (``cfg``: its settings) training an SAE of its own, ``LESSON_SAE``,
    afresh every time with training sized to ``seconds``: a class always watches it learn
    (reusing the quick start's SAE skipped the curves). The corpus, tokens and activations the
    quick start made are reused."""
    task = task or silent_task()
    for kind in ("features", "sae"):  # the previous lesson's SAE and its analysis
        if ws.catalog.find(kind, LESSON_SAE) is not None:
            ws.remove(kind, LESSON_SAE)
    cfg = dataclasses.replace(cfg or QuickstartConfig(), sae_name=LESSON_SAE)

    def size(activations: str, batch_size: int, device: str) -> int:
        task.set_status("Timing a few training steps to size the run")
        steps = lesson_train_steps(ws, activations, batch_size, device, seconds,
                                   _WithoutPartials(task, 0.5, 0.5))
        task.emit_partial({"lesson_steps": steps})  # the live curves' x axis
        return steps

    return run_quickstart(ws, cfg, task, size_training=size)


def lesson_features(ws: Workspace, analysis: str, n: int = 8) -> list[LessonFeature]:
    """The ``n`` features to show a class first: the best label of each family, families of
    concepts (names, quotes, negation, code, ...) before single words, and those before layout
    and punctuation (:func:`mistudio.core.features.families.best_by_family`)."""
    from mistudio.core.features.families import best_by_family
    from mistudio.core.features.store import open_features

    return [LessonFeature(b.feature, b.label, b.score, b.frequency, b.family)
            for b in best_by_family(open_features(ws, analysis), n)]
