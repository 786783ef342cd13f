"""Resampling dead latents (Anthropic, "Towards Monosemanticity", 2023), as an option.

Every ``resample_dead_every`` steps, each dead latent gets a new direction: an input the SAE
reconstructs badly, drawn with probability proportional to its squared reconstruction error.
The decoder row becomes that input's residual direction at the mean norm of the live decoder
rows, the encoder column the same direction at 0.2 x the mean live encoder norm, the encoder bias
zero, and the optimiser's history for those weights is reset so stale momentum does not undo it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mistudio.core.sae.coder import SparseCoder

if TYPE_CHECKING:
    from mistudio.core.sae.optim import SAEOptimizer


@torch.no_grad()
def resample_dead(sae: SparseCoder, opt: SAEOptimizer, dead_F: Tensor, x_BD: Tensor,
                  target_BO: Tensor, seed: int) -> int:
    """Give every dead latent a new direction from high-loss inputs; returns how many."""
    dead_idx = dead_F.nonzero().squeeze(-1)
    n = int(dead_idx.numel())
    if n == 0:
        return 0
    was_training = sae.training
    sae.eval()
    residual_BO = target_BO - sae.reconstruct(x_BD)
    sae.train(was_training)
    weights = residual_BO.pow(2).sum(-1).pow(2)  # loss squared: favour the worst inputs
    if not bool(weights.sum() > 0):
        return 0
    gen = torch.Generator(device="cpu").manual_seed(seed)
    picks = torch.multinomial(weights.cpu().double(), n, replacement=n > len(weights),
                              generator=gen).to(x_BD.device)
    dirs_NO = residual_BO[picks]
    dirs_NO = dirs_NO / dirs_NO.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead_F
    dec_norm = sae.W_dec_FO[alive].norm(dim=-1).mean() if bool(alive.any()) else torch.tensor(0.1)
    enc_norm = sae.W_enc_DF[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(0.1)
    sae.W_dec_FO[dead_idx] = dirs_NO * dec_norm
    if sae.cfg.d_in == sae.cfg.out_dim:
        sae.W_enc_DF[:, dead_idx] = (dirs_NO * enc_norm * 0.2).T
    else:  # a transcoder: the input direction of the worst inputs instead
        x_dirs = x_BD[picks] / x_BD[picks].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        sae.W_enc_DF[:, dead_idx] = (x_dirs * enc_norm * 0.2).T
    sae.b_enc_F[dead_idx] = 0.0
    opt.reset_rows(sae.W_dec_FO, dead_idx, dim=0)
    opt.reset_rows(sae.W_enc_DF, dead_idx, dim=1)
    opt.reset_rows(sae.b_enc_F, dead_idx, dim=0)
    return n
