"""The standard SAE: ReLU latents and an L1 penalty weighted by decoder row norms.

Weighting by ||W_dec_f|| (Anthropic, April 2024 update) stops the model from shrinking latents
and growing decoder rows to dodge the penalty, so the decoder need not be held at unit norm.
Dead latents can be trained with ghost gradients (:func:`ghost_grads_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mistudio.core.sae.coder import SparseCoder


def ghost_grads_loss(pre_BF: Tensor, W_dec_FO: Tensor, residual_BO: Tensor,
                     dead_F: Tensor) -> Tensor:
    """Ghost gradients (Anthropic, "Circuits Updates", January 2024).

    Dead latents get exp(pre-activation), a positive activation with a gradient everywhere;
    their decoded sum is scaled to half the residual's norm and trained to explain the residual
    error. The term is rescaled per token to the size of the main MSE, so it steers dead
    latents without competing with the reconstruction of live ones.
    """
    ghost_BO = torch.exp(pre_BF[:, dead_F]) @ W_dec_FO[dead_F]  # [B, n_dead] x [n_dead, O]
    with torch.no_grad():
        scale_B = residual_BO.norm(dim=-1) / (2 * ghost_BO.norm(dim=-1) + 1e-6)
    ghost_BO = ghost_BO * scale_B[:, None]
    ghost_mse_B = (ghost_BO - residual_BO).pow(2).mean(-1)
    with torch.no_grad():
        weight_B = residual_BO.pow(2).mean(-1) / (ghost_mse_B + 1e-6)
    return (weight_B * ghost_mse_B).mean()


class ReLUSAE(SparseCoder):
    def activate(self, pre_BF: Tensor) -> Tensor:
        return F.relu(pre_BF)

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        norms_F = self.W_dec_FO.norm(dim=-1)
        # sum_b sum_f f_bf ||W_dec_f|| / B, summed over the batch first (an [F] product, not [B, F])
        latents_BF = extra["latents"]
        return {"l1": (latents_BF.sum(0) * norms_F).sum() / latents_BF.shape[0]}

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        return ghost_grads_loss(extra["pre"], self.W_dec_FO, residual_BO, dead_F)
