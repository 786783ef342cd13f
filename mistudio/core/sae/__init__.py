"""Sparse autoencoders, skip SAEs and transcoders: one interface, one small module per kind."""

from __future__ import annotations

from mistudio.core.sae.coder import ForwardOutput, SparseCoder
from mistudio.core.sae.config import SAEConfig


def build_sae(cfg: SAEConfig) -> SparseCoder:
    """A freshly initialised sparse coder of ``cfg.architecture``."""
    from mistudio.core.sae.jumprelu import JumpReLUSAE
    from mistudio.core.sae.relu import ReLUSAE
    from mistudio.core.sae.topk import BatchTopKSAE, TopKSAE

    cls = {"relu": ReLUSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE,
           "jumprelu": JumpReLUSAE}[cfg.architecture]
    return cls(cfg)


def architectures() -> list[str]:
    """The architectures a new SAE can have."""
    from mistudio.core.sae.config import ARCHITECTURES

    return list(ARCHITECTURES)


__all__ = ["ForwardOutput", "SAEConfig", "SparseCoder", "architectures", "build_sae"]
