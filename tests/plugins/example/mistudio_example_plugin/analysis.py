"""A feature analysis: how much of a feature's firing falls on its single most common token
(1.0: a token detector; low: a feature of context)."""

from __future__ import annotations

import numpy as np

from mistudio.core.features.plugin_columns import AnalysisContext


class PeakTokenShare:
    def __call__(self, ctx: AnalysisContext) -> dict[str, np.ndarray]:
        share = np.zeros(ctx.d_sae, np.float32)
        token_of_row = np.asarray(ctx.rows[:, 2])
        for f in range(ctx.d_sae):
            rows, values = ctx.firing(f)
            if len(rows):
                tokens = token_of_row[rows]
                _, inverse = np.unique(tokens, return_inverse=True)
                mass = np.bincount(inverse, weights=values)
                share[f] = mass.max() / mass.sum()
        return {"peak_token_share": share}
