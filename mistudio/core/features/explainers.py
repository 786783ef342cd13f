"""Label explainers and scorers behind one interface: the pattern explainer, LLM explainers, and
those of plugins (``mistudio.explainers`` and ``mistudio.label_scorers`` entry points).

An explainer writes a label from a feature's examples (:meth:`Explainer.explain`) and scores
it on held-out contexts (:meth:`Explainer.score`). A plugin explainer only has to explain: it
returns an :class:`~mistudio.core.features.explain.Explanation`, and when that carries a rule
(anything with ``matches(token_text, previous_text) -> bool``) the rule is executed on the
held-out activating contexts and the negatives, as the pattern explainer's is (simulation). A
plugin label scorer replaces that scoring for whichever explainer wrote the label.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from mistudio.core.features.examples import Example, FeatureReader, TokenText
from mistudio.core.features.explain import (
    Explanation,
    explain_pattern,
    negatives_for,
    rule_token_ids,
    simulation_score,
)
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.plugins import plugins


class Context(NamedTuple):
    """What explaining and scoring one analysis's features needs."""

    reader: FeatureReader
    text: TokenText
    logit_ids: np.ndarray
    """[F, k] token ids each feature's decoder direction promotes (logit lens)."""
    negatives: int
    seed: int

    def negatives_for(self, feature: int, trigger_ids: np.ndarray,
                      seed_offset: int = 0) -> list[Example]:
        return negatives_for(self.reader, feature, trigger_ids, self.negatives,
                             self.seed + seed_offset)


class Scored(NamedTuple):
    scorer: str | None
    score: float | None


class Explainer(Protocol):
    name: str
    """The labels' source (pattern, llm:MODEL, plugin:NAME)."""

    def explain(self, feature: int, examples: list[Example], ctx: Context) -> Explanation | None:
        """A label from the examples (None: nothing usable)."""

    def score(self, feature: int, exp: Explanation, examples: list[Example],
              held_out: list[Example], ctx: Context) -> Scored:
        """How well the label predicts held-out contexts."""


class LabelScorer(Protocol):
    """A plugin's scoring: balanced accuracy (0..1) of a label on activating and silent
    contexts, or None when it cannot tell."""

    name: str

    def score(self, exp: Explanation, positives: list[Example], negatives: list[Example],
              text: TokenText) -> float | None: ...


class RuleExplainer:
    """The pattern explainer, and any plugin explainer whose labels come with a rule: the rule
    is executed on held-out activating contexts and on negatives (half of them hard: the rule's
    tokens where the feature stays silent)."""

    def __init__(self, name: str, explain: Any) -> None:
        self.name, self._explain = name, explain

    def explain(self, feature: int, examples: list[Example], ctx: Context) -> Explanation | None:
        return self._explain(feature, examples, ctx)

    def score(self, feature: int, exp: Explanation, examples: list[Example],
              held_out: list[Example], ctx: Context) -> Scored:
        if exp.rule is None or not hasattr(exp.rule, "matches"):
            return Scored(None, None)
        neg = ctx.negatives_for(feature, _trigger_ids(exp, examples, ctx))
        return Scored("simulation", simulation_score(exp.rule, held_out, neg, ctx.text))


def pattern_explanation(feature: int, examples: list[Example], ctx: Context) -> Explanation:
    """The pattern explainer (mistudio.core.features.explain)."""
    def train_negatives(rule: Any) -> Any:
        return ctx.negatives_for(feature, rule_token_ids(rule, examples, ctx.text), 1)

    return explain_pattern(examples, ctx.text, ctx.text.many(ctx.logit_ids[feature]),
                           train_negatives)


class LLMExplainer:
    """A language model writes the label; a judge model scores it by detection."""

    def __init__(self, llm: Any, judge: Any, prompt: str | None) -> None:
        self.llm, self.judge, self.prompt = llm, judge, prompt
        self.name = llm.name

    def explain(self, feature: int, examples: list[Example], ctx: Context) -> Explanation | None:
        from mistudio.core.features.llm import explain_with_llm

        label = explain_with_llm(self.llm, examples, ctx.text, self.prompt)
        return None if label is None else Explanation(label, None)

    def score(self, feature: int, exp: Explanation, examples: list[Example],
              held_out: list[Example], ctx: Context) -> Scored:
        from mistudio.core.features.llm import detection_score

        neg = ctx.negatives_for(feature, _trigger_ids(exp, examples, ctx))
        return Scored(f"detection:{self.judge.name}",
                      detection_score(self.judge, exp.label, held_out, neg, ctx.text))


class PluginScored:
    """Any explainer, its labels scored by a plugin's label scorer instead."""

    def __init__(self, inner: Any, scorer: LabelScorer, scorer_name: str) -> None:
        self.inner, self.scorer, self.scorer_name = inner, scorer, scorer_name
        self.name = inner.name

    def explain(self, feature: int, examples: list[Example], ctx: Context) -> Explanation | None:
        return self.inner.explain(feature, examples, ctx)

    def score(self, feature: int, exp: Explanation, examples: list[Example],
              held_out: list[Example], ctx: Context) -> Scored:
        neg = ctx.negatives_for(feature, _trigger_ids(exp, examples, ctx))
        return Scored(f"plugin:{self.scorer_name}",
                      self.scorer.score(exp, held_out, neg, ctx.text))


def _trigger_ids(exp: Explanation, examples: list[Example], ctx: Context) -> np.ndarray:
    """The tokens that should make the feature fire: the rule's, or those it fired on."""
    if exp.rule is not None and hasattr(exp.rule, "tokens"):
        return rule_token_ids(exp.rule, examples, ctx.text)
    ids = [e.token_ids[e.activations > 0] for e in examples] or [np.zeros(0)]
    return np.unique(np.concatenate(ids)).astype(np.int64)


def plugin_explainers() -> dict[str, Any]:
    return plugins("mistudio.explainers")


def make_explainer(ws: Any, explainer: str, endpoint: str, judge: str | None,
                   prompt: str | None, scorer: str | None) -> Any:
    """The explainer a label run asks for, scored by ``scorer`` when one is named."""
    from mistudio.core.features.llm import EndpointLLM, LocalLLM
    from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model

    kind, _, model = explainer.partition(":")
    if kind == "pattern":
        out: Any = RuleExplainer("pattern", pattern_explanation)
    elif kind == "plugin" or explainer in plugin_explainers():
        name = model if kind == "plugin" else explainer
        found = plugin_explainers().get(name)
        if found is None:
            raise InvalidInputError(f"No explainer plugin named {name!r} is installed.",
                                    f"Installed: {', '.join(plugin_explainers()) or 'none'}.")
        obj = found() if isinstance(found, type) else found
        out = RuleExplainer(f"plugin:{name}", lambda f, ex, ctx: obj.explain(ex, ctx.text))
    else:
        if kind == "endpoint":
            llm: Any = EndpointLLM(endpoint, model)
        else:
            if not model:
                ensure_embedded_model(ws)
            llm = LocalLLM(ws, model or EMBEDDED_NAME)
        out = LLMExplainer(llm, LocalLLM(ws, judge) if judge else llm, prompt)
    return _with_scorer(out, scorer)


def _with_scorer(explainer: Any, scorer: str | None) -> Any:
    if not scorer:
        return explainer
    found = plugins("mistudio.label_scorers").get(scorer)
    if found is None:
        raise InvalidInputError(f"No label scorer plugin named {scorer!r} is installed.",
                                "Leave the scorer empty to score labels the explainer's way.")
    return PluginScored(explainer, found() if isinstance(found, type) else found, scorer)
