"""Feature interventions on an unmodified Hugging Face model, applied with forward hooks.

Methods, for feature f with decoder row W_dec[f] (raw activation units, so adding c * W_dec[f]
is what raising the feature's activation by c writes into the residual stream):

- ``add``: h + c * W_dec[f]  (several features: h + sum_i c_i W_dec[f_i]);
- ``clamp``: encode h, set a_f to c, decode, and keep the SAE's error term h - x_hat; with a
  linear decoder this is h + (c - a_f(h)) * W_dec[f], so only the intervention changes h;
- ``ablate``: clamp to 0;
- ``cap``: for the unit direction d of W_dec[f], h - max(0, h.d - c) d (c = 0: remove the
  direction entirely, Neuronpedia's orthogonal ablation).

Every intervention applies at each position from 1 on (position 0, the attention sink the SAEs
are not trained on, is left alone), or only at generated positions. The hooks know which
positions a forward pass covers from a counter, so they work with the KV cache (one new token
per step) as well as on a whole sequence. :func:`steering` removes them in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mistudio.core.activations.massive import token_mask
from mistudio.core.models.adapters import first_tensor, get_submodule, parse_hook_key
from mistudio.core.models.registry import LoadedModel
from mistudio.core.runtime.errors import InvalidInputError

Method = Literal["add", "clamp", "ablate", "cap"]
METHODS = ("add", "clamp", "ablate", "cap")


FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Intervention:
    """One feature's intervention."""

    feature: int
    """Feature index in the SAE."""
    coefficient: float = 0.0
    """add: how much activation to add; clamp: the value; cap: the largest projection kept."""
    method: Method = "add"
    sae: str | None = None
    """SAE it belongs to (None = the steering spec's first SAE)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.coefficient):
            raise InvalidInputError(f"The coefficient of feature {self.feature} is "
                                    f"{self.coefficient}, not a number.",
                                    "Give a finite number (e.g. 4 or -2.5).")
        if abs(self.coefficient) > FLOAT32_MAX:
            raise InvalidInputError(f"The coefficient of feature {self.feature} is "
                                    f"{self.coefficient:g}, beyond what the model computes "
                                    "with (32-bit floats end at 3.4e38).",
                                    "Give a coefficient on the scale of the feature's "
                                    "activations (e.g. 4 or -2.5).")
        if self.method not in METHODS:
            raise InvalidInputError(f"Unknown steering method {self.method!r}.",
                                    f"Use one of {', '.join(METHODS)}.")


class SiteSteer:
    """The interventions of one SAE at its hook point, as a function of a block of positions."""

    def __init__(self, sae: Any, interventions: Sequence[Intervention], strength: float,
                 start_position: int, massive_threshold: float | None = None) -> None:
        self.sae = sae
        self.massive_threshold = massive_threshold
        """clamp / ablate read the SAE's encoding, which means nothing on massive tokens
        (attention sinks): above this norm they are left alone (None: the median rule)."""
        self.items = list(interventions)
        self.strength = strength
        self.start = start_position
        d_sae = sae.cfg.d_sae
        for iv in self.items:
            if not 0 <= iv.feature < d_sae:
                raise InvalidInputError(f"Feature {iv.feature} is out of range: the SAE has "
                                        f"{d_sae:,} features (0 to {d_sae - 1:,}).",
                                        "Pick an index in that range.")
        W = sae.W_dec_FO.detach()
        adds = [iv for iv in self.items if iv.method == "add"]
        self.add_vec_D = (sum((iv.coefficient * W[iv.feature] for iv in adds),
                              torch.zeros(W.shape[1], device=W.device, dtype=W.dtype))
                          * strength) if adds else None
        self.needs_encode = any(iv.method in ("clamp", "ablate") for iv in self.items)
        self.offset = 0
        """Positions already processed (the KV cache's length)."""

    def reset(self) -> None:
        self.offset = 0

    @torch.no_grad()
    def __call__(self, h_BTD: Tensor) -> Tensor:
        T = h_BTD.shape[1]
        pos_T = torch.arange(self.offset, self.offset + T, device=h_BTD.device)
        self.offset += T
        mask_T = (pos_T >= max(1, self.start))
        if not bool(mask_T.any()):
            return h_BTD
        h = h_BTD.float()
        delta = torch.zeros_like(h)
        if self.add_vec_D is not None:
            delta += self.add_vec_D.float()
        if self.needs_encode:
            acts_BTF = self.sae.encode(h)
            meant_BT = token_mask(h, self.massive_threshold)[..., None]
            for iv in self.items:
                if iv.method in ("clamp", "ablate"):
                    target = 0.0 if iv.method == "ablate" else iv.coefficient * self.strength
                    a = acts_BTF[..., iv.feature]
                    delta += ((target - a)[..., None] * self.sae.W_dec_FO[iv.feature].float()
                              * meant_BT)
        for iv in self.items:
            if iv.method == "cap":
                d = self.sae.W_dec_FO[iv.feature].float()
                d = d / d.norm().clamp_min(1e-8)
                proj = ((h + delta) @ d)[..., None]
                delta -= (proj - iv.coefficient * self.strength).clamp_min(0) * d
        out = h + delta * mask_T[None, :, None]
        return out.to(h_BTD.dtype)


@contextmanager
def steering(loaded: LoadedModel, sites: dict[str, SiteSteer]) -> Iterator[None]:
    """Apply each ``SiteSteer`` at its hook point (``layers.L.HOOK``) inside the block.

    The position counters are not reset here, so a generation loop can enter and leave this
    block at every step (interleaving a steered and a plain continuation); call
    ``SiteSteer.reset()`` when a new sequence starts."""
    handles: list[Any] = []
    try:
        for key, steer in sites.items():
            layer, hook = parse_hook_key(key)
            if not 0 <= layer < len(loaded.layers):
                raise InvalidInputError(f"The model has no layer {layer} (it has "
                                        f"{len(loaded.layers)}).", "Choose an SAE of this model.")
            path, side = loaded.adapter.sites[hook]
            module = get_submodule(loaded.layers[layer], path)
            if side == "input":
                def pre(_m: Any, args: tuple, kwargs: dict, s: SiteSteer = steer) -> Any:
                    if args:
                        return (s(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": s(kwargs["hidden_states"])}
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(_m: Any, _args: Any, output: Any, s: SiteSteer = steer) -> Any:
                    if isinstance(output, tuple):
                        return (s(first_tensor(output)), *output[1:])
                    return s(output)
                handles.append(module.register_forward_hook(post))
        yield
    finally:
        for handle in handles:
            handle.remove()
