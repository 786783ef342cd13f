"""JumpReLU SAE: latents pass through only above a learned per-latent threshold, trained with
straight-through estimators and an L0 penalty (Rajamanoharan et al. 2024, Gemma Scope).

f(z) = z * H(z - theta). The step H has no useful gradient, so its derivative with respect to
theta is estimated with a rectangle kernel of width ``bandwidth`` around the threshold.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mistudio.core.sae.coder import SparseCoder
from mistudio.core.sae.config import SAEConfig
from mistudio.core.sae.relu import ghost_grads_loss


def _rect(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_t = -(threshold / bw) * _rect((pre - threshold) / bw) * grad
        return grad_pre, grad_t.sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_t = -(1.0 / bw) * _rect((pre - threshold) / bw) * grad
        return None, grad_t.sum(0), None


class JumpReLUSAE(SparseCoder):
    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.log_threshold_F = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold)))

    @property
    def threshold_F(self) -> Tensor:
        return self.log_threshold_F.exp()

    @torch.no_grad()
    def init_threshold_for_l0(self, x_BD: Tensor, l0: float) -> None:
        """One threshold for all latents, chosen so that ``l0`` latents per token fire on ``x``.

        The threshold's scale depends on the data and the encoder, and the optimiser moves its
        logarithm only about one learning rate per step: starting at a fixed 0.001 (Gemma
        Scope's value for unit-norm inputs), a run of a few hundred steps never becomes sparse.
        """
        pre = self.pre_acts(x_BD[:1024]).flatten()
        n_above = int(min(max(l0, 1.0) * x_BD[:1024].shape[0], pre.numel() - 1))
        t = pre.kthvalue(pre.numel() - n_above).values  # n_above values lie above t
        self.log_threshold_F.fill_(float(torch.log(t.clamp_min(1e-6))))

    def activate(self, pre_BF: Tensor) -> Tensor:
        return _JumpReLU.apply(pre_BF, self.threshold_F, self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        step_BF = _Step.apply(extra["pre"], self.threshold_F, self.cfg.jumprelu_bandwidth)
        return {"l0_penalty": step_BF.sum(-1).mean()}

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        """Ghost gradients, when the trainer asks for them (it passes ``dead_F`` only then)."""
        return ghost_grads_loss(extra["pre"][:, dead_F], self.W_dec_FO[dead_F], residual_BO)

    def extra_tensors(self, scale_in: float = 1.0, scale_out: float = 1.0) -> dict[str, Tensor]:
        return {"threshold": self.threshold_F.clone()}  # in pre-activation units: unscaled

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"threshold": (self.cfg.d_sae,)}

    @torch.no_grad()
    def load_extra(self, tensors: dict[str, Tensor]) -> None:
        self.log_threshold_F.copy_(tensors["threshold"].clamp_min(1e-12).log())
