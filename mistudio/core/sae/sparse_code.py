"""Encode-and-decode through a sparse pattern of latents, with a backward pass that costs what
the pattern holds, not B x F.

Every sparse coder computes its pre-activations ``x W_enc + bias`` densely (the one [B, D] x
[D, F] matmul no method avoids: choosing the active latents needs them all). Once the active
latents are known (TopK's k per token, AuxK's dead ones, ReLU's positive ones once training has
made them sparse), the rest of a training step can run on those positions alone:

- decode: ``sum_f a[b, f] W_dec[f]`` as a sparse CSR [B, F] times W_dec;
- the gradient of each active value, ``g[b] . W_dec[f]``, as a sampled matmul (SDDMM) at the
  pattern instead of the dense ``g W_dec^T``;
- ``dW_dec = A^T g`` and ``dW_enc = x^T G`` as sparse [F, B] products, the pattern sorted by
  latent once for both.

A dense training step is five [B, D, F] matmuls; this one is one, plus work proportional to the
active entries (B * K * D). Measured on 2 CPU cores at B 4096, D 576, F 4608: AuxK's 288 latents
per token went from 225 ms (``embedding_bag`` and its dense-index backward) to about 120 ms.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor


class Pattern(NamedTuple):
    """Which latents are active in each row: CSR indices of a [B, F] matrix."""

    crow_B1: Tensor
    """Row pointers [B + 1]."""
    cols_N: Tensor
    """The latent of each active entry [N], row by row."""
    shape: tuple[int, int]
    """(B, F)."""

    @classmethod
    def from_topk(cls, idx_BK: Tensor, d_sae: int) -> Pattern:
        """K latents per row (their order within a row does not matter)."""
        B, K = idx_BK.shape
        crow = torch.arange(0, B * K + 1, K, device=idx_BK.device)
        return cls(crow, idx_BK.reshape(-1), (B, d_sae))

    @classmethod
    def from_dense(cls, values_BF: Tensor) -> tuple[Pattern, Tensor]:
        """The non-zero entries of a dense [B, F] matrix, and their values [N]."""
        csr = values_BF.to_sparse_csr()
        return cls(csr.crow_indices(), csr.col_indices(), tuple(values_BF.shape)), csr.values()

    def rows_N(self) -> Tensor:
        counts = self.crow_B1[1:] - self.crow_B1[:-1]
        return torch.repeat_interleave(torch.arange(self.shape[0], device=counts.device), counts)

    def csr(self, values_N: Tensor) -> Tensor:
        return _csr(self.crow_B1, self.cols_N, values_N, self.shape)


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch calls sparse CSR "beta" at every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


class _ByLatent(NamedTuple):
    """The pattern transposed: [F, B] CSR indices, and the order that sorts entries by latent."""

    crow_F1: Tensor
    rows_N: Tensor
    order_N: Tensor

    @classmethod
    def of(cls, p: Pattern) -> _ByLatent:
        order = torch.argsort(p.cols_N, stable=True)
        crow = torch.zeros(p.shape[1] + 1, dtype=torch.long, device=p.cols_N.device)
        crow[1:] = torch.bincount(p.cols_N, minlength=p.shape[1]).cumsum(0)
        return cls(crow, p.rows_N()[order], order)

    def times(self, values_N: Tensor, dense_BX: Tensor, shape: tuple[int, int]) -> Tensor:
        """(the [B, F] matrix with these values)^T @ dense: [F, X]."""
        F_, B = shape[1], shape[0]
        return _csr(self.crow_F1, self.rows_N, values_N[self.order_N], (F_, B)) @ dense_BX


class _SparseCode(torch.autograd.Function):
    """decoded = A W_dec and column sums of A, where A [B, F] holds ``values`` at ``pattern``
    and the values are ReLU(x W_enc + bias) there (computed by the caller without gradient).
    Gradients flow to x, W_enc, bias and W_dec through the active entries only."""

    @staticmethod
    def forward(ctx: Any, x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor, W_dec_FO: Tensor,
                pattern: Pattern, values_N: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(x_BD, W_enc_DF, W_dec_FO, values_N)
        ctx.pattern = pattern
        decoded_BO = pattern.csr(values_N) @ W_dec_FO
        colsum_F = torch.zeros(pattern.shape[1], dtype=values_N.dtype, device=values_N.device)
        colsum_F.index_add_(0, pattern.cols_N, values_N)
        return decoded_BO, colsum_F

    @staticmethod
    def backward(ctx: Any, grad_BO: Tensor | None,
                 grad_colsum_F: Tensor | None) -> tuple[Tensor | None, ...]:
        x_BD, W_enc_DF, W_dec_FO, values_N = ctx.saved_tensors
        p: Pattern = ctx.pattern
        grad_values_N = torch.zeros_like(values_N)
        if grad_BO is not None:  # g[b] . W_dec[f] at each active (b, f): a sampled matmul
            grad_BO = grad_BO.contiguous()
            grad_values_N = torch.sparse.sampled_addmm(p.csr(values_N), grad_BO, W_dec_FO.T,
                                                       beta=0.0).values()
        if grad_colsum_F is not None:
            grad_values_N = grad_values_N + grad_colsum_F[p.cols_N]
        grad_pre_N = grad_values_N * (values_N > 0)  # through the ReLU
        by_latent = _ByLatent.of(p)
        need = ctx.needs_input_grad
        grad_x = p.csr(grad_pre_N) @ W_enc_DF.T if need[0] else None
        grad_W_enc = by_latent.times(grad_pre_N, x_BD, p.shape).T if need[1] else None
        grad_bias = None
        if need[2]:
            grad_bias = torch.zeros(p.shape[1], dtype=grad_pre_N.dtype, device=x_BD.device)
            grad_bias.index_add_(0, p.cols_N, grad_pre_N)
        grad_W_dec = None
        if need[3]:
            grad_W_dec = (by_latent.times(values_N, grad_BO, p.shape) if grad_BO is not None
                          else torch.zeros_like(W_dec_FO))
        return grad_x, grad_W_enc, grad_bias, grad_W_dec, None, None


def sparse_code(x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor, W_dec_FO: Tensor,
                pattern: Pattern, values_N: Tensor) -> tuple[Tensor, Tensor]:
    """The decoded [B, O] (without b_dec) and each latent's summed activation [F] of the latents
    in ``pattern`` with ``values_N`` = ReLU(x W_enc + bias) at those positions, differentiable
    in x, W_enc, bias and W_dec."""
    return _SparseCode.apply(x_BD, W_enc_DF, bias_F, W_dec_FO, pattern, values_N.detach())


@torch.no_grad()
def exact_values(pattern: Pattern, x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor) -> Tensor:
    """ReLU(x W_enc + bias) at the pattern's entries [N], in x's precision: a sampled matmul
    (B * K * D), so the dense pre-activations may have been computed in lower precision."""
    dot_N = torch.sparse.sampled_addmm(
        pattern.csr(torch.zeros(len(pattern.cols_N), dtype=x_BD.dtype, device=x_BD.device)),
        x_BD.contiguous(), W_enc_DF, beta=0.0).values()
    return torch.relu(dot_N + bias_F[pattern.cols_N])


def select_preacts(x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor,
                   dtype: torch.dtype | None) -> Tensor:
    """x W_enc + bias for choosing latents, in ``dtype`` when given (values are not used)."""
    if dtype is None or dtype == x_BD.dtype:
        return torch.addmm(bias_F, x_BD, W_enc_DF)
    return torch.addmm(bias_F.to(dtype), x_BD.to(dtype), W_enc_DF.to(dtype))
