"""The standard SAE: ReLU latents and an L1 penalty weighted by decoder row norms.

Weighting by ||W_dec_f|| (Anthropic, April 2024 update) stops the model from shrinking latents
and growing decoder rows to dodge the penalty, so the decoder need not be held at unit norm.
Dead latents can be trained with ghost gradients (:func:`ghost_grads_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mistudio.core.sae.coder import Encoded, SparseCoder
from mistudio.core.sae.sparse_code import Pattern, select_preacts

SPARSE_BELOW = 0.08
"""Latent density under which a ReLU training step runs sparsely (measured crossover on two CPU
cores, B 4096, D 576, F 4608: 2% active 277 vs 687 ms dense, 10% 524 vs 682, 20% 865 vs 684)."""


def ghost_grads_loss(pre_BN: Tensor, W_dec_NO: Tensor, residual_BO: Tensor) -> Tensor:
    """Ghost gradients (Anthropic, "Circuits Updates", January 2024), given the dead latents'
    pre-activations [B, N] and decoder rows [N, O].

    Dead latents get exp(pre-activation), a positive activation with a gradient everywhere;
    their decoded sum is scaled to half the residual's norm and trained to explain the residual
    error. The term is rescaled per token to the size of the main MSE, so it steers dead
    latents without competing with the reconstruction of live ones.
    """
    ghost_BO = torch.exp(pre_BN.float()) @ W_dec_NO
    with torch.no_grad():
        scale_B = residual_BO.norm(dim=-1) / (2 * ghost_BO.norm(dim=-1) + 1e-6)
    ghost_BO = ghost_BO * scale_B[:, None]
    ghost_mse_B = (ghost_BO - residual_BO).pow(2).mean(-1)
    with torch.no_grad():
        weight_B = residual_BO.pow(2).mean(-1) / (ghost_mse_B + 1e-6)
    return (weight_B * ghost_mse_B).mean()


class ReLUSAE(SparseCoder):
    """Dense while many latents are active (early in training); on the CPU, once fewer than
    :data:`SPARSE_BELOW` of them are, a step decodes and back-propagates through the active
    entries alone (:mod:`mistudio.core.sae.sparse_code`), which is most of a run."""

    handles_precision = True
    density = 1.0
    """Share of latents active in the last training batch: picks the next step's path."""

    def activate(self, pre_BF: Tensor) -> Tensor:
        return F.relu(pre_BF)

    def encode_decode(self, x_BD: Tensor, want_l0: bool = True) -> Encoded:
        dtype = self.select_dtype
        if x_BD.device.type != "cpu" or self.density >= SPARSE_BELOW:
            with torch.autocast(x_BD.device.type, dtype=dtype, enabled=dtype is not None):
                enc = super().encode_decode(x_BD, True)
            self.density = float(enc.l0) / self.cfg.d_sae
            return enc
        bias_F = self.encoder_bias()
        with torch.no_grad():
            pre_BF = select_preacts(x_BD, self.W_enc_DF, bias_F, dtype)
            pattern, _ = Pattern.from_dense(F.relu(pre_BF))
        enc = self.encode_pattern(x_BD, bias_F, pattern)
        self.density = float(enc.l0) / self.cfg.d_sae
        return enc

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        norms_F = self.W_dec_FO.norm(dim=-1)
        # sum_b sum_f f_bf ||W_dec_f|| / B, summed over the batch first (an [F] product, not [B, F])
        if "colsum" in extra:
            colsum_F, batch = extra["colsum"], extra["x"].shape[0]
        else:
            colsum_F, batch = extra["latents"].sum(0, dtype=torch.float32), extra["latents"].shape[0]
        return {"l1": (colsum_F * norms_F).sum() / batch}

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        if "pre" in extra:
            pre_BN = extra["pre"][:, dead_F]
        else:  # the sparse step kept no dense pre-activations: the dead latents' alone
            pre_BN = torch.addmm(extra["bias"][dead_F], extra["x"], self.W_enc_DF[:, dead_F])
        return ghost_grads_loss(pre_BN, self.W_dec_FO[dead_F], residual_BO)
