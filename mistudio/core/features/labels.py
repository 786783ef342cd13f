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

from mistudio.core.features.examples import FeatureReader, TokenText
from mistudio.core.features.explain import (
    explain_pattern,
    negatives_for,
    rule_token_ids,
    simulation_score,
    split_examples,
)
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
    """pattern, llm (the embedded model), llm:MODEL (a workspace model) or endpoint:MODEL."""
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
    seed: int = 0

    def __post_init__(self) -> None:
        kind = self.explainer.split(":")[0]
        if kind not in ("pattern", "llm", "endpoint"):
            raise InvalidInputError(f"Unknown explainer {self.explainer!r}.",
                                    "Use pattern, llm, llm:MODEL or endpoint:MODEL.")
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


def choose_features(store: FeatureStore, top: int) -> np.ndarray:
    """The ``top`` most frequent live features, non-dense first."""
    alive = store.select(alive_only=True)
    order = store.order(alive, "frequency")
    dense = store.column("dense")[order]
    return np.concatenate([order[~dense], order[dense]])[:top]


def _explainer(ws: Workspace, cfg: LabelConfig) -> Any:
    from mistudio.core.features.llm import EndpointLLM, LocalLLM
    from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model

    kind, _, model = cfg.explainer.partition(":")
    if kind == "pattern":
        return None
    if kind == "endpoint":
        return EndpointLLM(cfg.endpoint, model)
    if not model:
        ensure_embedded_model(ws)
    return LocalLLM(ws, model or EMBEDDED_NAME)


def label_features(ws: Workspace, analysis: str, cfg: LabelConfig,
                   task: TaskState | None = None) -> LabelRun:
    """Describe and score features of ``analysis``; returns counts and the score distribution."""
    with ws.writer("features", analysis, "label"), \
            ws.job("label", analysis, asdict(cfg)):  # not beside a re-analysis of it
        return _label(ws, analysis, cfg, task)


def _label(ws: Workspace, analysis: str, cfg: LabelConfig,
           task: TaskState | None) -> LabelRun:
    from mistudio.core.features.llm import detection_score, explain_with_llm
    from mistudio.core.models.registry import load_tokenizer

    task = task or silent_task()
    store = open_features(ws, analysis)
    reader = FeatureReader(store.folder)
    feats = (np.array(cfg.features, dtype=np.int64) if cfg.features
             else choose_features(store, cfg.top))
    for f in feats:
        store.check_index(int(f))
    text = TokenText(load_tokenizer(ws, reader.manifest.provenance.model))
    llm = _explainer(ws, cfg)
    judge = llm
    if llm is not None and cfg.judge:
        from mistudio.core.features.llm import LocalLLM

        judge = LocalLLM(ws, cfg.judge)
    source = "pattern" if llm is None else llm.name
    existing = store.all_labels()
    # skip human labels always, and this explainer's own labels unless asked to redo them
    todo = [int(f) for f in feats if int(f) not in existing
            or (existing[int(f)].source != "human"
                and (existing[int(f)].source != source or cfg.overwrite))]
    pending: list[Label] = []
    done = 0
    t0 = time.perf_counter()
    logit_ids = store.column("logit_pos_ids")
    try:
        for i, f in enumerate(todo):
            check_cancelled(task)
            explain_ex, held_out = split_examples(reader, f)
            if llm is None:
                def train_negatives(rule: Any, f: int = f, ex: Any = explain_ex) -> Any:
                    return negatives_for(reader, f, rule_token_ids(rule, ex, text),
                                         cfg.negatives, cfg.seed + 1)

                exp = explain_pattern(explain_ex, text, text.many(logit_ids[f]), train_negatives)
                if exp.rule is None:
                    pending.append(Label(f, exp.label, source, None, None, "ok", None))
                else:
                    neg = negatives_for(reader, f, rule_token_ids(exp.rule, explain_ex, text),
                                        cfg.negatives, cfg.seed)
                    score = simulation_score(exp.rule, held_out, neg, text)
                    pending.append(Label(f, exp.label, source, "simulation", score, "ok", None))
            else:
                label = explain_with_llm(llm, explain_ex, text, cfg.prompt)
                if label is None:
                    pending.append(Label(f, "(no usable description)", source, None, None,
                                         "failed", "the explainer wrote nothing usable"))
                else:
                    tokens = np.unique(np.concatenate(
                        [e.token_ids[e.activations > 0] for e in explain_ex] or [np.zeros(0)]))
                    neg = negatives_for(reader, f, tokens.astype(np.int64), cfg.negatives,
                                        cfg.seed)
                    score = detection_score(judge, label, held_out, neg, text)
                    pending.append(Label(f, label, source, f"detection:{judge.name}", score,
                                         "ok", None))
            done += 1
            if len(pending) >= COMMIT_EVERY:
                store.set_labels(pending)
                pending = []
            task.set_progress((i + 1) / max(len(todo), 1))
            task.set_status(f"Labelled {i + 1:,}/{len(todo):,} features")
    finally:
        if pending:
            store.set_labels(pending)  # a cancelled run keeps what it finished
    final = store.all_labels()
    scores = [lb.score for f in feats if (lb := final.get(int(f))) is not None
              and lb.score is not None and lb.source == source]
    return LabelRun(analysis, source, len(feats), done, len(feats) - len(todo), len(scores),
                    int(sum(s >= 0.7 for s in scores)),
                    float(np.mean(scores)) if scores else None,
                    np.histogram(scores, bins=10, range=(0, 1))[0].tolist() if scores else [],
                    round(time.perf_counter() - t0, 2), asdict(cfg))
