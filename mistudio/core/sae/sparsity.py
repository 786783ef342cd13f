"""The sparsity coefficient over a run: linear warm-up, and optionally steering towards a target L0.

An L1 (ReLU) or L0 (JumpReLU) penalty sets sparsity only indirectly: the L0 a coefficient gives
depends on the data, the width and the run length. With ``target_l0`` the coefficient is adapted
on a log scale. L0 answers a coefficient change only after the weights have moved, tens of steps
later, so a controller that looks only at the present error keeps pushing while L0 is already on
its way and overshoots (seen on toy data: L0 fell from 60 to 2 and the SAE to zero explained
variance before it recovered). This one steers by the L0 it predicts ``horizon`` steps ahead from
the smoothed trend of log L0 (proportional plus derivative action), with a bounded step, and
starts after the warm-up, when the penalty has reached full strength.
"""

from __future__ import annotations

import math
from typing import Any


class SparsityController:
    """``coefficient(step)`` for the loss; ``observe(step, l0)`` after every step."""

    def __init__(self, base: float, warmup_steps: int, target_l0: float | None = None,
                 gain: float = 0.03, max_change: float = 0.05, horizon: float = 40.0,
                 smoothing: float = 0.9) -> None:
        self.warmup_steps = max(1, warmup_steps)
        self.target_l0 = target_l0
        self.gain, self.max_change, self.horizon = gain, max_change, horizon
        self.smoothing = smoothing
        self.log_coef = math.log(base) if base > 0 else -math.inf
        self.log_l0: float | None = None
        """Smoothed log L0."""
        self.slope = 0.0
        """Smoothed change of log L0 per step."""

    def coefficient(self, step: int) -> float:
        return math.exp(self.log_coef) * min(1.0, (step + 1) / self.warmup_steps)

    def observe(self, step: int, l0: float) -> None:
        if self.target_l0 is None or not math.isfinite(l0) or self.log_coef == -math.inf:
            return
        s, now = self.smoothing, math.log(max(l0, 1e-3))
        if self.log_l0 is None:
            self.log_l0 = now
        else:
            previous = self.log_l0
            self.log_l0 = s * previous + (1 - s) * now
            self.slope = s * self.slope + (1 - s) * (self.log_l0 - previous)
        if step < self.warmup_steps:
            return
        predicted = self.log_l0 + self.horizon * self.slope
        error = predicted - math.log(self.target_l0)  # > 0: will not be sparse enough
        self.log_coef += max(-self.max_change, min(self.max_change, self.gain * error))

    def state_dict(self) -> dict[str, Any]:
        return {"log_coef": self.log_coef, "log_l0": self.log_l0, "slope": self.slope}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_coef = float(state["log_coef"])
        self.log_l0, self.slope = state["log_l0"], float(state["slope"])
