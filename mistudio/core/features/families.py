"""Families of labels: the best feature of each, for a first look (quick start, lesson).

Eight features scored best overall are often eight variants of one thing (line breaks after
different words). One per family, concept families first (names, quotes, negation, numbers,
code, parts of speech), then single words, then layout and punctuation, shows what an SAE found.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mistudio.core.features.store import FeatureStore

FIRST = ("names", "negation", "quotes", "numbers", "code keywords", "string literals")
"""Families shown first: the concepts people look for in a model."""
LAST = ("punctuation", "line breaks", "layout", "word pieces", "brackets", "capitalisation")
"""Families shown after the others: real, but rarely what a person came to see."""
WORDS = "specific tokens"
GOOD = 0.7
"""Held-out detection of a label shown among the first (weaker ones follow, whatever family)."""
NEAR_BEST = 0.05
"""Within a family, the simplest label this close to the best one is shown (a student reads
"possessive pronouns" faster than "possessive pronouns, also stop words")."""


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
    return 0 if family in FIRST else 3 if family in LAST else 2 if family == WORDS else 1


def best_by_family(store: FeatureStore, n: int = 8) -> list[FamilyBest]:
    """One label of each family (at most ``n``): the simplest near the family's best score;
    among labels that hold, the families people look for first, then other concepts, single
    words, layout; then those that barely hold."""
    from mistudio.core.features.formula import Formula

    freq = store.column("frequency")
    by_family: dict[str, list[tuple[float, int, int, Any]]] = {}
    for f, lb in store.all_labels().items():
        if lb.score is None or lb.status != "ok" or lb.source == "human":
            continue
        formula = Formula.from_text(lb.formula) if lb.formula else None
        terms = formula.complexity() if formula is not None else 1
        by_family.setdefault(lb.family or WORDS, []).append((float(lb.score), terms, int(f), lb))
    chosen = []
    for fam, items in by_family.items():
        top = max(score for score, *_ in items)
        score, _, f, lb = min((it for it in items if it[0] >= top - NEAR_BEST),
                              key=lambda it: (it[1], -it[0], it[2]))
        chosen.append(FamilyBest(f, lb.label, fam, score, lb.fuzzing, float(freq[f])))
    # labels that hold (detection 0.7 or more) before those that barely do, then by tier
    chosen.sort(key=lambda b: (b.score < GOOD, _tier(b.family), -b.score, -(b.fuzzing or 0.0),
                               b.feature))
    return chosen[:n]
