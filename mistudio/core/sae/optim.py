"""Optimisers for sparse coders: Adam with warm-up and cosine decay, and schedule-free sign-SGD.

Schedule-free SGD (Defazio et al. 2024) keeps two sequences: ``z``, moved by the base step, and
``x``, the running average of ``z`` that is the model to evaluate and save. Gradients are taken
at their interpolation ``y = (1 - beta) z + beta x``, which plays the part of momentum. The
parameters hold ``y`` while training; :meth:`ScheduleFreeSignSGD.eval_mode` swaps in ``x``. With
``sign(g)`` as the base step this is the "signum" EleutherAI's sparsify trains with by default:
every weight moves by exactly ``lr`` per step, so rarely-updated latents are not starved, and
no decay schedule has to be chosen in advance (the average does what the decay would).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor

Optimizer = Literal["adam", "signum"]


class ScheduleFreeSignSGD(torch.optim.Optimizer):
    """Schedule-free sign-SGD. Call :meth:`eval_mode` before evaluating or saving and
    :meth:`train_mode` before the next step (both are idempotent)."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.95,
                 warmup_steps: int = 0, weight_lr_power: float = 2.0) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        defaults = {"lr": lr, "momentum": momentum, "warmup_steps": warmup_steps,
                    "weight_lr_power": weight_lr_power, "step": 0, "weight_sum": 0.0,
                    "train_mode": True}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError("ScheduleFreeSignSGD.step() in eval mode; call train_mode()")
            t = group["step"]
            lr = group["lr"] * min(1.0, (t + 1) / max(1, group["warmup_steps"]))
            # The average weighs step t by lr_t ** power, so the warm-up's small steps count less.
            weight = lr ** group["weight_lr_power"]
            group["weight_sum"] += weight
            c = weight / group["weight_sum"]  # weight of the newest z in the average x
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone()
                z = state["z"]
                direction = p.grad.sign()
                # y_{t+1} = (1 - c) y_t + c z_t + lr (beta (1 - c) - 1) d_t, and z -= lr d_t:
                # the recurrence for y = (1 - beta) z + beta x without storing x.
                p.lerp_(z, c)
                p.add_(direction, alpha=lr * (beta * (1 - c) - 1))
                z.sub_(direction, alpha=lr)
            group["step"] = t + 1
            group["last_lr"] = lr

    @torch.no_grad()
    def eval_mode(self) -> None:
        """Parameters := x = (y - (1 - beta) z) / beta, the averaged iterate."""
        self._swap(to_train=False)

    @torch.no_grad()
    def train_mode(self) -> None:
        """Parameters := y = (1 - beta) z + beta x, where gradients are taken."""
        self._swap(to_train=True)

    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta = group["momentum"]
            for p in group["params"]:
                z = self.state[p].get("z")
                if z is not None:
                    p.lerp_(z, 1 - beta if to_train else 1 - 1 / beta)
            group["train_mode"] = to_train

    @torch.no_grad()
    def reset_rows(self, param: Tensor, idx: Tensor, dim: int) -> None:
        """After weight surgery on ``param`` (training mode), restart those rows: z = y = x."""
        z = self.state.get(param, {}).get("z")
        if z is not None:
            z.index_copy_(dim, idx, param.index_select(dim, idx))


def default_lr(optimizer: Optimizer, d_sae: int, tokens_per_step: int = 2048) -> float:
    """Peak learning rates measured on two datasets (the recipe variants of
    ``benchmarks/peers.py``): the embedded model's layer-15 activations and synthetic rows from a
    known dictionary, 8x TopK SAEs, runs of 200 to 800 steps.

    Adam: 4.2e-3 * sqrt(4608 / d_sae) * sqrt(max(tokens_per_step, 2048) / 2048). At 4,096
    tokens per step (5.9e-3) held-out FVU was 0.138 real / 0.286 synthetic against 0.145 /
    0.353 at the earlier 3e-3, 0.140 / 0.302 at 4.5e-3 and 0.139 / 0.317 at 9e-3 (a third of
    the latents dead); at 2,048 tokens per step 4.2e-3 gave 0.135 / 0.239 (59% of the true
    features recovered) against 0.135 / 0.276 at 6e-3 (4% / 9% dead against 8% / 26%). The
    rates of long GPU runs (2e-4 / sqrt(d_sae / 16384)) are far too slow for runs this short.
    Sign-SGD: sparsify's 5e-3 / sqrt(d_sae / 16384).
    """
    if optimizer == "signum":
        return 5e-3 * math.sqrt(16384 / d_sae)
    # measured at 2,048 and 4,096 tokens per step; smaller batches keep 2,048's rate (short
    # runs on small batches learn too slowly with less)
    return 4.2e-3 * math.sqrt(4608 / d_sae) * math.sqrt(max(tokens_per_step, 2048) / 2048)


def adam_schedule(warmup_steps: int, steps: int, end_fraction: float) -> Any:
    """Linear warm-up, then cosine decay to ``end_fraction`` of the peak."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, steps - warmup_steps)
        return end_fraction + (1 - end_fraction) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class SAEOptimizer:
    """One interface over both optimisers: step, current lr, eval/train swap, state."""

    def __init__(self, kind: Optimizer, params: list[Tensor] | list[dict[str, Any]], lr: float,
                 warmup_steps: int,
                 steps: int, lr_end_fraction: float) -> None:
        """``params``: tensors, or parameter groups (dicts) that may set their own ``lr``."""
        self.kind = kind
        self.sched: torch.optim.lr_scheduler.LambdaLR | None = None
        self.opt: torch.optim.Optimizer
        if kind == "signum":
            self.opt = ScheduleFreeSignSGD(params, lr=lr, warmup_steps=warmup_steps)
        else:
            self.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt, adam_schedule(warmup_steps, steps, lr_end_fraction))

    def step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.sched is not None:
            self.sched.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        if self.sched is not None:
            return float(self.sched.get_last_lr()[0])
        group = self.opt.param_groups[0]
        return float(group.get("last_lr", group["lr"]))

    def eval_mode(self) -> None:
        if isinstance(self.opt, ScheduleFreeSignSGD):
            self.opt.eval_mode()

    def train_mode(self) -> None:
        if isinstance(self.opt, ScheduleFreeSignSGD):
            self.opt.train_mode()

    def reset_rows(self, param: Tensor, idx: Tensor, dim: int) -> None:
        """Forget the optimiser's history for rows of ``param`` that were just rewritten."""
        if isinstance(self.opt, ScheduleFreeSignSGD):
            self.opt.reset_rows(param, idx, dim)
            return
        state = self.opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, idx, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(),
                "sched": self.sched.state_dict() if self.sched is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None and state["sched"] is not None:
            self.sched.load_state_dict(state["sched"])
