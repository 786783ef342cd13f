"""TopK and BatchTopK SAEs, with the AuxK loss on dead latents.

TopK keeps the k largest pre-activations of each token (OpenAI, Gao et al. 2024). Only the
encoder's matmul is dense: the decoder reads k rows per token through ``embedding_bag``, whose
backward touches only those rows' gradients.

BatchTopK keeps the k * B largest over the whole batch, so the number of active latents varies
per token. It tracks the smallest kept activation as a running threshold and becomes a JumpReLU
with that threshold for inference (Bussmann et al. 2024).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mistudio.core.sae.coder import Encoded, SparseCoder, topk_sparse
from mistudio.core.sae.config import SAEConfig
from mistudio.core.sae.sparse_code import Pattern, exact_values, select_preacts, sparse_code


def sparse_decode(idx_BK: Tensor, vals_BK: Tensor, W_dec_FO: Tensor) -> Tensor:
    """sum_k vals[b, k] * W_dec[idx[b, k]]: [B, O] without a dense [B, F] matrix."""
    return F.embedding_bag(idx_BK, W_dec_FO, per_sample_weights=vals_BK, mode="sum")


class _GatherEncode(torch.autograd.Function):
    """Pre-activations of chosen latents, gathered from a dense no-grad matmul, whose backward
    is sparse: with G the [B, F] gradient holding K non-zeros per row, dW_enc = x^T G and
    dx = G W_enc^T cost B * K * D instead of the dense B * F * D."""

    @staticmethod
    def forward(ctx: Any, x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor,
                pre_BF: Tensor, idx_BK: Tensor) -> Tensor:
        ctx.save_for_backward(x_BD, W_enc_DF, idx_BK)
        ctx.d_sae = W_enc_DF.shape[1]
        return pre_BF.gather(-1, idx_BK)

    @staticmethod
    def backward(ctx: Any, grad_BK: Tensor) -> tuple[Tensor | None, ...]:
        x_BD, W_enc_DF, idx_BK = ctx.saved_tensors
        B, K = idx_BK.shape
        F_, dev = ctx.d_sae, idx_BK.device
        cols = idx_BK.reshape(-1)
        g = grad_BK.reshape(-1).to(x_BD.dtype)
        grad_x = grad_W = None
        with warnings.catch_warnings():  # torch calls sparse CSR "beta" at every construction
            warnings.simplefilter("ignore", UserWarning)
            if ctx.needs_input_grad[0]:  # G [B, F] in CSR: K entries per row
                G_BF = torch.sparse_csr_tensor(torch.arange(0, B * K + 1, K, device=dev), cols, g,
                                               (B, F_), check_invariants=False)
                grad_x = G_BF @ W_enc_DF.T.contiguous()
            if ctx.needs_input_grad[1]:  # G^T [F, B] in CSR: entries sorted by latent
                order = torch.argsort(cols, stable=True)
                crow = torch.zeros(F_ + 1, dtype=torch.long, device=dev)
                crow[1:] = torch.bincount(cols, minlength=F_).cumsum(0)
                rows = torch.arange(B, device=dev).repeat_interleave(K)
                G_FB = torch.sparse_csr_tensor(crow, rows[order], g[order], (F_, B),
                                               check_invariants=False)
                grad_W = (G_FB @ x_BD).T
        grad_b = torch.zeros(F_, dtype=g.dtype, device=dev).index_add_(0, cols, g)
        return grad_x, grad_W, grad_b, None, None


def sparse_encode(x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor,
                  pre_BF: Tensor, idx_BK: Tensor) -> Tensor:
    """Differentiable pre-activations [B, K] of the latents ``idx_BK`` (``pre_BF`` = x W + bias,
    computed without gradient)."""
    return _GatherEncode.apply(x_BD, W_enc_DF, bias_F, pre_BF, idx_BK)


class TopKSAE(SparseCoder):
    handles_precision = True

    def activate(self, pre_BF: Tensor) -> Tensor:
        vals_BK, idx_BK = topk_sparse(pre_BF, self.cfg.k)
        return torch.zeros_like(pre_BF).scatter_(-1, idx_BK, vals_BK)

    def encode_decode(self, x_BD: Tensor, want_l0: bool = True) -> Encoded:
        """Dense matmul only to choose the top k (no gradient); everything else is sparse.

        On the CPU the choice may be made in ``select_dtype`` (bfloat16 where the CPU has it:
        half the time of the one dense matmul); the chosen latents' values are then computed
        exactly in float32, so only near-ties at the k-th place can differ.
        """
        bias_F = self.encoder_bias()
        if x_BD.device.type != "cpu":
            return self._encode_decode_gather(x_BD, bias_F)
        with torch.no_grad():
            pre_BF = select_preacts(x_BD, self.W_enc_DF, bias_F, self.select_dtype)
            idx_BK = pre_BF.topk(self.cfg.k, dim=-1, sorted=False).indices
        enc = self.encode_pattern(x_BD, bias_F, Pattern.from_topk(idx_BK, self.cfg.d_sae))
        enc.extra["pre"] = pre_BF  # AuxK chooses its dead latents from it
        return enc

    def _encode_decode_gather(self, x_BD: Tensor, bias_F: Tensor) -> Encoded:
        """GPUs: gather from the pre-activations, decode with ``embedding_bag``, all under
        autocast in ``select_dtype``."""
        dtype = self.select_dtype
        with torch.autocast(x_BD.device.type, dtype=dtype, enabled=dtype is not None):
            with torch.no_grad():
                pre_BF = torch.addmm(bias_F, x_BD, self.W_enc_DF)  # [B, F]
                idx_BK = pre_BF.topk(self.cfg.k, dim=-1, sorted=False).indices
            vals_BK = F.relu(sparse_encode(x_BD, self.W_enc_DF, bias_F, pre_BF, idx_BK))
            decoded_BO = sparse_decode(idx_BK, vals_BK, self.W_dec_FO) + self.b_dec_O
        active_BK = vals_BK > 0
        fires_F = torch.bincount(idx_BK[active_BK], minlength=self.cfg.d_sae).float()
        return Encoded(decoded_BO, fires_F, active_BK.sum(-1).float().mean(),
                       {"pre": pre_BF, "x": x_BD, "bias": bias_F})

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        """AuxK: the top k_aux dead latents reconstruct the residual, normalised by its variance.

        k_aux = d_in / 2 (OpenAI's recipe); the trainer weights this term by 1/32. The top k_aux
        is taken among the dead latents' columns alone (a few percent of them, usually).
        """
        k_aux = min(self.cfg.d_in // 2, int(dead_F.sum()))
        if k_aux == 0:
            return None
        dead_idx = dead_F.nonzero().squeeze(1)
        with torch.no_grad():
            local_BK = extra["pre"].index_select(1, dead_idx).topk(k_aux, dim=-1,
                                                                   sorted=False).indices
            idx_BK = dead_idx[local_BK]
        if "x" in extra and residual_BO.device.type == "cpu":  # the CSR step, exact values
            pattern = Pattern.from_topk(idx_BK, self.cfg.d_sae)
            values_N = exact_values(pattern, extra["x"], self.W_enc_DF, extra["bias"])
            recon_BO, _ = sparse_code(extra["x"], self.W_enc_DF, extra["bias"], self.W_dec_FO,
                                      pattern, values_N)  # the residual has no b_dec
        elif "x" in extra:  # GPUs: differentiable values of the chosen latents only
            dtype = self.select_dtype
            with torch.autocast(residual_BO.device.type, dtype=dtype, enabled=dtype is not None):
                vals_BK = F.relu(sparse_encode(extra["x"], self.W_enc_DF, extra["bias"],
                                               extra["pre"], idx_BK))
                recon_BO = sparse_decode(idx_BK, vals_BK, self.W_dec_FO).float()
        else:  # a dense forward (BatchTopK): pre-activations carry the gradient
            recon_BO = sparse_decode(idx_BK, F.relu(extra["pre"].gather(-1, idx_BK)),
                                     self.W_dec_FO)
        variance = (residual_BO - residual_BO.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
        return (recon_BO - residual_BO).pow(2).sum(-1).mean() / variance


class BatchTopKSAE(SparseCoder):
    threshold: Tensor

    def __init__(self, cfg: SAEConfig, threshold_momentum: float = 0.99) -> None:
        super().__init__(cfg)
        self.momentum = threshold_momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def activate(self, pre_BF: Tensor) -> Tensor:
        """Inference: a JumpReLU with the learned global threshold."""
        relu_BF = F.relu(pre_BF)
        if self.training or self.threshold < 0:
            return self._batch_topk(relu_BF)
        return relu_BF * (relu_BF > self.threshold)

    def _batch_topk(self, relu_BF: Tensor) -> Tensor:
        n_keep = min(self.cfg.k * relu_BF.shape[0], relu_BF.numel())
        flat = relu_BF.flatten()
        vals, idx = flat.topk(n_keep, sorted=False)
        out = torch.zeros_like(flat).scatter_(0, idx, vals).view_as(relu_BF)
        if self.training:
            with torch.no_grad():
                kept = vals[vals > 0]
                if kept.numel():
                    low = kept.min()
                    t = self.threshold
                    self.threshold.copy_(low if t < 0 else self.momentum * t + (1 - self.momentum) * low)
        return out

    def extra_tensors(self, scale_in: float = 1.0, scale_out: float = 1.0) -> dict[str, Tensor]:
        """Saved as a JumpReLU: one threshold for every latent."""
        return {"threshold": torch.full((self.cfg.d_sae,), float(self.threshold.clamp_min(0)))}

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        return TopKSAE.aux_loss(self, residual_BO, extra, dead_F)  # type: ignore[arg-type]
