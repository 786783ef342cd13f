"""SAE architectures: each one's coder class and how training, saving and export treat it.

The four built in (relu, topk, batchtopk, jumprelu) are declared here like any other; packages
add more through the ``mistudio.sae_architectures`` entry point (:mod:`mistudio.core.runtime.plugins`),
each naming an :class:`Architecture`. Everything that used to ask "is this a jumprelu?" asks the
architecture instead, so a new one trains, saves, loads and exports with no change here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.plugins import plugins
from mistudio.core.sae.jumprelu import JumpReLUSAE
from mistudio.core.sae.onnx_nodes import jumprelu_nodes, relu_nodes, topk_nodes
from mistudio.core.sae.relu import ReLUSAE
from mistudio.core.sae.topk import BatchTopKSAE, TopKSAE


@dataclass(frozen=True)
class Architecture:
    """One kind of sparse coder."""

    name: str
    coder: type
    """The :class:`~mistudio.core.sae.coder.SparseCoder` subclass."""
    saelens: str
    """The ``architecture`` written to the SAELens cfg.json (how other tools read it)."""
    penalty: Literal["none", "l1", "l0"] = "none"
    """The sparsity term the sparsity coefficient weighs (none: sparse by construction)."""
    default_coefficient: float = 0.0
    auxk: bool = False
    """Dead latents are trained by the AuxK loss (else: ghost gradients, when asked for)."""
    saved_as: str | None = None
    """The architecture it becomes for inference when saved (BatchTopK: a JumpReLU)."""
    sparse_training: bool = False
    """Training keeps no dense [batch, d_sae] latents (memory estimate)."""
    onnx_activation: Callable[..., tuple[list[Any], dict[str, Any]]] | None = None
    """``f(cfg, tensors, helper)`` -> (ONNX nodes turning "pre" (and "x") into "latents",
    initialisers); None: not exportable to ONNX."""
    description: str = ""


def _builtin() -> dict[str, Architecture]:
    return {a.name: a for a in (
        Architecture("relu", ReLUSAE, "standard", "l1", 0.01, onnx_activation=relu_nodes,
                     description="ReLU with an L1 penalty"),
        Architecture("topk", TopKSAE, "topk", auxk=True, sparse_training=True,
                     onnx_activation=topk_nodes, description="the k largest per token (AuxK)"),
        Architecture("batchtopk", BatchTopKSAE, "jumprelu", auxk=True, saved_as="jumprelu",
                     sparse_training=True, onnx_activation=jumprelu_nodes,
                     description="k per token on average over the batch; saved as JumpReLU"),
        Architecture("jumprelu", JumpReLUSAE, "jumprelu", "l0", 0.001,
                     onnx_activation=jumprelu_nodes, description="a learned threshold per "
                     "latent with an L0 penalty"),
    )}


def registry() -> dict[str, Architecture]:
    """Every architecture: the built-in ones, then those of installed plugins."""
    out = _builtin()
    for name, arch in plugins("mistudio.sae_architectures").items():
        if isinstance(arch, Architecture) and name not in out:
            out[name] = arch
    return out


def architecture(name: str) -> Architecture:
    """One architecture by name, or one clear line naming the known ones."""
    known = registry()
    if name not in known:
        raise InvalidInputError(f"Unknown architecture {name!r}.",
                                f"Use one of {', '.join(known)} («architecture»).")
    return known[name]


def by_saelens_name(saelens: str) -> str:
    """The architecture a SAELens cfg.json names (its base name; plugins' own names too)."""
    for arch in registry().values():
        if arch.saelens == saelens and arch.saved_as is None:
            return arch.name
    return "jumprelu" if "jumprelu" in saelens else "topk" if "topk" in saelens else "relu"
