"""A label explainer and a label scorer.

The explainer names the token a feature peaks on most often, and states it as a rule miStudio
can execute on held-out text (any object with ``matches(token_text, previous_text)``). The
scorer is its own measure: the balanced accuracy of "the marked token is the peak token".
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from mistudio.core.features.explain import Explanation


class PeakToken(NamedTuple):
    token: str

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset({self.token.strip().lower()})

    def matches(self, text: str, previous: str | None) -> bool:
        return text.strip().lower() == self.token.strip().lower()


class PeakTokenExplainer:
    name = "peak-token"

    def explain(self, examples: list[Any], text: Any) -> Explanation | None:
        peaks = Counter(text(int(e.token_ids[e.marked])) for e in examples)
        if not peaks:
            return None
        token, count = peaks.most_common(1)[0]
        return Explanation(f"the token '{token.strip() or token}' ({count} of {len(examples)} "
                           "peaks)", PeakToken(token))


class PeakRecallScorer:
    name = "peak-recall"

    def score(self, exp: Explanation, positives: list[Any], negatives: list[Any],
              text: Any) -> float | None:
        if exp.rule is None or not positives or not negatives:
            return None

        def hit(e: Any) -> bool:
            return exp.rule.matches(text(int(e.token_ids[e.marked])), None)

        tpr = sum(hit(e) for e in positives) / len(positives)
        tnr = sum(not hit(e) for e in negatives) / len(negatives)
        return 0.5 * (tpr + tnr)
