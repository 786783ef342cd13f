"""Sparse autoencoders, skip SAEs and transcoders: one interface, one small module per kind."""

from __future__ import annotations

from mistudio.core.sae.coder import ForwardOutput, SparseCoder
from mistudio.core.sae.config import SAEConfig


def build_sae(cfg: SAEConfig) -> SparseCoder:
    """A freshly initialised sparse coder of ``cfg.architecture`` (built in, or a plugin's)."""
    from mistudio.core.sae.architectures import architecture

    return architecture(cfg.architecture).coder(cfg)


def architecture_names() -> list[str]:
    """The architectures a new SAE can have: the built-in ones, then the plugins'."""
    from mistudio.core.sae.architectures import registry

    return list(registry())


__all__ = ["ForwardOutput", "SAEConfig", "SparseCoder", "architecture_names", "build_sae"]
