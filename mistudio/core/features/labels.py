"""Labelling many features: pick them, explain each, score each label on held-out windows, store.

By default every live feature is labelled (the most frequent first, dense ones last) within a
time budget; features already labelled by the same explainer are skipped unless ``overwrite``
(another explainer's labels are replaced), labels are committed every few features (a
cancelled or timed-out run keeps what it finished and the next run goes on from there), and hand
labels are never overwritten. Every label gets the same two held-out scores, detection and
fuzzing (:mod:`.contexts`); ``score`` is its detection.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mistudio.core.features.concept_explainer import build_space, feature_case
from mistudio.core.features.examples import FeatureReader, analysis_token_text
from mistudio.core.features.explainers import Context, make_explainer, plugin_explainers
from mistudio.core.features.formula import Formula, family
from mistudio.core.features.label_setup import concept_annotations, usable_explainer
from mistudio.core.features.store import FeatureStore, Label, open_features
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import SubTask, TaskState, check_cancelled, silent_task
from mistudio.core.store.records import Record
from mistudio.core.store.workspace import Workspace

COMMIT_EVERY = 16


@dataclass(frozen=True)
class LabelConfig:
    """Which features to describe, and with what."""

    top: int | None = None
    """How many features (the most frequent live ones, dense ones last); None = every live
    feature."""
    features: tuple[int, ...] = ()
    """Exactly these features instead of the top N."""
    explainer: str = "concept"
    """concept (formulas over parts of speech, entities, quotes, code, ... and tokens), pattern
    (tokens only), llm:MODEL (a workspace model of at least 1B parameters), endpoint:MODEL, an
    installed explainer plugin's name, or human (score the hand labels with «judge»; their
    words never change)."""
    endpoint: str = "http://localhost:11434/v1"
    """OpenAI-compatible server for endpoint:MODEL (must be on this machine unless online)."""
    judge: str | None = None
    """Model that scores LLM and hand labels (detection and fuzzing): a workspace model or
    endpoint:MODEL; None = the LLM explainer itself."""
    prompt: str | None = None
    """Explainer prompt for LLM explainers, with ``{examples}`` where the marked examples go;
    None = :data:`mistudio.core.features.llm.EXPLAIN_PROMPT`."""
    contexts: int = 60
    """Activating windows, and as many silent ones (half hard), each label is judged on."""
    budget_s: float = 600.0
    """Stop after this many seconds; the features left are labelled by the next run."""
    overwrite: bool = False
    """Relabel features this explainer already labelled."""
    scorer: str | None = None
    """A label scorer plugin to score the labels with; None = detection and fuzzing."""
    seed: int = 0

    def __post_init__(self) -> None:
        kind = self.explainer.split(":")[0]
        if kind not in ("concept", "pattern", "llm", "endpoint", "plugin", "human") and \
                self.explainer not in plugin_explainers():
            raise InvalidInputError(f"Unknown explainer {self.explainer!r}.",
                                    "Use concept, pattern, llm:MODEL, endpoint:MODEL, human or "
                                    "an installed explainer plugin.")
        if kind == "endpoint" and ":" not in self.explainer:
            raise InvalidInputError("endpoint needs the served model's name.",
                                    "Use «explainer=endpoint:MODEL» (e.g. endpoint:llama3.1).")
        if kind == "human" and not self.judge:
            raise InvalidInputError("Scoring a person's labels needs a judge model.",
                                    "Give «judge=MODEL»: a workspace model of 1B parameters or "
                                    "more, or endpoint:MODEL for a local server.")
        if self.prompt is not None and "{examples}" not in self.prompt:
            raise InvalidInputError("The explainer prompt has no {examples} placeholder.",
                                    "Put {examples} where the examples should go.")
        if self.top is not None and self.top <= 0:
            raise InvalidInputError(f"«top» must be positive, got {self.top}.",
                                    "Use «top=100», or leave it empty to label every feature.")
        if not 4 <= self.contexts <= 1000:
            raise InvalidInputError(f"«contexts» must be between 4 and 1000, got "
                                    f"{self.contexts}.", "Use «contexts=60» (the default).")
        if self.budget_s <= 0:
            raise InvalidInputError(f"«budget_s» must be positive, got {self.budget_s}.",
                                    "Use «budget_s=600» (the default).")


@dataclass
class LabelRun(Record):
    """What a labelling run did, and how good the labels it wrote are."""

    analysis: str = ""
    explainer: str = ""
    requested: int = 0
    labelled_now: int = 0
    skipped: int = 0
    """Features already labelled (by this explainer, or by hand) and left as they were."""
    left: int = 0
    """Features the time budget left for the next run."""
    scored: int = 0
    """Requested features whose label from this explainer has a score."""
    score_ge_0_7: int = 0
    """Of those, labels whose held-out detection is at least 0.7."""
    concept_ge_0_7: int = 0
    """Of those, labels that name a concept (not a list of literal tokens)."""
    mean_score: float | None = None
    mean_fuzzing: float | None = None
    score_histogram: list[int] = field(default_factory=list)
    """Detection scores in ten bins from 0 to 1."""
    families: dict[str, int] = field(default_factory=dict)
    """Labelled features per family."""
    unlabelled: int = 0
    """Features left without a label, each with its reason stored (too few activations, ...)."""
    wall_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    chosen: str = ""
    """Which features were labelled, in words."""
    concepts: str = ""
    """Which concepts labels could use (the language pipeline, or why it was left out)."""
    note: str = ""
    """One line when the explainer asked for could not be used (and which one was)."""


def choose_features(store: FeatureStore, top: int | None) -> np.ndarray:
    """The ``top`` most frequent live features (all of them for None), non-dense first."""
    alive = store.select(alive_only=True)
    order = store.order(alive, "frequency")
    dense = store.column("dense")[order]
    return np.concatenate([order[~dense], order[dense]])[:top]


def _choice_words(store: FeatureStore, cfg: LabelConfig, feats: np.ndarray) -> str:
    if cfg.features:
        return f"the {len(feats):,} features named"
    from mistudio.core.features.analysis import DENSE_FREQUENCY

    n_dense = int(store.column("dense").sum())
    which = "live features" if cfg.top is None else "most frequent live features"
    words = f"the {len(feats):,} {which}" if cfg.top is not None else f"all {len(feats):,} {which}"
    if n_dense:
        words += f", the {n_dense:,} dense ones (on over {DENSE_FREQUENCY:.0%} of tokens) last"
    return words


def describe(explainer: Any, f: int, ctx: Context) -> Label:
    """One feature's label, scored on held-out windows (or unlabelled, saying why)."""
    case = feature_case(ctx.space, f, ctx.contexts, ctx.seed)
    if isinstance(case, str):
        if explainer.name == "human":  # a person's words stay, unscored, with the reason
            return Label(f, explainer.words(f, ctx), "human", None, None, "ok", case)
        return Label(f, "(not labelled)", explainer.name, None, None, "failed", case)
    exp = explainer.explain(f, case, ctx)
    if exp is None:
        return Label(f, "(no usable description)", explainer.name, None, None, "failed",
                     "the explainer wrote nothing usable")
    s = explainer.score(f, exp, case, ctx)
    formula = exp.rule if isinstance(exp.rule, Formula) else None
    # which concepts the label could use (the language pipeline, or why it was left out)
    detail = f"concepts: {ctx.space.linguistic}" if explainer.name == "concept" else None
    return Label(f, exp.label, explainer.name, s.scorer, s.score, "ok", detail,
                 family(formula) if formula else None, s.detection, s.fuzzing,
                 formula.to_text() if formula else None)


def label_features(ws: Workspace, analysis: str, cfg: LabelConfig,
                   task: TaskState | None = None) -> LabelRun:
    """Describe and score features of ``analysis``; returns counts and the score distribution."""
    with ws.writer("features", analysis, "label"), \
            ws.job("label", analysis, asdict(cfg)):  # not beside a re-analysis of it
        return _label(ws, analysis, cfg, task)


def label_context(ws: Workspace, store: FeatureStore, cfg: LabelConfig, concepts: bool,
                  task: TaskState, search: bool = True) -> Context:
    """The concept table and windows of an analysis (annotating its text the first time);
    ``search=False``: without the concept search's matrices."""
    from mistudio.core.models.registry import load_tokenizer

    reader = FeatureReader(store.folder)
    model = reader.manifest.provenance.model
    text = analysis_token_text(store.folder, lambda: load_tokenizer(ws, model))
    ann = concept_annotations(ws, reader, text, concepts, task)
    return Context(reader, text, build_space(reader, ann, text, search), cfg.contexts, cfg.seed)


def _todo(store: FeatureStore, feats: np.ndarray, source: str, overwrite: bool) -> list[int]:
    existing = store.all_labels()
    if source == "human":  # scoring hand labels: exactly the features a person labelled
        return [int(f) for f in feats if int(f) in existing
                and existing[int(f)].source == "human"]
    # skip human labels always, and this explainer's own labels unless asked to redo them
    return [int(f) for f in feats if int(f) not in existing
            or (existing[int(f)].source != "human"
                and (existing[int(f)].source != source or overwrite))]


def _label(ws: Workspace, analysis: str, cfg: LabelConfig,
           task: TaskState | None) -> LabelRun:
    task = task or silent_task()
    t0 = time.perf_counter()
    store = open_features(ws, analysis)
    feats = (np.array(cfg.features, dtype=np.int64) if cfg.features
             else choose_features(store, cfg.top))
    for f in feats:
        store.check_index(int(f))
    explainer, note = usable_explainer(ws, cfg, make_explainer)
    if note:
        task.set_status(note)
    todo = _todo(store, feats, explainer.name, cfg.overwrite)
    ctx = label_context(ws, store, cfg, explainer.name == "concept", SubTask(task, 0.0, 0.3)) \
        if todo else None
    done = _run(store, explainer, todo, ctx, cfg, t0, SubTask(task, 0.3, 1.0))
    return _summary(store, cfg, feats, explainer.name, len(todo), done, t0, ctx, note)


def _run(store: FeatureStore, explainer: Any, todo: list[int], ctx: Context | None,
         cfg: LabelConfig, t0: float, task: TaskState) -> int:
    """Label ``todo`` in order until done or out of time; returns how many were labelled."""
    pending: list[Label] = []
    done = 0
    try:
        for f in todo:
            check_cancelled(task)
            if time.perf_counter() - t0 > cfg.budget_s:
                break
            pending.append(describe(explainer, f, ctx))  # type: ignore[arg-type]
            done += 1
            if len(pending) >= COMMIT_EVERY:
                store.set_labels(pending)
                pending = []
            if done % 16 == 0 or done == len(todo):
                task.set_progress(done / max(len(todo), 1))
                task.set_status(f"Labelled {done:,}/{len(todo):,} features")
    finally:
        if pending:
            store.set_labels(pending)  # a cancelled run keeps what it finished
    return done


def _summary(store: FeatureStore, cfg: LabelConfig, feats: np.ndarray, source: str, n_todo: int,
             done: int, t0: float, ctx: Context | None, note: str) -> LabelRun:
    final = store.all_labels()
    mine = [lb for f in feats if (lb := final.get(int(f))) is not None and lb.source == source]
    scored = [lb for lb in mine if lb.score is not None]
    scores = [lb.score for lb in scored]
    fuzz = [lb.fuzzing for lb in scored if lb.fuzzing is not None]
    fams: dict[str, int] = {}
    for lb in mine:
        if lb.family:
            fams[lb.family] = fams.get(lb.family, 0) + 1
    concept = [lb for lb in scored if lb.score >= 0.7 and lb.formula  # type: ignore[operator]
               and (fm := Formula.from_text(lb.formula)) is not None and fm.names_concept]
    return LabelRun(
        store.folder.name, source, len(feats), done, len(feats) - n_todo, n_todo - done,
        len(scores), int(sum(s >= 0.7 for s in scores)), len(concept),
        float(np.mean(scores)) if scores else None, float(np.mean(fuzz)) if fuzz else None,
        np.histogram(scores, bins=10, range=(0, 1))[0].tolist() if scores else [],
        dict(sorted(fams.items(), key=lambda kv: -kv[1])),
        sum(lb.status == "failed" for lb in mine), round(time.perf_counter() - t0, 2),
        asdict(cfg), _choice_words(store, cfg, feats),
        ctx.space.linguistic if ctx is not None else "", note)
