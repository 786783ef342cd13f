"""Families of labels: the best feature of each, for a first look (quick start, lesson).

Eight features scored best overall are often eight variants of one thing (line breaks after
different words). One per family, concept families first (names, quotes, negation, numbers,
code, parts of speech), then single words, then layout and punctuation, shows what an SAE found.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mistudio.core.features.store import FeatureStore

LAST = ("punctuation", "line breaks", "layout", "word pieces", "brackets")
"""Families shown after the others: real, but rarely what a person came to see."""
WORDS = "specific tokens"


class FamilyBest(NamedTuple):
    feature: int
    label: str
    family: str
    score: float
    """Held-out detection balanced accuracy."""
    fuzzing: float | None
    frequency: float
    """Share of analysed tokens it fires on."""


def _tier(family: str) -> int:
    return 2 if family in LAST else 1 if family == WORDS else 0


def best_by_family(store: FeatureStore, n: int = 8) -> list[FamilyBest]:
    """The best-scored label of each family (at most ``n``), concept families first, each tier
    best first."""
    freq = store.column("frequency")
    best: dict[str, FamilyBest] = {}
    labels = store.all_labels()
    for f in store.order(np.array(sorted(labels), dtype=np.int64), "score"):
        lb = labels[int(f)]
        if lb.score is None or lb.status != "ok" or lb.source == "human":
            continue
        fam = lb.family or WORDS
        if fam not in best:
            best[fam] = FamilyBest(int(f), lb.label, fam, float(lb.score), lb.fuzzing,
                                   float(freq[f]))
    ranked = sorted(best.values(), key=lambda b: (_tier(b.family), -b.score,
                                                   -(b.fuzzing or 0.0), b.feature))
    return ranked[:n]
