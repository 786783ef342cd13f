"""Reading activations from an unmodified Hugging Face model with forward hooks.

:func:`capture` registers one hook per hook point and, optionally, a hook that stops the
forward pass right after the last block that is needed, so no compute is spent above it (nor on
the unembedding). Hooks are always removed, also when the forward pass fails or is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from mistudio.core.models.adapters import first_tensor, get_submodule, hook_key
from mistudio.core.models.registry import LoadedModel


class _StopForward(Exception):
    """Raised by the stop hook once every needed block has run."""


@contextmanager
def capture(loaded: LoadedModel, sites: Sequence[tuple[int, str]],
            stop_early: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks that store each site's activations ([batch, seq, d]) under ``layers.L.hook``.

    The returned dict is filled by every forward pass run inside the ``with`` block.
    """
    captured: dict[str, torch.Tensor] = {}
    handles: list[Any] = []
    blocks = loaded.layers
    try:
        for layer, hook in sites:
            path, side = loaded.adapter.sites[hook]
            module = get_submodule(blocks[layer], path)
            key = hook_key(layer, hook)
            if side == "input":
                def save_input(_m: Any, args: tuple, kwargs: dict, key: str = key) -> None:
                    captured[key] = args[0] if args else kwargs["hidden_states"]
                handles.append(module.register_forward_pre_hook(save_input, with_kwargs=True))
            else:
                def save_output(_m: Any, _args: Any, output: Any, key: str = key) -> None:
                    captured[key] = first_tensor(output)
                handles.append(module.register_forward_hook(save_output))
        if stop_early and sites:
            last = max(layer for layer, _ in sites)

            def stop(_m: Any, _args: Any, _output: Any) -> None:
                raise _StopForward
            # Registered last, so it runs after the capture hooks on the same block.
            handles.append(blocks[last].register_forward_hook(stop))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward(loaded: LoadedModel, input_ids: torch.Tensor | None,
            attention_mask: torch.Tensor | None = None,
            inputs_embeds: torch.Tensor | None = None) -> Any:
    """One forward pass that treats an early stop from :func:`capture` as success."""
    try:
        if inputs_embeds is not None:
            return loaded.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                use_cache=False)
        return loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        return None
