"""Where the hook points live in each supported architecture.

A hook point is a (layer, name) pair. Names, per layer:

- ``resid_pre``: the residual stream entering the block (the block's input);
- ``resid_post``: the residual stream leaving the block (the block's output);
- ``mlp_in``: what the MLP reads (after its layer norm);
- ``mlp_out``: what the MLP adds to the residual stream;
- ``attn_out``: what attention adds to the residual stream;
- ``attn_z``: the attention heads' outputs, concatenated, before the output projection
  (TransformerLens's ``hook_z``; what Gemma Scope's attention SAEs read). Its width is
  heads x head dimension, which is d_model for most families but not all (Gemma-2-2B: 2048).

Each adapter maps a name to a submodule of the block and whether to read that module's input or
its output. Reading hooks on the unmodified Hugging Face model keeps every model working as its
authors wrote it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.store.manifests import HOOK_POINTS

Side = Literal["input", "output"]


@dataclass(frozen=True)
class Adapter:
    """How to find blocks and hook points in one model family."""

    family: str
    """Name shown to the user."""
    layers_path: str
    """Dotted path from the CausalLM to the list of blocks."""
    final_norm_path: str
    """Dotted path to the norm before the unembedding (for the logit lens)."""
    sites: dict[str, tuple[str, Side]]
    """Hook point -> (submodule of the block, '' = the block itself; input or output)."""


def _sites(attn: str, mlp: str, mlp_in: str = "", attn_out: str = "",
           mlp_out: str = "", o_proj: str = "o_proj") -> dict[str, tuple[str, Side]]:
    return {
        "resid_pre": ("", "input"),
        "resid_post": ("", "output"),
        "mlp_in": (mlp_in, "output") if mlp_in else (mlp, "input"),
        "mlp_out": (mlp_out or mlp, "output"),
        "attn_out": (attn_out or attn, "output"),
        "attn_z": (f"{attn}.{o_proj}", "input"),
    }


_LLAMA_LIKE = _sites("self_attn", "mlp")
ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter("GPT-2", "transformer.h", "transformer.ln_f",
                    _sites("attn", "mlp", o_proj="c_proj")),
    "llama": Adapter("LLaMA", "model.layers", "model.norm", _LLAMA_LIKE),
    "mistral": Adapter("Mistral", "model.layers", "model.norm", _LLAMA_LIKE),
    "qwen2": Adapter("Qwen2", "model.layers", "model.norm", _LLAMA_LIKE),
    "qwen3": Adapter("Qwen3", "model.layers", "model.norm", _LLAMA_LIKE),
    "phi3": Adapter("Phi-3", "model.layers", "model.norm", _LLAMA_LIKE),
    "gemma": Adapter("Gemma", "model.layers", "model.norm", _LLAMA_LIKE),
    # Gemma 2/3 normalise each sublayer's output before adding it to the residual stream, and
    # the MLP reads the output of its own pre-norm.
    "gemma2": Adapter("Gemma-2", "model.layers", "model.norm", _sites(
        "self_attn", "mlp", mlp_in="pre_feedforward_layernorm",
        attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")),
    "gemma3_text": Adapter("Gemma-3", "model.layers", "model.norm", _sites(
        "self_attn", "mlp", mlp_in="pre_feedforward_layernorm",
        attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")),
    "gpt_neox": Adapter("GPT-NeoX", "gpt_neox.layers", "gpt_neox.final_layer_norm",
                        _sites("attention", "mlp", o_proj="dense")),
}
SUPPORTED_FAMILIES = ("GPT-2, LLaMA (SmolLM2, TinyLlama), Mistral, Qwen2/3, Phi-3, Gemma/Gemma-2/3, "
                      "GPT-NeoX (Pythia)")


def adapter_for(model_type: str) -> Adapter:
    """The adapter for a ``config.model_type``, or a clear error naming what is supported."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise InvalidInputError(
            f"Model architecture {model_type!r} is not supported.",
            f"Supported families: {SUPPORTED_FAMILIES}.",
        ) from None


def get_submodule(root: torch.nn.Module, path: str) -> torch.nn.Module:
    return root.get_submodule(path) if path else root


def layers_of(model: torch.nn.Module, adapter: Adapter) -> torch.nn.ModuleList:
    return model.get_submodule(adapter.layers_path)  # type: ignore[return-value]


def validate_hooks(n_layers: int, layers: list[int], hook: str) -> None:
    """One clear error for a layer out of range or an unknown hook point."""
    if hook not in HOOK_POINTS:
        raise InvalidInputError(f"Unknown hook point {hook!r}.",
                                f"Use one of: {', '.join(HOOK_POINTS)}.")
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InvalidInputError(f"Layer {layer} is out of range: the model has {n_layers} "
                                    "layers.", f"Use a layer from 0 to {n_layers - 1}.")


def hook_key(layer: int, hook: str) -> str:
    """The name under which a hook point's activations are stored: ``layers.6.resid_post``."""
    return f"layers.{layer}.{hook}"


def parse_hook_key(key: str) -> tuple[int, str]:
    _, layer, hook = key.split(".")
    return int(layer), hook


def first_tensor(value: object) -> torch.Tensor:
    """Blocks and attention modules return a tensor or a tuple whose first item is one."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"expected a tensor output, got {type(value).__name__}")


# Hook points named in other libraries' conventions (SAELens / TransformerLens, sparsify).
_TL = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post",
       "hook_mlp_out": "mlp_out", "hook_attn_out": "attn_out", "ln2.hook_normalized": "mlp_in",
       "attn.hook_z": "attn_z", "hook_z": "attn_z", "hook_mlp_in": "mlp_in"}
_MODULE = {"": "resid_post", "mlp": "mlp_out", "self_attn": "attn_out", "attention": "attn_out",
           "attn": "attn_out"}

def to_hook_key(name: str) -> str | None:
    """miStudio's key for a hook point named in another library's convention, or None."""
    name = name.strip()
    m = re.fullmatch(r"layers\.(\d+)\.(\w+)", name)
    if m and m.group(2) in HOOK_POINTS:
        return name
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _TL:
        return f"layers.{int(m.group(1))}.{_TL[m.group(2)]}"
    m = re.fullmatch(r"(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)\.(\d+)(?:\.(\w+))?", name)
    if m and (m.group(2) or "") in _MODULE:
        return f"layers.{int(m.group(1))}.{_MODULE[m.group(2) or '']}"
    return None
