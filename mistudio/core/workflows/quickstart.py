"""The whole workflow on the embedded defaults, as one job (grows as the app gains steps)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mistudio.core.activations.extraction import ExtractConfig, default_layer, extract_activations
from mistudio.core.activations.store import open_activations
from mistudio.core.data.datasets import ensure_builtin_dataset
from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset
from mistudio.core.models.registry import ensure_embedded_model, model_info
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import SubTask, TaskState, silent_task
from mistudio.core.store.files import read_json, write_json_atomic
from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.results import (
    ActivationsStep,
    BestFeature,
    DatasetStep,
    FeaturesStep,
    ModelStep,
    QuickstartResult,
    SAEStep,
    SteeringDemo,
    SweepRow,
    TokenizedStep,
    step_of,
)

QUICKSTART_NAME = "quickstart"
QUICKSTART_SAE = "quickstart-topk"
STAGES = (("Add the built-in corpus and the embedded model", 0.0),
          ("Tokenize", 0.05), ("Extract a middle layer's activations", 0.15),
          ("Train a TopK SAE", 0.5), ("Evaluate it inside the model", 0.815),
          ("Analyse its features", 0.85), ("Label every feature in words", 0.91),
          ("Steer: pick a feature and strength that keep the text fluent", 0.95))
"""The stages and the fraction of the job's progress at which each starts (a UI shows them)."""


@dataclass(frozen=True)
class QuickstartConfig:
    """The quick start's settings: the embedded model and corpus at their defaults."""

    max_tokens: int | None = None
    """Tokens to extract (default: the whole corpus)."""
    context_length: int = 128
    """Tokens per sequence."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    train_steps: int = 400
    """Optimiser steps of the SAE's training."""
    batch_size: int = 2048
    """Tokens per training step."""
    label_top: int | None = None
    """Features to label with the concept explainer (the most frequent ones); None = every
    live feature."""
    analyze_tokens: int = 100_000
    """Tokens the analysis runs the SAE over."""
    model: str | None = None
    """A registered model instead of the embedded one (the tests use tiny ones)."""
    dataset: str | None = None
    """A dataset instead of the built-in corpus."""
    sae_name: str = QUICKSTART_SAE
    """The SAE (and its analysis) it trains; lesson mode trains one of its own."""

    def __post_init__(self) -> None:
        for name in ("context_length", "train_steps", "batch_size", "label_top",
                     "analyze_tokens"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise InvalidInputError(f"«{name}» must be positive, got {getattr(self, name)}.",
                                        "Leave it at its default, or give a larger number.")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise InvalidInputError(f"«max_tokens» must be positive, got {self.max_tokens}.",
                                    "Leave it empty to use the whole corpus.")


def run_quickstart(ws: Workspace, cfg: QuickstartConfig | None = None,
                   task: TaskState | None = None,
                   size_training: Callable[[str, int, str], int] | None = None,
                   ) -> QuickstartResult:
    """Built-in corpus -> embedded model -> tokenize -> extract a middle layer -> train a TopK
    SAE with the defaults and evaluate it -> analyse its features and label them (every live one
    unless ``label_top``) with the concept explainer -> steer with the best. Steps already done with
    the same settings are reused. ``size_training``, given the activation set, batch size and
    device, returns the training steps to use instead of ``train_steps`` (lesson mode times a
    warm-up once the activations exist)."""
    cfg = cfg or QuickstartConfig()
    max_tokens, context_length, device = cfg.max_tokens, cfg.context_length, cfg.device
    batch_size, label_top, analyze_tokens = cfg.batch_size, cfg.label_top, cfg.analyze_tokens
    model, dataset = cfg.model, cfg.dataset
    task = task or silent_task()
    t0 = time.perf_counter()
    task.set_status("Registering the embedded model")
    model = model or ensure_embedded_model(ws)
    info = model_info(ws, model)
    task.set_status("Adding the built-in corpus")
    dataset = dataset or ensure_builtin_dataset(ws, "pydoc", SubTask(task, 0.0, 0.05))
    tok = tokenize_dataset(ws, TokenizeConfig(dataset, model, context_length),
                           task=SubTask(task, 0.05, 0.15))
    layer = default_layer(info.n_layers)
    acts = _extract_stage(ws, ExtractConfig(model, tok.name, (layer,), ("resid_post",),
                                            context_length, max_tokens=max_tokens,
                                            device=device), SubTask(task, 0.15, 0.5))
    train_steps = (size_training(QUICKSTART_NAME, batch_size, device) if size_training
                   else cfg.train_steps)
    name = cfg.sae_name
    sae = _train_stage(ws, name, train_steps, batch_size, device, SubTask(task, 0.5, 0.85))
    features = _feature_stage(ws, name, label_top, analyze_tokens, SubTask(task, 0.85, 0.95))
    steer = _steer_stage(ws, name, features, device, SubTask(task, 0.95, 1.0))
    task.set_progress(1.0)
    return QuickstartResult(
        str(ws.root), ModelStep(model, info.family, info.n_layers, info.d_model, info.n_params),
        step_of(DatasetStep, ws.catalog.get("dataset", dataset).summary, name=dataset),
        step_of(TokenizedStep, tok.summary, name=tok.name), acts, sae, features, steer,
        round(time.perf_counter() - t0, 1))


def _extract_stage(ws: Workspace, cfg: ExtractConfig, task: TaskState) -> ActivationsStep:
    """The quick start's activation set: reused when it holds what ``cfg`` asks for."""
    existing = ws.catalog.find("activations", QUICKSTART_NAME)
    reused = existing is not None and existing.status == "complete" and \
        cfg.same_data(existing.config.get("data"))
    if not reused:
        extract_activations(ws, cfg, QUICKSTART_NAME, task, overwrite=existing is not None
                            and existing.status == "complete")
    acts = open_activations(ws, QUICKSTART_NAME)
    return step_of(ActivationsStep, acts.manifest.summary, name=QUICKSTART_NAME,
                   layer=cfg.layers[0], hook=cfg.hooks[0], reused=reused,
                   massive=acts.massive.to_json())


def _train_stage(ws: Workspace, name: str, steps: int, batch_size: int, device: str,
                 task: TaskState) -> SAEStep:
    from mistudio.core.sae.evaluation import evaluate_in_model
    from mistudio.core.sae.trainer import TrainConfig, train_sae

    cfg = TrainConfig(QUICKSTART_NAME, steps=steps, batch_size=batch_size, device=device)
    existing = ws.catalog.find("sae", name)
    reused = existing is not None and existing.status == "complete" and \
        existing.config == json.loads(json.dumps(asdict(cfg)))
    if not reused:
        train_sae(ws, cfg, name, SubTask(task, 0.0, 0.9),
                  overwrite=existing is not None and existing.status == "complete")
    summary = ws.catalog.get("sae", name).summary
    if summary.ce_loss_score is None:  # CE loss score and KL with the SAE spliced in
        summary = evaluate_in_model(ws, name, n_sequences=16, device=device,
                                    task=SubTask(task, 0.9, 1.0))
    return step_of(SAEStep, summary, name=name, reused=reused)


def _feature_stage(ws: Workspace, name: str, label_top: int | None, tokens: int,
                   task: TaskState) -> FeaturesStep:
    """Analyse the quick-start SAE (reused when newer than the SAE) and label its features."""
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.families import best_by_family
    from mistudio.core.features.labels import LabelConfig, label_features
    from mistudio.core.features.store import open_features

    sae_art = ws.catalog.get("sae", name)
    existing = ws.catalog.find("features", name)
    reused = existing is not None and existing.status == "complete" and \
        (existing.provenance.created or 0) >= (sae_art.provenance.created or 0)
    if not reused:
        analyze(ws, AnalyzeConfig(name, tokens=tokens), name,
                SubTask(task, 0.0, 0.6), overwrite=existing is not None)
    labels = label_features(ws, name, LabelConfig(top=label_top),
                            SubTask(task, 0.6, 1.0))
    best = [BestFeature(b.feature, b.label, b.score, b.frequency, b.family, b.fuzzing)
            for b in best_by_family(open_features(ws, name))]
    summary = ws.catalog.get("features", name).summary
    return FeaturesStep(name, reused, summary.n_tokens, summary.alive, summary.dead,
                        labels.scored, labels.score_ge_0_7, labels.concept_ge_0_7,
                        labels.mean_score, best, labels.wall_s)


STEER_PROMPT = "The most important thing about Python is"
SWEEP_PROMPTS = (STEER_PROMPT, "A list in Python", "The for statement")
SWEEP_STRENGTHS = (1.0, 1.5, 2.0, 3.0)
"""Coefficients tried, in multiples of each feature's largest activation."""
STEER_FILE = "quickstart-steering.json"
"""The demonstration's sweep and texts, kept in the analysis folder (derived: redone with it)."""
MAX_PERPLEXITY_RATIO = 2.0
"""A steered text may be at most this much less likely (perplexity under the unsteered model)
than the unsteered one: beyond it the model stops writing sentences."""


CANDIDATE_MIN_DETECTION = 0.8
"""A feature steered in the demonstration has a label this good on held-out text."""


def _candidates(ws: Workspace, name: str, n: int) -> list[tuple[int, str]]:
    """The ``n`` most frequent features whose label is a word (labels like '"the"' or
    '"list" / "dict"', held-out detection at least 0.8), one per label: a concept a class can
    see in the text, and common enough to show up when the model writes. A rare word ("locale")
    scores as well but steering it rarely shows. (feature, label) pairs."""
    import re

    from mistudio.core.features.store import open_features

    store = open_features(ws, name)
    freq = store.column("frequency")
    found: dict[str, tuple[float, int]] = {}
    for f, lb in store.all_labels().items():
        if lb.score is None or lb.score < CANDIDATE_MIN_DETECTION or lb.label.startswith(
                ("tokens after", "the token after")):
            continue
        quoted = re.findall(r'"([^"]*)"', lb.label.split(" after ")[0])
        if quoted and all(re.search(r"[A-Za-z]{2,}", q) for q in quoted):
            if lb.label not in found or found[lb.label][0] < freq[f]:
                found[lb.label] = (float(freq[f]), int(f))
    ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    return [(f, label) for label, (_, f) in ranked[:n]]


def _steer_stage(ws: Workspace, name: str, features: FeaturesStep, device: str,
                 task: TaskState) -> SteeringDemo | None:
    """A steering demonstration that shows a concept without breaking the model: for the three
    best-labelled features that fire on words (:func:`_candidates`), a small sweep of
    coefficients over a few prompts (:mod:`mistudio.core.steering.evaluate`) picks the feature
    and coefficient that raise the feature's own mean activation in the generated text (read by
    the unsteered model) most while the text stays within ``MAX_PERPLEXITY_RATIO`` of the
    unsteered perplexity; both sides are then generated."""
    from mistudio.core.steering.generate import GenerationConfig
    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.session import Steerer, SteeringSpec

    saved = Path(ws.catalog.get("features", name).path) / STEER_FILE
    if features.reused and saved.is_file():  # the sweep of this very analysis: reuse it
        return SteeringDemo.from_json(read_json(saved, "quick-start steering",
                                                "Delete it.")).replace(reused=True)
    candidates = _candidates(ws, name, 3)
    if not candidates:
        return None
    task.set_status("Loading the model for the steering sweep")
    spec = SteeringSpec((name,), (Intervention(candidates[0][0], 1.0),),
                        units="max", generation=GenerationConfig(max_tokens=24))
    steerer = Steerer(ws, spec, device)
    sweep = _sweep(ws, steerer, spec, candidates, device, SubTask(task, 0.0, 0.8))
    demo = _demonstrate(steerer, spec, sweep, candidates[0][0], SubTask(task, 0.8, 1.0))
    write_json_atomic(saved, demo.to_json())
    return demo


def _sweep(ws: Workspace, steerer: Any, spec: Any, candidates: list[tuple[int, str]],
           device: str, task: TaskState) -> list[SweepRow]:
    """Each candidate at each of ``SWEEP_STRENGTHS`` x its max activation, over the sweep's
    prompts: the feature's own activation in the text and the perplexity cost."""
    import dataclasses

    from mistudio.core.steering.evaluate import SteerEvalConfig, evaluate_steering
    from mistudio.core.steering.interventions import Intervention

    rows: list[SweepRow] = []
    cfg = SteerEvalConfig(SWEEP_PROMPTS, samples=2, max_tokens=16, temperature=0.7,
                          strengths=SWEEP_STRENGTHS, bootstrap=200)
    for i, (feature, label) in enumerate(candidates):
        one = dataclasses.replace(spec, interventions=(Intervention(feature, 1.0),))
        sub = SubTask(task, i / len(candidates), (i + 1) / len(candidates))
        for p in evaluate_steering(ws, one, cfg, sub, device, steerer).points:
            concept = p.scores[0]  # the feature's own activation in the generated text
            rows.append(SweepRow(feature, label, p.strength, round(concept.change, 4),
                                 round(concept.plain, 4), round(concept.steered, 4),
                                 round(p.perplexity_ratio, 3)))
    return rows


def _demonstrate(steerer: Any, spec: Any, sweep: list[SweepRow], first: int,
                 task: TaskState) -> SteeringDemo:
    """Generate both sides at the fluent settings, strongest concept first, then the gentlest
    push of the best feature; the first whose text does not loop ("same same same") is shown."""
    import dataclasses

    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.scorers import REPETITIVE, repetition

    fluent = sorted((r for r in sweep if r.perplexity_ratio <= MAX_PERPLEXITY_RATIO
                     and r.concept_change > 0), key=lambda r: -r.concept_change)
    gentlest = min((r for r in sweep if r.feature == first), key=lambda r: r.coefficient_x_max)
    tries = [*fluent[:3], gentlest]
    for i, best in enumerate(tries):
        one = dataclasses.replace(spec, interventions=(Intervention(best.feature,
                                                                    best.coefficient_x_max),))
        task.set_status(f"Steering with feature {best.feature} ({best.label}) at "
                        f"{best.coefficient_x_max:g} x max")
        r = steerer.run(STEER_PROMPT, one, SubTask(task, i / len(tries), (i + 1) / len(tries)))
        if repetition(r.steered.text) <= REPETITIVE:
            break
    return SteeringDemo.from_json({
        **best.to_json(), "prompt": STEER_PROMPT, "plain": r.plain.text,
        "steered": r.steered.text, "kl_mean": r.kl_mean, "diverges_at": r.diverges_at,
        "perplexity_plain": r.perplexity_plain, "perplexity_steered": r.perplexity_steered,
        "repetition": round(repetition(r.steered.text), 3),
        "sweep": [row.to_json() for row in sweep]})
