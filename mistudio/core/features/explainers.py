"""Label explainers behind one interface, all scored the same way: the concept and token
explainers (rules over concepts and tokens), LLM explainers, and those of plugins
(``mistudio.explainers`` and ``mistudio.label_scorers`` entry points).

An explainer writes a label for a feature (:meth:`Explainer.explain`) and scores it on the
feature's held-out windows (:meth:`Explainer.score`) by detection and fuzzing
(:mod:`.contexts`). A rule is executed: a formula (:mod:`.formula`) on the analysis's concept
table, a plugin's rule (anything with ``matches(token_text, previous_text) -> bool``) token by
token. An LLM label is judged by an LLM reading the same windows. A plugin label scorer replaces
that scoring for whichever explainer wrote the label.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from mistudio.core.features.concept_explainer import Case, Space, explain_feature, judge
from mistudio.core.features.contexts import Scores, score_mask
from mistudio.core.features.examples import Example, FeatureReader, TokenText
from mistudio.core.features.explain import Explanation, negatives_for, rule_token_ids
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.plugins import plugins


class Context(NamedTuple):
    """What explaining and scoring one analysis's features needs."""

    reader: FeatureReader
    text: TokenText
    space: Space
    contexts: int
    """Activating and silent windows (each) a label is judged on."""
    seed: int


class Scored(NamedTuple):
    scorer: str | None
    score: float | None
    detection: float | None = None
    fuzzing: float | None = None


class Explainer(Protocol):
    name: str
    """The labels' source (concept, pattern, llm:MODEL, plugin:NAME)."""

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        """A label (None: nothing usable)."""

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        """How well the label predicts the held-out windows."""


def _scored(name: str, s: Scores) -> Scored:
    return Scored(name, s.detection, s.detection, s.fuzzing)


class FormulaExplainer:
    """The concept explainer (``concepts=True``) or the token explainer: rules chosen on the
    explain split (:mod:`.concept_explainer`), executed on the held-out windows."""

    def __init__(self, concepts: bool) -> None:
        self.concepts = concepts
        self.name = "concept" if concepts else "pattern"

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        got = explain_feature(ctx.space, feature, case, self.concepts)
        return None if got is None else Explanation(got[0], got[1])

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        return _scored("rule", judge(ctx.space, exp.rule, case.held_out))


def explain_split_examples(ctx: Context, feature: int) -> list[Example]:
    """Top and quantile examples from the explain split only (the held-out windows stay
    unseen by the explainer)."""
    examples = ctx.reader.top_examples(feature) + ctx.reader.quantile_examples(feature)
    return [e for e in examples if not in_held_out(ctx, e)]


def in_held_out(ctx: Context, e: Example) -> bool:
    """Whether an example's sequence is in the held-out split."""
    win = ctx.space.windows
    return bool(win.held_out[win.window[ctx.reader.sequence_rows(e.sequence)[0]]])


def rule_mask(rule: Any, rows: np.ndarray, ctx: Context) -> np.ndarray:
    """A plugin rule executed token by token on the analysis's rows."""
    tokens = np.asarray(ctx.reader.rows[:, 2])
    same_seq = np.asarray(ctx.reader.rows[:, 0])
    out = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        prev = ctx.text(int(tokens[r - 1])) if r > 0 and same_seq[r - 1] == same_seq[r] else None
        out[i] = bool(rule.matches(ctx.text(int(tokens[r])), prev))
    return out


class PluginExplainer:
    """An installed explainer plugin; its rule (if it gives one) is executed token by token."""

    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.obj = f"plugin:{name}", obj

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        return self.obj.explain(explain_split_examples(ctx, feature), ctx.text)

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        if exp.rule is None or not hasattr(exp.rule, "matches"):
            return Scored(None, None)
        h = case.held_out
        return _scored("rule", score_mask(h, rule_mask(exp.rule, h.pos_rows, ctx),
                                          rule_mask(exp.rule, h.neg_rows, ctx)))


class LLMExplainer:
    """A language model writes the label from explain-split examples; a judge model reads the
    held-out windows (detection and fuzzing prompts, :mod:`.llm`)."""

    def __init__(self, llm: Any, judge_llm: Any, prompt: str | None) -> None:
        self.llm, self.judge, self.prompt = llm, judge_llm, prompt
        self.name = llm.name

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        from mistudio.core.features.llm import explain_with_llm

        label = explain_with_llm(self.llm, explain_split_examples(ctx, feature), ctx.text,
                                 self.prompt)
        return None if label is None else Explanation(label, None)

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        from mistudio.core.features.llm import judge_windows

        s = judge_windows(self.judge, exp.label, case.held_out, ctx.reader, ctx.text)
        return _scored(f"judge:{self.judge.name}", s)


class HumanLabels:
    """A person's labels, scored as an LLM's are: a judge model reads the held-out windows.
    The words are never changed."""

    name = "human"

    def __init__(self, judge_llm: Any) -> None:
        self.judge = judge_llm
        self._store: Any = None

    def words(self, feature: int, ctx: Context) -> str | None:
        from mistudio.core.features.store import FeatureStore

        if self._store is None or self._store.folder != ctx.reader.folder:
            self._store = FeatureStore(ctx.reader.folder)  # opened once per run
        lb = self._store.label(feature)
        return lb.label if lb is not None and lb.source == "human" else None

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        words = self.words(feature, ctx)
        return None if words is None else Explanation(words, None)

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        from mistudio.core.features.llm import judge_windows

        s = judge_windows(self.judge, exp.label, case.held_out, ctx.reader, ctx.text)
        return _scored(f"judge:{self.judge.name}", s)


class PluginScored:
    """Any explainer, its labels scored by a plugin's label scorer instead (on held-out
    activating examples and silent ones, half of them hard)."""

    def __init__(self, inner: Any, scorer: Any, scorer_name: str) -> None:
        self.inner, self.scorer, self.scorer_name = inner, scorer, scorer_name
        self.name = inner.name

    def explain(self, feature: int, case: Case, ctx: Context) -> Explanation | None:
        return self.inner.explain(feature, case, ctx)

    def score(self, feature: int, exp: Explanation, case: Case, ctx: Context) -> Scored:
        examples = ctx.reader.top_examples(feature) + ctx.reader.quantile_examples(feature)
        positives = [e for e in examples if in_held_out(ctx, e)]
        ids = rule_token_ids(exp.rule, examples, ctx.text) if hasattr(exp.rule, "tokens") \
            else np.unique(np.concatenate([e.token_ids[e.activations > 0] for e in examples]
                                          or [np.zeros(0)])).astype(np.int64)
        neg = negatives_for(ctx.reader, feature, ids, ctx.contexts, ctx.seed)
        return Scored(f"plugin:{self.scorer_name}",
                      self.scorer.score(exp, positives, neg, ctx.text))


def plugin_explainers() -> dict[str, Any]:
    return plugins("mistudio.explainers")


def make_explainer(ws: Any, explainer: str, endpoint: str, judge_model: str | None,
                   prompt: str | None, scorer: str | None) -> Any:
    """The explainer a label run asks for, scored by ``scorer`` when one is named."""
    from mistudio.core.features.llm import EndpointLLM, LocalLLM

    kind, _, model = explainer.partition(":")
    if kind in ("concept", "pattern"):
        out: Any = FormulaExplainer(kind == "concept")
    elif kind == "human":
        out = HumanLabels(judge_model_of(ws, judge_model, endpoint))
    elif kind == "plugin" or explainer in plugin_explainers():
        name = model if kind == "plugin" else explainer
        found = plugin_explainers().get(name)
        if found is None:
            raise InvalidInputError(f"No explainer plugin named {name!r} is installed.",
                                    f"Installed: {', '.join(plugin_explainers()) or 'none'}.")
        out = PluginExplainer(name, found() if isinstance(found, type) else found)
    else:
        llm: Any = EndpointLLM(endpoint, model) if kind == "endpoint" else LocalLLM(ws, model)
        out = LLMExplainer(llm, judge_model_of(ws, judge_model, endpoint) if judge_model
                           else llm, prompt)
    return with_scorer(out, scorer)


def judge_model_of(ws: Any, judge: str | None, endpoint: str) -> Any:
    """The judge: ``endpoint:MODEL`` (a local server) or a workspace model's name."""
    from mistudio.core.features.llm import EndpointLLM, LocalLLM

    if not judge:
        raise InvalidInputError("Scoring a person's labels needs a judge model.",
                                "Give «judge=MODEL»: a workspace model of 1B parameters or more, "
                                "or endpoint:MODEL for a local server.")
    kind, _, model = judge.partition(":")
    return EndpointLLM(endpoint, model) if kind == "endpoint" else LocalLLM(ws, judge)


def with_scorer(explainer: Any, scorer: str | None) -> Any:
    if not scorer:
        return explainer
    found = plugins("mistudio.label_scorers").get(scorer)
    if found is None:
        raise InvalidInputError(f"No label scorer plugin named {scorer!r} is installed.",
                                "Leave the scorer empty to score labels the explainer's way.")
    return PluginScored(explainer, found() if isinstance(found, type) else found, scorer)
