"""What a steering evaluation measures in each continuation, and how sure it is.

Three kinds of scorer, each turning one generated continuation into a number:

- ``feature``: the mean activation of an SAE feature over the generated tokens, read with the
  unsteered model (does the concept appear in the text, whoever wrote it);
- ``classifier``: the probability a local Hugging Face text-classification model (a toxicity or
  sentiment classifier, say) gives one of its labels;
- ``words``: the share of the continuation's words that are in a word list;
- a plugin's text scorer (entry-point group ``mistudio.steering_scorers``): any
  :class:`TextScorer`, named in ``SteerEvalConfig.text_scorers``.

Coherence is the perplexity of the continuation under the unsteered model. Differences between
steered and unsteered means come with a percentile bootstrap over prompts (the samples of one
prompt are resampled together: they are not independent of each other).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.runtime.plugins import plugins

BUILTIN_PROMPTS = {
    "everyday": (
        "I think that", "The weather today is", "My favourite food is", "In the news today,",
        "Once upon a time,", "The best way to learn something new is", "When I woke up this "
        "morning,", "The city at night", "Here is a short story about a dog:",
        "Scientists recently discovered", "My friend told me that", "The most important thing "
        "in life is"),
    "python": (
        "The most important thing about Python is", "A list in Python", "To read a file, you",
        "An exception is raised when", "The for statement", "A dictionary maps",
        "Functions are defined with", "The with statement"),
}
"""Prompt sets that ship with miStudio (neutral openings on which a concept can appear)."""

REPETITIVE = 0.5
"""A text whose words are more than half repeats reads as broken ("same same same")."""


def repetition(text: str) -> float:
    """The share of a text's words that repeat an earlier word (0: all distinct). Perplexity
    misses this failure: a model finds its own loops likely, so "rules rules rules world world"
    passed a perplexity-within-2x check."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < 6:
        return 0.0
    return 1.0 - len(set(words)) / len(words)


class ScoreSummary(NamedTuple):
    """One scorer at one steering strength."""

    scorer: str
    plain: float
    """Mean score of the unsteered continuations."""
    steered: float
    change: float
    """steered - plain."""
    ci_low: float
    ci_high: float
    """95% bootstrap interval of the change (over prompts)."""
    relative: float | None
    """change / plain (None when plain is 0)."""


def load_prompts(source: str) -> list[str]:
    """A built-in set by name, or a file: .txt (one prompt per line) or .jsonl ("prompt" or
    "text" field)."""
    if source in BUILTIN_PROMPTS:
        return list(BUILTIN_PROMPTS[source])
    path = Path(source).expanduser()
    if not path.is_file():
        raise NotFoundError(f"{source!r} is neither a built-in prompt set "
                            f"({', '.join(BUILTIN_PROMPTS)}) nor a file.",
                            "Give a .txt file with one prompt per line, or a .jsonl file.")
    import json

    prompts: list[str] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{path} line {n} is not valid JSON ({err}).",
                                        "Fix or remove that line.") from err
            value = row.get("prompt") or row.get("text") if isinstance(row, dict) else row
            if isinstance(value, str) and value.strip():
                prompts.append(value.strip())
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InvalidInputError(f"{path} holds no prompts.", "Put one prompt per line.")
    return prompts


def load_words(source: str) -> frozenset[str]:
    """A word list: a file (one per line, or comma-separated) or the words themselves."""
    path = Path(source).expanduser()
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else source
    words = frozenset(w.strip().lower() for w in re.split(r"[,\n]", text) if w.strip())
    if not words:
        raise InvalidInputError("The word list is empty.", "Give words separated by commas, or "
                                "a file with one word per line.")
    return words


def word_share(text: str, words: frozenset[str]) -> float:
    """The share of the text's words that are in ``words`` (case-insensitive)."""
    tokens = re.findall(r"[\w']+", text.lower())
    return sum(t in words for t in tokens) / len(tokens) if tokens else 0.0


@runtime_checkable
class TextScorer(Protocol):
    """Turns continuations into one number each (higher: more of what it measures)."""

    def __call__(self, texts: Sequence[str]) -> list[float]: ...


class WordShare:
    """The share of each text's words that are in a word list."""

    def __init__(self, words: frozenset[str]) -> None:
        self.words = words

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [word_share(t, self.words) for t in texts]


def plugin_scorers() -> dict[str, TextScorer]:
    """The text scorers installed plugins add, by name (a class is instantiated with no
    arguments)."""
    out: dict[str, TextScorer] = {}
    for name, obj in plugins("mistudio.steering_scorers").items():
        scorer = obj() if isinstance(obj, type) else obj
        if isinstance(scorer, TextScorer):
            out[name] = scorer
    return out


def plugin_scorer(name: str) -> TextScorer:
    """One plugin's text scorer, or one clear line naming those installed."""
    found = plugin_scorers()
    if name not in found:
        raise NotFoundError(f"No steering scorer named {name!r} is installed.",
                            f"Installed: {', '.join(found) or 'none'}; a package adds one "
                            "through the mistudio.steering_scorers entry point.")
    return found[name]


class Classifier:
    """A local Hugging Face text-classification model, scoring the probability of one label."""

    def __init__(self, path: str, label: str, device: str = "cpu") -> None:
        from mistudio.core.models.hf import HF_IMPORT_LOCK

        with HF_IMPORT_LOCK:
            from transformers import pipeline

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise NotFoundError(f"There is no classifier folder at {path}.",
                                "Give the folder of a Hugging Face text-classification model.")
        try:
            self.pipe = pipeline("text-classification", model=str(folder), top_k=None,
                                 device=device)
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"{path} is not a text-classification model miStudio can "
                                    f"load ({err}).", "Give a Hugging Face folder with a "
                                    "sequence-classification head.") from err
        labels = list(self.pipe.model.config.id2label.values())
        if label not in labels:
            raise InvalidInputError(f"The classifier has no label {label!r}.",
                                    f"Its labels: {', '.join(labels)}.")
        self.label = label

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = self.pipe([t if t.strip() else " " for t in texts], truncation=True)
        return [next(s["score"] for s in row if s["label"] == self.label) for row in out]


def summarize(scorer: str, plain: np.ndarray, steered: np.ndarray, n_boot: int = 1000,
              seed: int = 0) -> ScoreSummary:
    """Means and the bootstrap interval of their difference. ``plain``/``steered``: [prompts,
    samples] scores; prompts are resampled with replacement, their samples kept together."""
    p_mean, s_mean = float(np.nanmean(plain)), float(np.nanmean(steered))
    per_prompt = np.nanmean(steered, axis=1) - np.nanmean(plain, axis=1)  # [prompts]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_prompt), size=(n_boot, len(per_prompt)))
    boots = np.nanmean(per_prompt[idx], axis=1)
    lo, hi = (float(v) for v in np.nanpercentile(boots, [2.5, 97.5]))
    change = s_mean - p_mean
    return ScoreSummary(scorer, p_mean, s_mean, change, lo, hi,
                        change / p_mean if p_mean and math.isfinite(p_mean) else None)
