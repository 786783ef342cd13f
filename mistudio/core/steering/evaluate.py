"""Steering evaluated over a prompt set: does the concept appear, and what does it cost?

For every prompt, N continuations are sampled without steering and N with it (the same seeds),
at one or more strengths (a sweep multiplies every coefficient). Each continuation is scored by
the chosen scorers (:mod:`mistudio.core.steering.scorers`) and by its perplexity under the
unsteered model (coherence). The result, per strength: each scorer's mean change with a 95%
bootstrap interval, the perplexity cost, and the continuations where steering helped most and
least. Across strengths the first scorer against perplexity is the trade-off curve.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.steering.generate import (
    GenerationConfig,
    _cache_argument,
    _logits_to_keep,
    _sample,
)
from mistudio.core.steering.interventions import steering
from mistudio.core.steering.scorers import (
    Classifier,
    ScoreSummary,
    TextScorer,
    WordShare,
    load_words,
    plugin_scorer,
    summarize,
)
from mistudio.core.steering.session import Steerer, SteeringSpec
from mistudio.core.store.workspace import Workspace


@dataclass(frozen=True)
class SteerEvalConfig:
    """How to evaluate a steering spec over prompts."""

    prompts: tuple[str, ...]
    """The prompts (see scorers.load_prompts for files and built-in sets)."""
    samples: int = 3
    """Continuations per prompt and side."""
    max_tokens: int = 32
    """New tokens per continuation."""
    temperature: float = 0.8
    """Sampling temperature (> 0, so the samples differ)."""
    top_p: float = 0.95
    seed: int = 0
    strengths: tuple[float, ...] = (1.0,)
    """Multipliers of every coefficient; several make a sweep (the trade-off curve)."""
    feature_scorers: tuple[tuple[str, int], ...] = ()
    """(SAE, feature) pairs whose activation is scored; empty: the steered features."""
    words: str | None = None
    """A word list (file or comma-separated words) to score the share of."""
    classifier: str | None = None
    """Folder of a local text-classification model, scoring ``classifier_label``."""
    classifier_label: str | None = None
    text_scorers: tuple[str, ...] = ()
    """Installed plugins' text scorers to score with, by name."""
    bootstrap: int = 1000
    """Bootstrap resamples for the confidence intervals."""

    def __post_init__(self) -> None:
        if not self.prompts:
            raise InvalidInputError("There are no prompts to evaluate on.", "Give a prompt set.")
        if self.samples < 1 or self.max_tokens < 1 or self.bootstrap < 100:
            raise InvalidInputError("Samples and max tokens must be at least 1, bootstrap at "
                                    "least 100.", "Use e.g. 3 samples of 32 tokens.")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise InvalidInputError("The temperature must be above 0 for samples to differ.",
                                    "Use e.g. 0.8.")
        if not self.strengths or not all(math.isfinite(s) for s in self.strengths):
            raise InvalidInputError("Strengths must be finite numbers.", "Use e.g. 0.5,1,2.")
        if (self.classifier is None) != (self.classifier_label is None):
            raise InvalidInputError("A classifier needs the label to score, and a label needs "
                                    "the classifier.", "Give both (e.g. toxic).")


class SweepPoint(NamedTuple):
    """The evaluation at one strength."""

    strength: float
    scores: list[ScoreSummary]
    perplexity_plain: float
    """Geometric mean over continuations, under the unsteered model."""
    perplexity_steered: float
    perplexity_ratio: float
    best: list[dict[str, Any]]
    """Continuations where the first scorer rose most (prompt, both texts, scores)."""
    worst: list[dict[str, Any]]


class SteerEvalResult(NamedTuple):
    spec: dict[str, Any]
    config: dict[str, Any]
    points: list[SweepPoint]
    tokens_generated: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "config": self.config, "tokens_generated":
                self.tokens_generated, "seconds": self.seconds,
                "points": [{**p._asdict(), "scores": [s._asdict() for s in p.scores]}
                           for p in self.points]}


class _Reading(NamedTuple):
    text: str
    perplexity: float
    features: list[float]


@torch.no_grad()
def _generate(steerer: Steerer, sites: dict[str, Any], prompt: str, n: int, cfg: SteerEvalConfig,
              seed: int) -> tuple[torch.Tensor, list[list[int]]]:
    """``n`` sampled continuations of ``prompt`` in one batch: (prompt ids [T], token lists)."""
    loaded = steerer.loaded
    tok = loaded.tokenizer
    prompt_ids = tok(prompt, return_tensors="pt")["input_ids"][0]
    if len(prompt_ids) + cfg.max_tokens > loaded.info.max_context:
        raise InvalidInputError(f"A prompt of {len(prompt_ids)} tokens leaves no room for "
                                f"{cfg.max_tokens} more.", "Shorten the prompt.")
    gcfg = GenerationConfig(cfg.max_tokens, cfg.temperature, cfg.top_p, seed=seed)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    ids = prompt_ids[None].repeat(n, 1).to(loaded.device)  # [n, T]
    for s in sites.values():
        s.reset()
        s.start = 1
    cache, cache_arg = None, _cache_argument(loaded.model)
    last_only = _logits_to_keep(loaded.model, 1)
    new: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _ in range(cfg.max_tokens):
        step = ids if cache is None else ids[:, -1:]
        with steering(loaded, sites) if sites else nullcontext():
            out = loaded.model(input_ids=step, use_cache=True, **{cache_arg: cache},
                               **last_only)
        cache = getattr(out, cache_arg)
        logits = out.logits[:, -1]
        tokens = []
        for r in range(n):
            if done[r] or not torch.isfinite(logits[r]).all():
                done[r] = True
                tokens.append(tok.eos_token_id or 0)
                continue
            t = _sample(logits[r], gcfg, gens[r])
            tokens.append(t)
            new[r].append(t)
            done[r] = t == tok.eos_token_id
        ids = torch.cat([ids, torch.tensor(tokens, device=ids.device)[:, None]], dim=1)
        if all(done):
            break
    return prompt_ids, [[t for t in row if t != tok.eos_token_id] for row in new]


@torch.no_grad()
def _read(steerer: Steerer, prompt_ids: torch.Tensor, new: list[int],
          features: list[tuple[str, int]]) -> _Reading:
    """Perplexity of a continuation and its feature activations, under the unsteered model."""
    from mistudio.core.activations.massive import token_mask
    from mistudio.core.models.adapters import parse_hook_key
    from mistudio.core.models.hooks import capture

    loaded = steerer.loaded
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    if not new:
        return _Reading(text, float("nan"), [0.0] * len(features))
    ids = torch.cat([prompt_ids, torch.tensor(new)])[None].to(loaded.device)
    n = len(prompt_ids)
    hooks = sorted({steerer.saes[s][2] for s, _ in features})
    with capture(loaded, [parse_hook_key(h) for h in hooks], stop_early=False) as seen:
        logits = loaded.model(input_ids=ids, use_cache=False).logits[0]
    lp = logits[n - 1:-1].float().log_softmax(-1)
    nll = -lp.gather(-1, ids[0, n:, None]).mean()
    acts = []
    for sae_name, f in features:
        sae, _, hook = steerer.saes[sae_name]
        h = seen[hook][0, n:].float()
        a = sae.encode(h)[:, f] * token_mask(h, steerer.thresholds[sae_name])
        acts.append(float(a.mean()))
    return _Reading(text, float(nll.exp()), acts)


def evaluate_steering(ws: Workspace, spec: SteeringSpec, cfg: SteerEvalConfig,
                      task: TaskState | None = None, device: str = "auto",
                      steerer: Steerer | None = None) -> SteerEvalResult:
    """Run the evaluation (see the module docstring); ``steerer`` reuses loaded models."""
    task = task or silent_task()
    t0 = time.perf_counter()
    task.set_status("Loading the model and SAEs")
    steerer = steerer or Steerer(ws, dataclasses.replace(spec, saes=tuple(dict.fromkeys(
        [*spec.saes, *(s for s, _ in cfg.feature_scorers)]))), device)
    features = list(cfg.feature_scorers) or [
        (iv.sae or spec.saes[0], iv.feature) for iv in spec.interventions]
    for sae_name, f in features:
        if sae_name not in steerer.saes:
            raise InvalidInputError(f"The feature scorer names SAE {sae_name!r}, which is not "
                                    "loaded.", "Score features of the steered SAEs.")
        if not 0 <= f < steerer.saes[sae_name][0].cfg.d_sae:
            raise InvalidInputError(f"Feature {f} is out of range for {sae_name!r}.",
                                    "Pick an index in that range.")
    scorers = text_scorers(cfg)
    names = [f"feature {s}#{f}" for s, f in features] + list(scorers)
    units = len(cfg.prompts) * (1 + len(cfg.strengths))
    done, tokens = 0, 0

    def side(sites: dict[str, Any], label: str) -> list[list[_Reading]]:
        nonlocal done, tokens
        out = []
        for i, prompt in enumerate(cfg.prompts):
            check_cancelled(task)
            task.set_status(f"{label}: prompt {i + 1} of {len(cfg.prompts)}"
                            + _time_left(time.perf_counter() - t0, done, units))
            prompt_ids, new = _generate(steerer, sites, prompt, cfg.samples, cfg,
                                        cfg.seed + 1000 * i)
            tokens += sum(len(x) for x in new)
            out.append([_read(steerer, prompt_ids, x, features) for x in new])
            done += 1
            task.set_progress(0.95 * done / units)
        return out

    plain = side({}, "Unsteered")
    points = []
    for strength in cfg.strengths:
        sites = steerer.sites(dataclasses.replace(spec, strength=spec.strength * strength))
        steered = side(sites, f"Steered at {strength:g}x")
        points.append(_point(strength, cfg, names, plain, steered, scorers, task))
        task.emit_partial(points[-1])  # shown at once, and kept by a front end on cancel
    task.set_progress(1.0)
    return SteerEvalResult(spec.to_dict(), asdict(cfg), points, tokens,
                           round(time.perf_counter() - t0, 1))


def _time_left(elapsed: float, done: int, units: int) -> str:
    """ ", about 1 min 20 s left" from the pace so far (nothing before the first prompt)."""
    if done == 0:
        return ""
    left = round(elapsed / done * (units - done))
    return f", about {left // 60} min {left % 60:02d} s left" if left >= 60 else \
        f", about {left} s left"


def _checked(name: str, scorer: TextScorer, texts: list[str]) -> list[float]:
    """A scorer's numbers, one per text, or one clear line naming the scorer at fault."""
    values = list(scorer(texts))
    if len(values) != len(texts) or not all(isinstance(v, int | float) for v in values):
        raise InvalidInputError(f"The steering scorer {name!r} returned {len(values)} values "
                                f"for {len(texts)} texts (it must give one number per text).",
                                "Fix or uninstall the plugin that adds it.")
    return [float(v) for v in values]


def text_scorers(cfg: SteerEvalConfig) -> dict[str, TextScorer]:
    """The scorers that read the continuations' text, by the name their column gets."""
    out: dict[str, TextScorer] = {}
    if cfg.words:
        out["words"] = WordShare(load_words(cfg.words))
    if cfg.classifier and cfg.classifier_label:
        out[f"classifier {cfg.classifier_label}"] = Classifier(cfg.classifier,
                                                               cfg.classifier_label)
    for name in cfg.text_scorers:
        out[name] = plugin_scorer(name)
    return out


def _point(strength: float, cfg: SteerEvalConfig, names: list[str], plain: list[list[_Reading]],
           steered: list[list[_Reading]], scorers: dict[str, TextScorer],
           task: TaskState) -> SweepPoint:
    """Scores [prompt, sample, scorer] of both sides, summarised."""
    task.set_status(f"Scoring strength {strength:g}x")

    def table(side: list[list[_Reading]]) -> np.ndarray:
        rows = []
        for readings in side:
            texts = [r.text for r in readings]
            by_scorer = [_checked(name, scorer, texts) for name, scorer in scorers.items()]
            rows.append([[*r.features, *(col[i] for col in by_scorer)]
                         for i, r in enumerate(readings)])
        return np.asarray(rows, dtype=np.float64)  # [prompts, samples, scorers]

    p, s = table(plain), table(steered)
    scores = [summarize(n, p[:, :, j], s[:, :, j], cfg.bootstrap, cfg.seed)
              for j, n in enumerate(names)]

    def geo(side: list[list[_Reading]]) -> float:
        vals = [math.log(r.perplexity) for rs in side for r in rs if math.isfinite(r.perplexity)]
        return math.exp(sum(vals) / len(vals)) if vals else float("nan")

    gain = (s[:, :, 0] - p[:, :, 0]) if names else np.zeros(p.shape[:2])
    order = np.argsort(gain, axis=None)  # flat over (prompt, sample), ascending

    def example(flat: int) -> dict[str, Any]:
        i, k = np.unravel_index(flat, gain.shape)
        return {"prompt": cfg.prompts[i], "plain": plain[i][k].text, "steered": steered[i][k].text,
                "score_plain": float(p[i, k, 0]) if names else None,
                "score_steered": float(s[i, k, 0]) if names else None,
                "perplexity_steered": steered[i][k].perplexity}

    ppl_p, ppl_s = geo(plain), geo(steered)
    return SweepPoint(strength, scores, ppl_p, ppl_s, ppl_s / ppl_p if ppl_p else float("nan"),
                      [example(int(j)) for j in order[::-1][:3]],
                      [example(int(j)) for j in order[:3]])
