"""Labelling many features: pick them, explain each, score each label on held-out contexts, store.

Batched over the top N live features (by firing frequency, dense ones last), cached (features
already labelled by the same explainer are skipped unless ``overwrite``; another explainer's
labels are replaced), resumable (labels are
committed every few features, so a cancelled run keeps what it finished) and cancellable.
Human labels are never overwritten by an explainer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mistudio.core.features.examples import FeatureReader, analysis_token_text
from mistudio.core.features.explain import split_examples
from mistudio.core.features.explainers import Context, make_explainer, plugin_explainers
from mistudio.core.features.store import FeatureStore, Label, open_features
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.records import Record
from mistudio.core.store.workspace import Workspace

COMMIT_EVERY = 16


@dataclass(frozen=True)
class LabelConfig:
    """Which features to describe, and with what."""

    top: int = 100
    """How many features (the most frequent live ones, dense ones last)."""
    features: tuple[int, ...] = ()
    """Exactly these features instead of the top N."""
    explainer: str = "pattern"
    """pattern, llm (the embedded model), llm:MODEL (a workspace model), endpoint:MODEL, or an
    installed explainer plugin's name."""
    endpoint: str = "http://localhost:11434/v1"
    """OpenAI-compatible server for endpoint:MODEL (must be on this machine unless online)."""
    judge: str | None = None
    """Model that scores LLM labels by detection; None = the explainer itself."""
    prompt: str | None = None
    """Explainer prompt for LLM explainers, with ``{examples}`` where the marked examples go;
    None = :data:`mistudio.core.features.llm.EXPLAIN_PROMPT`."""
    negatives: int = 20
    """Non-activating contexts per score (half hard negatives)."""
    overwrite: bool = False
    """Relabel features this explainer already labelled."""
    scorer: str | None = None
    """A label scorer plugin to score the labels with; None = the explainer's own scoring."""
    seed: int = 0

    def __post_init__(self) -> None:
        kind = self.explainer.split(":")[0]
        if kind not in ("pattern", "llm", "endpoint", "plugin") and \
                self.explainer not in plugin_explainers():
            raise InvalidInputError(f"Unknown explainer {self.explainer!r}.",
                                    "Use pattern, llm, llm:MODEL, endpoint:MODEL or an "
                                    "installed explainer plugin.")
        if kind == "endpoint" and ":" not in self.explainer:
            raise InvalidInputError("endpoint needs the served model's name.",
                                    "Use «explainer=endpoint:MODEL» (e.g. endpoint:llama3.1).")
        if self.prompt is not None and "{examples}" not in self.prompt:
            raise InvalidInputError("The explainer prompt has no {examples} placeholder.",
                                    "Put {examples} where the examples should go.")
        if self.top <= 0 and not self.features:
            raise InvalidInputError(f"«top» must be positive, got {self.top}.",
                                    "Use «top=100», or name the features.")


@dataclass
class LabelRun(Record):
    """What a labelling run did, and how good the labels it wrote are."""

    analysis: str = ""
    explainer: str = ""
    requested: int = 0
    labelled_now: int = 0
    skipped: int = 0
    """Features already labelled (by this explainer, or by hand) and left as they were."""
    scored: int = 0
    """Requested features whose label from this explainer has a score."""
    score_ge_0_7: int = 0
    mean_score: float | None = None
    score_histogram: list[int] = field(default_factory=list)
    """Scores in ten bins from 0 to 1."""
    wall_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    chosen: str = ""
    """Which features were labelled, in words (named ones, or the most frequent live ones with
    how many dense ones were put last)."""


def choose_features(store: FeatureStore, top: int) -> np.ndarray:
    """The ``top`` most frequent live features, non-dense first."""
    alive = store.select(alive_only=True)
    order = store.order(alive, "frequency")
    dense = store.column("dense")[order]
    return np.concatenate([order[~dense], order[dense]])[:top]


def _choice_words(store: FeatureStore, cfg: LabelConfig, feats: np.ndarray) -> str:
    if cfg.features:
        return f"the {len(feats):,} features named"
    from mistudio.core.features.analysis import DENSE_FREQUENCY

    n_dense = int(store.column("dense").sum())
    chosen_dense = int(store.column("dense")[feats].sum()) if len(feats) else 0
    words = f"the {len(feats):,} most frequent live features"
    if n_dense:
        words += (f", the {n_dense:,} dense ones (on over {DENSE_FREQUENCY:.0%} of tokens: "
                  f"rarely one concept) last" + (f", {chosen_dense:,} of them included"
                                                  if chosen_dense else ", none included"))
    return words


def _describe(explainer: Any, f: int, ctx: Context) -> Label:
    """One feature's label, scored on held-out contexts (or failed, saying so)."""
    examples, held_out = split_examples(ctx.reader, f)
    exp = explainer.explain(f, examples, ctx)
    if exp is None:
        return Label(f, "(no usable description)", explainer.name, None, None, "failed",
                     "the explainer wrote nothing usable")
    scored = explainer.score(f, exp, examples, held_out, ctx)
    return Label(f, exp.label, explainer.name, scored.scorer, scored.score, "ok", None)


def label_features(ws: Workspace, analysis: str, cfg: LabelConfig,
                   task: TaskState | None = None) -> LabelRun:
    """Describe and score features of ``analysis``; returns counts and the score distribution."""
    with ws.writer("features", analysis, "label"), \
            ws.job("label", analysis, asdict(cfg)):  # not beside a re-analysis of it
        return _label(ws, analysis, cfg, task)


def _label(ws: Workspace, analysis: str, cfg: LabelConfig,
           task: TaskState | None) -> LabelRun:
    from mistudio.core.models.registry import load_tokenizer

    task = task or silent_task()
    store = open_features(ws, analysis)
    reader = FeatureReader(store.folder)
    feats = (np.array(cfg.features, dtype=np.int64) if cfg.features
             else choose_features(store, cfg.top))
    for f in feats:
        store.check_index(int(f))
    model = reader.manifest.provenance.model
    text = analysis_token_text(store.folder, lambda: load_tokenizer(ws, model))
    ctx = Context(reader, text, store.column("logit_pos_ids"), cfg.negatives, cfg.seed)
    explainer = make_explainer(ws, cfg.explainer, cfg.endpoint, cfg.judge, cfg.prompt,
                               cfg.scorer)
    source = explainer.name
    existing = store.all_labels()
    # skip human labels always, and this explainer's own labels unless asked to redo them
    todo = [int(f) for f in feats if int(f) not in existing
            or (existing[int(f)].source != "human"
                and (existing[int(f)].source != source or cfg.overwrite))]
    pending: list[Label] = []
    t0 = time.perf_counter()
    try:
        for i, f in enumerate(todo):
            check_cancelled(task)
            pending.append(_describe(explainer, f, ctx))
            if len(pending) >= COMMIT_EVERY:
                store.set_labels(pending)
                pending = []
            task.set_progress((i + 1) / max(len(todo), 1))
            task.set_status(f"Labelled {i + 1:,}/{len(todo):,} features")
    finally:
        if pending:
            store.set_labels(pending)  # a cancelled run keeps what it finished
    done = len(todo)
    final = store.all_labels()
    scores = [lb.score for f in feats if (lb := final.get(int(f))) is not None
              and lb.score is not None and lb.source == source]
    return LabelRun(analysis, source, len(feats), done, len(feats) - len(todo), len(scores),
                    int(sum(s >= 0.7 for s in scores)),
                    float(np.mean(scores)) if scores else None,
                    np.histogram(scores, bins=10, range=(0, 1))[0].tolist() if scores else [],
                    round(time.perf_counter() - t0, 2), asdict(cfg),
                    _choice_words(store, cfg, feats))
