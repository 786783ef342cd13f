"""A steering scorer: the share of a text's letters that are capitals."""

from __future__ import annotations

from collections.abc import Sequence


class CapitalShare:
    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for t in texts:
            letters = [c for c in t if c.isalpha()]
            out.append(sum(c.isupper() for c in letters) / len(letters) if letters else 0.0)
        return out
