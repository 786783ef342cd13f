"""The standard SAE: ReLU latents and an L1 penalty weighted by decoder row norms.

Weighting by ||W_dec_f|| (Anthropic, April 2024 update) stops the model from shrinking latents
and growing decoder rows to dodge the penalty, so the decoder need not be held at unit norm.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mistudio.core.sae.coder import SparseCoder


class ReLUSAE(SparseCoder):
    def activate(self, pre_BF: Tensor) -> Tensor:
        return F.relu(pre_BF)

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        norms_F = self.W_dec_FO.norm(dim=-1)
        # sum_b sum_f f_bf ||W_dec_f|| / B, summed over the batch first (an [F] product, not [B, F])
        latents_BF = extra["latents"]
        return {"l1": (latents_BF.sum(0) * norms_F).sum() / latents_BF.shape[0]}
