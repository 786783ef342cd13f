"""The shared body of every sparse coder: weights, skip connection, decode, save and load.

Shapes use suffixes: D = d_in, F = d_sae (latents), O = d_out (= D except for transcoders),
B = batch, K = active latents per token. Weights follow the SAELens layout:
``W_enc_DF``, ``b_enc_F``, ``W_dec_FO``, ``b_dec_O`` (and ``W_skip_DO`` / ``skip_alpha``).

A subclass chooses the activation function (:meth:`encode`) and its sparsity loss
(:meth:`sparsity_loss`); everything else is here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mistudio.core.sae.config import SAEConfig
from mistudio.core.sae.sparse_code import Pattern, exact_values, sparse_code


class ForwardOutput(NamedTuple):
    """What one training forward pass returns."""

    x_hat: Tensor
    """Reconstruction [B, O], skip connection included."""
    losses: dict[str, Tensor]
    """Unweighted loss terms (scalars): ``mse`` and the architecture's ``l1``, ``l0_penalty`` or
    ``aux`` (which the trainer weighs), or terms of its own (added as they are)."""
    fires_F: Tensor
    """On how many tokens of the batch each latent was active (float counts [F]): the
    per-token firing density the dashboard plots, and > 0 = fired (dead-latent tracking)."""
    l0: Tensor
    """Mean number of active latents per token (scalar)."""


class Encoded(NamedTuple):
    """An architecture's encode-and-decode for training, before the skip connection."""

    decoded_BO: Tensor
    fires_F: Tensor
    """Tokens on which each latent was active (float counts [F])."""
    l0: Tensor
    extra: dict[str, Tensor]
    """Whatever its losses need (pre-activations, latents, indices)."""


class SparseCoder(nn.Module):
    """Encoder, decoder and optional skip connection shared by all architectures."""

    handles_precision = False
    """True: training runs it without autocast and sets :attr:`select_dtype` instead (the
    coder decides where lower precision is safe)."""
    select_dtype: torch.dtype | None = None
    """Lower-precision dtype a coder that handles precision may choose its latents in."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.out_dim
        self.W_enc_DF = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc_F = nn.Parameter(torch.zeros(d_sae))
        self.W_dec_FO = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec_O = nn.Parameter(torch.zeros(d_out))
        if cfg.skip == "affine":
            self.W_skip_DO = nn.Parameter(torch.zeros(d_in, d_out))
        elif cfg.skip == "learned":
            self.skip_alpha = nn.Parameter(torch.tensor(float(cfg.skip_alpha)))
        elif cfg.skip == "fixed":
            self.register_buffer("skip_alpha", torch.tensor(float(cfg.skip_alpha)))
        self.reset_parameters()

    # -- initialisation -------------------------------------------------------------------------
    def reset_parameters(self, decoder_norm: float = 0.1, seed: int | None = None) -> None:
        """Decoder rows of norm ``decoder_norm`` in random directions, encoder = decoder^T.

        Tied initialisation (OpenAI, Anthropic) starts every latent alive and aligned.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            w = torch.randn(self.W_dec_FO.shape, generator=gen)
            w = w / w.norm(dim=-1, keepdim=True) * decoder_norm
            self.W_dec_FO.copy_(w)
            if self.cfg.d_in == self.cfg.out_dim:
                self.W_enc_DF.copy_(w.T)
            else:  # a transcoder: independent encoder directions of the same scale
                e = torch.randn(self.W_enc_DF.shape, generator=gen)
                self.W_enc_DF.copy_(e / e.norm(dim=0, keepdim=True) * decoder_norm)

    def init_b_dec(self, sample_BO: Tensor) -> None:
        """Start b_dec at the mean of a sample of targets (the geometric median's cheap cousin)."""
        with torch.no_grad():
            self.b_dec_O.copy_(sample_BO.float().mean(0))

    # -- forward --------------------------------------------------------------------------------
    def encoder_bias(self) -> Tensor:
        """b_enc - b_dec W_enc (or b_enc): (x - b_dec) W_enc + b_enc written as x W_enc + this,
        the same value, but b_dec's gradient through the encoder becomes a matrix-vector
        product instead of a second [B, F] x [F, D] matmul."""
        if self.cfg.apply_b_dec_to_input and not self.cfg.transcoder:
            return self.b_enc_F - self.b_dec_O @ self.W_enc_DF
        return self.b_enc_F

    def pre_acts(self, x_BD: Tensor) -> Tensor:
        """(x - b_dec) W_enc + b_enc for inputs [B, D] or [B, T, D]."""
        lead = x_BD.shape[:-1]
        pre = torch.addmm(self.encoder_bias(), x_BD.reshape(-1, x_BD.shape[-1]), self.W_enc_DF)
        return pre.reshape(*lead, -1)  # [..., F]

    def decode(self, latents_BF: Tensor) -> Tensor:
        if latents_BF.dim() == 2:
            return torch.addmm(self.b_dec_O, latents_BF, self.W_dec_FO)  # [B, O], one fused op
        return latents_BF @ self.W_dec_FO + self.b_dec_O

    def skip_out(self, x_BD: Tensor) -> Tensor | None:
        if self.cfg.skip == "affine":
            return x_BD @ self.W_skip_DO
        if self.cfg.skip in ("fixed", "learned"):
            return self.skip_alpha * x_BD
        return None

    def reconstruct(self, x_BD: Tensor) -> Tensor:
        """Encode then decode, with the skip connection: the SAE as a drop-in for the target."""
        out = self.decode(self.encode(x_BD))
        skip = self.skip_out(x_BD)
        return out if skip is None else out + skip

    def forward(self, x_BD: Tensor, target_BO: Tensor | None = None,
                dead_F: Tensor | None = None, want_l0: bool = True) -> ForwardOutput:
        """Reconstruction and loss terms; ``dead_F`` marks dead latents (for the AuxK loss).

        ``want_l0=False`` skips counting active latents (NaN instead), a full pass over [B, F]
        that the trainer needs only on the steps it logs.
        """
        target_BO = x_BD if target_BO is None else target_BO
        enc = self.encode_decode(x_BD, want_l0)
        x_hat_BO = enc.decoded_BO
        skip = self.skip_out(x_BD)
        if skip is not None:
            x_hat_BO = x_hat_BO + skip
        mse = (x_hat_BO - target_BO).pow(2).sum(-1).mean() / target_BO.shape[-1]
        losses = {"mse": mse, **self.sparsity_loss(enc.extra)}
        if dead_F is not None and bool(dead_F.any()):
            aux = self.aux_loss(target_BO - x_hat_BO.detach(), enc.extra, dead_F)
            if aux is not None:
                losses["aux"] = aux
        return ForwardOutput(x_hat_BO, losses, enc.fires_F, enc.l0)

    def encode_decode(self, x_BD: Tensor, want_l0: bool = True) -> Encoded:
        """Training path: subclasses may decode sparsely instead of through dense latents."""
        pre_BF = self.pre_acts(x_BD)
        latents_BF = self.activate(pre_BF)
        with torch.no_grad():  # float reductions: much faster than building [B, F] bool masks
            fires_F = latents_BF.detach().sign().sum(0)  # latents are >= 0: sign counts them
            l0 = (torch.count_nonzero(latents_BF) / latents_BF.shape[0]
                  if want_l0 else torch.tensor(float("nan")))
        return Encoded(self.decode(latents_BF), fires_F, l0,
                       {"pre": pre_BF, "latents": latents_BF})

    def encode_pattern(self, x_BD: Tensor, bias_F: Tensor, pattern: Pattern) -> Encoded:
        """Training path through the latents of ``pattern`` alone (chosen by the caller without
        gradient): their exact values, the sparse decode and its sparse backward
        (:mod:`mistudio.core.sae.sparse_code`). ``extra`` holds x, the bias and each latent's
        summed activation (``colsum``)."""
        values_N = exact_values(pattern, x_BD, self.W_enc_DF, bias_F)
        decoded_BO, colsum_F = sparse_code(x_BD, self.W_enc_DF, bias_F, self.W_dec_FO, pattern,
                                           values_N)
        active_N = values_N > 0
        fires_F = torch.bincount(pattern.cols_N[active_N], minlength=self.cfg.d_sae).float()
        l0 = active_N.sum().float() / x_BD.shape[0]
        return Encoded(decoded_BO + self.b_dec_O, fires_F, l0,
                       {"x": x_BD, "bias": bias_F, "colsum": colsum_F})

    def encode(self, x_BD: Tensor) -> Tensor:
        """Latent activations [B, F], dense, as used for inference and analysis."""
        return self.activate(self.pre_acts(x_BD))

    def activate(self, pre_BF: Tensor) -> Tensor:
        raise NotImplementedError

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unweighted sparsity terms; the trainer weights them (with warm-up)."""
        return {}

    def aux_loss(self, residual_BO: Tensor, extra: dict[str, Tensor],
                 dead_F: Tensor) -> Tensor | None:
        """A loss that revives dead latents by having them explain the residual error."""
        return None

    # -- tensors beyond the common ones (an architecture's own: thresholds, gates) -------------
    def extra_tensors(self, scale_in: float = 1.0, scale_out: float = 1.0) -> dict[str, Tensor]:
        """The architecture's own tensors as saved (SAELens names, raw-activation units)."""
        return {}

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes :meth:`load_extra` expects, by name."""
        return {}

    def load_extra(self, tensors: dict[str, Tensor]) -> None:
        """Take the architecture's own tensors from a saved file."""

    # -- constraints ----------------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every decoder row to unit norm (and the encoder column to match)."""
        norms_F = self.W_dec_FO.norm(dim=-1).clamp_min(1e-8)
        self.W_dec_FO.div_(norms_F[:, None])
        self.W_enc_DF.mul_(norms_F[None, :])
        self.b_enc_F.mul_(norms_F)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Keep unit-norm decoder rows on the sphere: drop the gradient along each row."""
        if self.W_dec_FO.grad is None:
            return
        parallel_F = (self.W_dec_FO.grad * self.W_dec_FO).sum(-1, keepdim=True)
        self.W_dec_FO.grad.sub_(parallel_F * self.W_dec_FO)


def topk_sparse(pre_BF: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest ReLU'd pre-activations of each row: values [B, K] and indices [B, K]."""
    values_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
    return F.relu(values_BK), idx_BK
