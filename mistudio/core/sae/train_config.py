"""How an SAE is trained: one typed, validated dataclass, saved in the SAE's ``mistudio.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.architectures import architecture
from mistudio.core.sae.optim import Optimizer, default_lr

# Settings every SAE of a sweep must share: they are trained on the same batches in one pass.
SHARED_FIELDS = ("activations", "hook", "target_hook", "steps", "batch_size", "grad_accumulation",
                 "normalize_activations", "checkpoint_every", "log_every", "histogram_every",
                 "eval_tokens", "seed", "device", "keep_massive")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; defaults suit the embedded model on a laptop CPU."""

    activations: str
    """Activation set to train on."""
    hook: str | None = None
    """Hook point of the set to encode (layers.L.HOOK); None = the set's first."""
    target_hook: str | None = None
    """Hook point to reconstruct (a transcoder); None = the input itself (an SAE)."""
    architecture: str = "topk"
    """Activation function: relu, topk, batchtopk, jumprelu or a plugin's; TopK with AuxK needs
    no sparsity tuning and keeps latents alive."""
    expansion: int = 8
    """d_sae = expansion * d_in."""
    k: int = 32
    """Active latents per token (topk, batchtopk)."""
    skip: Literal["none", "fixed", "learned", "affine"] = "none"
    """Skip connection (the spec's skip SAE is relu + fixed)."""
    sparsity_coefficient: float | None = None
    """L1 (relu) or L0 (jumprelu) weight; None = the architecture's default."""
    target_l0: float | None = None
    """relu / jumprelu: adapt the sparsity coefficient during training until the mean number of
    active latents per token reaches this (the coefficient starts at sparsity_coefficient)."""
    aux_coefficient: float | None = None
    """Weight of the dead-latent loss: AuxK for topk / batchtopk (None = 1/32), ghost gradients
    for relu / jumprelu (None = 1)."""
    ghost_grads: bool = False
    """relu / jumprelu: train dead latents with ghost gradients (Anthropic, 2024)."""
    optimizer: Optimizer = "adam"
    """adam (warm-up + cosine decay) or signum (schedule-free sign-SGD, sparsify's default).
    Adam is the default, measured (benchmarks/peers.py, 400 x 4096 tokens): held-out FVU 0.145
    against 0.161 for signum at sparsify's learning rate on the embedded model's activations,
    0.353 against 0.375 on synthetic rows (0.203 / 0.490 at twice its rate)."""
    steps: int = 1000
    """Optimiser steps (1000 x 2048 tokens: about 5 minutes on two CPU cores)."""
    batch_size: int = 2048
    """Tokens per step (before gradient accumulation; split across ranks when distributed)."""
    grad_accumulation: int = 1
    """Batches per optimiser step."""
    lr: float | None = None
    """Peak learning rate; None = the optimiser's measured default for this width and these
    tokens per step (:func:`mistudio.core.sae.optim.default_lr`)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up."""
    lr_end_fraction: float = 0.1
    """Adam: cosine decay ends at this fraction of the peak learning rate."""
    sparsity_warmup_fraction: float = 0.05
    """The sparsity coefficient grows linearly from 0 over this fraction of the steps."""
    grad_clip: float = 1.0
    """Clip the gradient norm (0 = off)."""
    unit_norm_decoder: bool = False
    """Hold decoder rows at unit norm (their gradient along the row removed, renormalised after
    each step). Off by default: the L1 penalty is weighted by decoder norms instead."""
    dead_after_tokens: int | None = None
    """A latent that has not fired for this many tokens is dead (AuxK trains it); None = a tenth
    of the training tokens, at most 1M (OpenAI's 10M suits far longer runs)."""
    normalize_activations: bool = True
    """Scale inputs to mean norm sqrt(d_in) while training; folded into the saved weights."""
    mixed_precision: Literal["auto", "none", "bfloat16", "float16"] = "auto"
    """Lower precision for the dense matmuls; auto = bfloat16 on GPUs that support it and on
    CPUs that compute it natively (AVX512-BF16, AMX; elsewhere none). TopK uses it only to
    choose latents, computing their values in float32."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    log_every: int = 10
    """Steps between metric lines (and progress updates)."""
    histogram_every: int = 200
    """Steps between feature-density histograms in the live metrics."""
    early_stop_patience: int = 0
    """Stop when the logged MSE has not improved by 1% over this many log intervals (0 = off)."""
    resample_dead_every: int = 0
    """Give dead latents new directions from badly reconstructed inputs every this many steps
    (0 = off; AuxK already keeps TopK latents alive, this helps ReLU and JumpReLU)."""
    keep_massive: bool = False
    """Train and evaluate on massive tokens too (attention sinks with norms tens of times the
    median, flagged at extraction). Off: they are left out of batches and metrics, since a
    handful of them would dominate both (see mistudio.core.activations.massive)."""
    eval_tokens: int = 16384
    """Tokens held out at the end of the set for the final evaluation (at most a tenth of it)."""
    seed: int = 0
    """Seeds the initialisation and the batch order."""
    device: str = "auto"
    """cpu, cuda, cuda:N, mps or auto."""

    def __post_init__(self) -> None:
        def bad(field: str, rule: str) -> InvalidInputError:
            return InvalidInputError(f"«{field}» must be {rule}; got "
                                     f"{getattr(self, field)!r}.", "Use a value in that range.")

        for field in ("steps", "batch_size", "grad_accumulation", "expansion", "checkpoint_every",
                      "log_every", "histogram_every", "eval_tokens", "k"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(field, "a positive whole number")
        for field in ("warmup_steps", "early_stop_patience", "resample_dead_every", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(field, "a whole number of 0 or more")
        positive = {"lr": self.lr, "target_l0": self.target_l0,
                    "dead_after_tokens": self.dead_after_tokens}
        for field, value in positive.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(field, "a finite number above 0")
        for field in ("sparsity_coefficient", "aux_coefficient", "grad_clip"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise bad(field, "a finite number of 0 or more")
        for field in ("lr_end_fraction", "sparsity_warmup_fraction"):
            if not 0 <= getattr(self, field) <= 1:
                raise bad(field, "between 0 and 1")
        arch = architecture(self.architecture)  # one clear line if unknown
        if self.optimizer not in ("adam", "signum"):
            raise InvalidInputError(f"Unknown optimizer {self.optimizer!r}.", "Use adam or signum.")
        if self.target_l0 is not None:
            if arch.penalty == "none":
                raise InvalidInputError(
                    f"«target_l0» adapts an L1/L0 penalty; {self.architecture} has none.",
                    f"Set «k» for {self.architecture}, or use «architecture=relu» or jumprelu.")
            if self.target_l0 <= 0:
                raise InvalidInputError(f"«target_l0» must be positive, got {self.target_l0}.",
                                        "Give the number of active latents to aim for.")
        if self.ghost_grads and arch.auxk:
            raise InvalidInputError(f"Ghost gradients are for relu and jumprelu SAEs; "
                                    f"{self.architecture} uses AuxK.", "Turn «ghost_grads» off.")

    def dead_window(self) -> int:
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        total = self.steps * self.batch_size * self.grad_accumulation
        return max(2 * self.batch_size, min(1_000_000, total // 10))

    def default_coefficient(self) -> float:
        if self.sparsity_coefficient is not None:
            return self.sparsity_coefficient
        return architecture(self.architecture).default_coefficient

    def aux_weight(self) -> float:
        if self.aux_coefficient is not None:
            return self.aux_coefficient
        return 1.0 if self.ghost_grads else 1 / 32

    def uses_dead_mask(self) -> bool:
        """Whether the forward pass needs the dead latents (AuxK or ghost gradients)."""
        return architecture(self.architecture).auxk or self.ghost_grads

    def peak_lr(self, d_sae: int) -> float:
        if self.lr is not None:
            return self.lr
        return default_lr(self.optimizer, d_sae, self.batch_size * self.grad_accumulation)


def training_bytes(cfg: TrainConfig, d_in: int) -> int:
    """What training one SAE needs in memory: weights, gradients and two Adam moments (or one
    schedule-free copy), the dense [batch, d_sae] pre-activations with their ReLU'd copy for the
    dense architectures, and the prefetched data buffers."""
    d_sae = cfg.expansion * d_in
    params = 2 * d_in * d_sae + d_sae + d_in
    states = 4 if cfg.optimizer == "adam" else 3  # weights, grads, moments / z
    dense = 2 if architecture(cfg.architecture).sparse_training else 4  # pre-acts, latents, grads
    batch = cfg.batch_size * (dense * d_sae + 4 * d_in)
    buffers = 2 * 65_536 * d_in * 2  # two float16 read buffers of the loader
    return 4 * (params * states + batch) + buffers


def check_sweep(configs: list[TrainConfig]) -> None:
    """SAEs trained in one pass must read the same batches for the same number of steps."""
    first = configs[0]
    for cfg in configs[1:]:
        for f in fields(TrainConfig):
            if f.name in SHARED_FIELDS and getattr(cfg, f.name) != getattr(first, f.name):
                raise InvalidInputError(
                    f"SAEs trained together must share «{f.name}» "
                    f"({getattr(first, f.name)!r} vs {getattr(cfg, f.name)!r}).",
                    "Sweep only architecture, expansion, k, sparsity, optimizer and learning "
                    "rate; train other variations separately.")
