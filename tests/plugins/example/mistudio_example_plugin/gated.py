"""A gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders"), as a third party would add it: a coder class, its ONNX operators and an
:class:`~mistudio.core.sae.architectures.Architecture` naming them.

The gate decides which latents fire (pre-activation above 0); the magnitude path, sharing the
gate's encoder directions rescaled by exp(r_mag), decides how much. The L1 penalty acts on the
gate's ReLU, and an auxiliary reconstruction through the gate alone (decoder frozen) gives the
gate a gradient the step function cannot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mistudio.core.sae.architectures import Architecture
from mistudio.core.sae.coder import Encoded, SparseCoder


class GatedSAE(SparseCoder):
    """W_enc / b_enc are the gate's; r_mag and b_mag make the magnitude path."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.r_mag_F = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag_F = nn.Parameter(torch.zeros(cfg.d_sae))

    def activate(self, pre_BF: Tensor) -> Tensor:
        gate_BF = pre_BF > 0
        mag_BF = (pre_BF - self.b_enc_F) * self.r_mag_F.exp() + self.b_mag_F
        return gate_BF * F.relu(mag_BF)

    def encode_decode(self, x_BD: Tensor, want_l0: bool = True) -> Encoded:
        enc = super().encode_decode(x_BD, want_l0)
        return enc._replace(extra={**enc.extra, "x": x_BD})

    def sparsity_loss(self, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        gate_BF = F.relu(extra["pre"])
        norms_F = self.W_dec_FO.norm(dim=-1)
        l1 = (gate_BF.sum(0) * norms_F).sum() / gate_BF.shape[0]
        via_gate_BO = gate_BF @ self.W_dec_FO.detach() + self.b_dec_O.detach()
        target_BO = extra["x"]
        aux = (via_gate_BO - target_BO).pow(2).sum(-1).mean() / target_BO.shape[-1]
        return {"l1": l1, "gate_reconstruction": aux}

    def extra_tensors(self, scale_in: float = 1.0, scale_out: float = 1.0) -> dict[str, Tensor]:
        # pre-activations are the same in raw units (the scale folds into W_enc and b_dec)
        return {"b_gate": self.b_enc_F.clone(), "r_mag": self.r_mag_F.clone(),
                "b_mag": self.b_mag_F.clone()}

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"r_mag": (self.cfg.d_sae,), "b_mag": (self.cfg.d_sae,)}

    @torch.no_grad()
    def load_extra(self, tensors: dict[str, Tensor]) -> None:
        self.r_mag_F.copy_(tensors["r_mag"])
        self.b_mag_F.copy_(tensors["b_mag"])


def gated_nodes(cfg: Any, tensors: dict[str, np.ndarray], helper: Any) -> tuple[list[Any], dict]:
    """latents = (pre > 0) * relu((pre - b_gate) * exp(r_mag) + b_mag)."""
    from onnx import TensorProto

    nodes = [helper.make_node("Greater", ["pre", "zero"], ["open"]),
             helper.make_node("Cast", ["open"], ["gate"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["pre", "b_gate"], ["centred"]),
             helper.make_node("Mul", ["centred", "mag_scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "b_mag"], ["mag"]),
             helper.make_node("Relu", ["mag"], ["mag_relu"]),
             helper.make_node("Mul", ["mag_relu", "gate"], ["latents"])]
    return nodes, {"zero": np.zeros(1, np.float32), "b_gate": tensors["b_gate"],
                   "mag_scale": np.exp(tensors["r_mag"]).astype(np.float32),
                   "b_mag": tensors["b_mag"]}


GATED = Architecture(
    "gated", GatedSAE, saelens="gated", penalty="l1", default_coefficient=0.01,
    onnx_activation=gated_nodes, description="a gate picks the latents, a magnitude path "
    "sizes them (L1 on the gate)")
