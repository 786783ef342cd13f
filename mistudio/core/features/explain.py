"""What every explainer shares: an explanation (a label and the rule behind it, if any) and the
silent examples a plugin label scorer judges a label against.

The explainers themselves are in :mod:`.concept_explainer` (concepts and tokens) and
:mod:`.llm`; :mod:`.explainers` puts them behind one interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.features.examples import Example, FeatureReader


class Explanation(NamedTuple):
    label: str
    rule: Any
    """What the label claims, in a form that can be executed: a
    :class:`~mistudio.core.features.formula.Formula`, a plugin's rule (anything with
    ``matches(token_text, previous_text)``), or None (an LLM's words)."""


def norm(text: str) -> str:
    return text.strip().lower()


def rule_token_ids(rule: Any, examples: list[Example], text: Callable[[int], str]) -> np.ndarray:
    """Token ids, seen in the examples, whose text is one of the rule's ``tokens``."""
    ids = {int(t) for e in examples for t in e.token_ids if norm(text(int(t))) in rule.tokens}
    return np.array(sorted(ids), dtype=np.int64)


def negatives_for(reader: FeatureReader, feature: int, trigger_ids: np.ndarray, n: int,
                  seed: int = 0) -> list[Example]:
    """Half hard negatives (the trigger tokens, silent), the rest random silent tokens."""
    hard = reader.hard_negatives(feature, trigger_ids, n // 2, seed) if len(trigger_ids) else []
    return hard + reader.random_negatives(feature, n - len(hard), seed)
