"""The configuration of a sparse coder, saved as ``cfg.json`` in the SAELens layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from mistudio.core.runtime.errors import InvalidInputError

Skip = Literal["none", "fixed", "learned", "affine"]


@dataclass(frozen=True)
class SAEConfig:
    """Shape and activation function of a sparse coder (not how it is trained)."""

    architecture: str = "topk"
    """relu (L1 penalty), topk, batchtopk (saved as jumprelu), jumprelu (L0 penalty), or a
    plugin's (mistudio.core.sae.architectures)."""
    d_in: int = 576
    """Width of the input activations."""
    d_sae: int = 4608
    """Number of latents (features)."""
    d_out: int | None = None
    """Width of the reconstruction target; None = d_in. Differs only for transcoders."""
    k: int = 32
    """Active latents per token for topk; average active latents per token for batchtopk."""
    skip: Skip = "none"
    """Skip connection: none; fixed or learned scalar alpha * x; affine (learned d_in x d_out)."""
    skip_alpha: float = 1.0
    """Initial (or fixed) alpha of a scalar skip connection."""
    jumprelu_init_threshold: float = 0.001
    """Initial threshold of jumprelu latents (in normalised units)."""
    jumprelu_bandwidth: float = 0.001
    """Width of the kernel of the straight-through estimator of the threshold's gradient."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding (SAEs; transcoders never do)."""
    transcoder: bool = False
    """Reconstruct another hook point's activations instead of the input."""

    def __post_init__(self) -> None:
        if not self.architecture:  # a name unknown to the registry is refused where it is built
            raise InvalidInputError("No architecture given.", "Choose one («architecture»).")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise InvalidInputError("d_in and d_sae must be positive.", "Check «expansion».")
        if self.architecture in ("topk", "batchtopk") and not 0 < self.k <= self.d_sae:
            raise InvalidInputError(f"k = {self.k} must be between 1 and d_sae = {self.d_sae}.",
                                    "Use a smaller «k» or a larger «expansion».")
        if self.skip not in ("none", "fixed", "learned", "affine"):
            raise InvalidInputError(f"Unknown skip connection {self.skip!r}.",
                                    "Use none, fixed, learned or affine.")
        if self.skip in ("fixed", "learned") and self.out_dim != self.d_in:
            raise InvalidInputError("A scalar skip connection needs d_out == d_in.",
                                    "Use «skip=affine» for a transcoder between widths.")

    @property
    def out_dim(self) -> int:
        return self.d_out or self.d_in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"Unknown SAE configuration fields: {', '.join(unknown)}.",
                                    "Remove them, or check that the file is a miStudio config.")
        return cls(**data)
