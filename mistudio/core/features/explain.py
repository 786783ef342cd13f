"""Automatic descriptions without a language model: the pattern explainer and its scorer.

The pattern explainer reads what a feature's examples share: the tokens it fires on (and how
often each), the token just before them, and, when no token pattern exists, what its decoder
direction promotes (logit lens). It writes a short label such as ``"class" (keyword), mostly
after " a"`` together with the rule behind it, so the rule can be checked on held-out contexts:
the simulation scorer predicts "fires" where the rule matches and reports balanced accuracy on
held-out activating contexts, random silent tokens and hard negatives (the same tokens where the
feature stays silent). It is instant on a CPU and the default where no capable LLM is set up.

Examples are split in two: even-ranked top examples and the first sample of every quantile band
write the label; the others, with the negatives, score it.
"""

from __future__ import annotations

import keyword
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from mistudio.core.features.examples import Example, FeatureReader

MIN_COVERAGE = 0.3
"""A token pattern must cover at least this share of the activating tokens."""
MAX_TOKENS = 4


class Rule(NamedTuple):
    """What a pattern label claims: the feature fires on these tokens (after these tokens)."""

    tokens: frozenset[str]
    """Normalised token texts the feature fires on (empty: any token)."""
    after: frozenset[str]
    """Normalised texts of the token before (empty: any)."""

    def matches(self, text: str, previous: str | None) -> bool:
        if self.tokens and norm(text) not in self.tokens:
            return False
        return not self.after or (previous is not None and norm(previous) in self.after)


class Explanation(NamedTuple):
    label: str
    rule: Rule | None
    """None when the explainer found nothing it could state (the label then says so)."""


def norm(text: str) -> str:
    return text.strip().lower()


def split_examples(reader: FeatureReader, feature: int) -> tuple[list[Example], list[Example]]:
    """(examples to explain from, held-out activating examples to score on)."""
    top = reader.top_examples(feature)
    quant = reader.quantile_examples(feature)
    explain = top[0::2] + [e for i, e in enumerate(quant) if i % 2 == 0]
    held_out = top[1::2] + [e for i, e in enumerate(quant) if i % 2 == 1]
    return explain, held_out


def _kind(text: str) -> str:
    t = text.strip()
    if "⏎" in text or "\n" in text:
        return " (newline)"
    if not t:
        return " (whitespace)"
    if keyword.iskeyword(t) or t in ("self", "None", "True", "False"):
        return " (keyword)"
    if t.isdigit():
        return " (number)"
    if all(not c.isalnum() for c in t):
        return " (punctuation)"
    return ""


def _show(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _top_covering(counts: Counter[str], n: int, share: float) -> list[str]:
    """The most common items until they cover ``share`` of ``n`` (at most MAX_TOKENS)."""
    chosen, covered = [], 0
    for item, c in counts.most_common(MAX_TOKENS):
        if c < 2 and chosen:
            break
        chosen.append(item)
        covered += c
        if covered >= share * n:
            break
    return chosen


def explain_pattern(examples: list[Example], text: Callable[[int], str], logit_tokens: list[str],
                    negatives: Callable[[Rule], list[Example]] | None = None) -> Explanation:
    """A label and its rule from a feature's examples (see the module docstring).

    Candidate rules (the firing tokens; those tokens after their usual predecessors; any token
    after them) are compared by balanced accuracy on the examples and on ``negatives(rule)``
    (silent contexts, drawn apart from the ones the label is later scored on); the best wins,
    the simplest on ties.
    """
    firing: Counter[str] = Counter()
    shown: dict[str, str] = {}
    before: Counter[str] = Counter()
    n = 0
    for e in examples:
        if e.activation <= 0:
            continue
        for i in np.flatnonzero(e.activations >= 0.5 * e.activation):
            t = text(int(e.token_ids[i]))
            firing[norm(t)] += 1
            shown.setdefault(norm(t), t.strip() or t)
            if i > 0:
                p = text(int(e.token_ids[i - 1]))
                before[norm(p)] += 1
                shown.setdefault(norm(p), p.strip() or p)
            n += 1
    if n == 0:
        return Explanation("no activating examples", None)
    tokens = _top_covering(firing, n, 0.6)
    afters = _top_covering(before, n, 0.5)
    covered = sum(firing[t] for t in tokens)
    after_covered = sum(before[t] for t in afters)
    candidates: list[Rule] = []
    if covered >= MIN_COVERAGE * n:
        candidates.append(Rule(frozenset(tokens), frozenset()))
        if after_covered >= 0.5 * n:
            candidates.append(Rule(frozenset(tokens), frozenset(afters)))
    if after_covered >= 0.5 * n:
        candidates.append(Rule(frozenset(), frozenset(afters)))
    if not candidates:
        promoted = ", ".join(_show(t.strip()) for t in logit_tokens[:3] if t.strip())
        if promoted:
            return Explanation(f"varied tokens; promotes {promoted}", None)
        return Explanation("no clear pattern", None)
    rule = candidates[0]
    if negatives is not None and len(candidates) > 1:
        scored = [(simulation_score(r, examples, negatives(r), text) or 0.0, -i, r)
                  for i, r in enumerate(candidates)]
        rule = max(scored, key=lambda s: (s[0], s[1]))[2]
    return Explanation(_describe(rule, tokens, shown, before, n), rule)


def _describe(rule: Rule, tokens: list[str], shown: dict[str, str], before: Counter[str],
              n: int) -> str:
    # ties broken by the text: a frozenset's order changes with each process's hash seed
    after = " / ".join(_show(shown.get(t, t)) for t in sorted(rule.after,
                                                             key=lambda t: (-before[t], t)))
    if not rule.tokens:
        return f"tokens after {after}"
    label = " / ".join(_show(shown[t]) for t in tokens)
    if len(tokens) == 1:
        label += _kind(shown[tokens[0]])
    if rule.after:
        return f"{label} after {after}"
    top_after, count = before.most_common(1)[0] if before else ("", 0)
    if count >= 0.4 * n:
        label += f", mostly after {_show(shown.get(top_after, top_after))}"
    return label


def simulation_score(rule: Rule, positives: list[Example], negatives: list[Example],
                     text: Callable[[int], str]) -> float | None:
    """Balanced accuracy of the rule's fire / silent prediction on each example's marked token."""
    def predict(e: Example) -> bool:
        prev = text(int(e.token_ids[e.marked - 1])) if e.marked > 0 else None
        return rule.matches(text(int(e.token_ids[e.marked])), prev)

    if not positives or not negatives:
        return None
    tpr = sum(predict(e) for e in positives) / len(positives)
    tnr = sum(not predict(e) for e in negatives) / len(negatives)
    return 0.5 * (tpr + tnr)


def rule_token_ids(rule: Rule, examples: list[Example], text: Callable[[int], str]) -> np.ndarray:
    """Token ids, seen in the examples, whose text is one of the rule's tokens."""
    ids = {int(t) for e in examples for t in e.token_ids if norm(text(int(t))) in rule.tokens}
    return np.array(sorted(ids), dtype=np.int64)


def negatives_for(reader: FeatureReader, feature: int, trigger_ids: np.ndarray, n: int,
                  seed: int = 0) -> list[Example]:
    """Half hard negatives (the trigger tokens, silent), the rest random silent tokens."""
    hard = reader.hard_negatives(feature, trigger_ids, n // 2, seed) if len(trigger_ids) else []
    return hard + reader.random_negatives(feature, n - len(hard), seed)
