"""The sparsity coefficient over a run: linear warm-up, and optionally steering towards a target L0.

An L1 (ReLU) or L0 (JumpReLU) penalty sets sparsity only indirectly: the L0 a coefficient gives
depends on the data, the width and the run length. With ``target_l0`` the coefficient is adapted
by an integral controller on its logarithm. L0 answers a coefficient change only after the
weights have moved, tens of steps later, so a fast controller overshoots and oscillates (seen
on toy data with a plain multiplicative rule). This one is slow on purpose: the error is
smoothed, the step is small and bounded, and the adaptation starts after the warm-up, when the
penalty has reached full strength.
"""

from __future__ import annotations

import math
from typing import Any


class SparsityController:
    """``coefficient(step)`` for the loss; ``observe(step, l0)`` after every step."""

    def __init__(self, base: float, warmup_steps: int, target_l0: float | None = None,
                 gain: float = 0.02, max_change: float = 0.02, smoothing: float = 0.8) -> None:
        self.warmup_steps = max(1, warmup_steps)
        self.target_l0 = target_l0
        self.gain, self.max_change, self.smoothing = gain, max_change, smoothing
        self.log_coef = math.log(base) if base > 0 else -math.inf
        self.smoothed_l0: float | None = None

    def coefficient(self, step: int) -> float:
        return math.exp(self.log_coef) * min(1.0, (step + 1) / self.warmup_steps)

    def observe(self, step: int, l0: float) -> None:
        if self.target_l0 is None or not math.isfinite(l0) or self.log_coef == -math.inf:
            return
        s = self.smoothing
        self.smoothed_l0 = l0 if self.smoothed_l0 is None else s * self.smoothed_l0 + (1 - s) * l0
        if step < self.warmup_steps:
            return
        error = math.log(max(self.smoothed_l0, 1e-3) / self.target_l0)  # > 0: not sparse enough
        self.log_coef += max(-self.max_change, min(self.max_change, self.gain * error))

    def state_dict(self) -> dict[str, Any]:
        return {"log_coef": self.log_coef, "smoothed_l0": self.smoothed_l0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_coef = float(state["log_coef"])
        self.smoothed_l0 = state["smoothed_l0"]
