"""Evaluate an SAE inside the model: next-token loss with its reconstruction spliced in.

On held-out sequences (the end of the tokenized set the activations came from), three forward
passes per batch:

- clean: the model as it is;
- spliced: the hook point's activations replaced by the SAE's reconstruction (a transcoder reads
  its input hook point and replaces its target);
- zero-ablated: the hook point's activations replaced by zeros.

``ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)`` (1 = as good as the model, 0 = no
better than deleting the activations), and ``kl_div`` = mean over tokens of
KL(clean || spliced) of the next-token distributions. Position 0 is never replaced: SAEs here
are not trained on it (see extraction). Nor are massive tokens (attention sinks, see
:mod:`mistudio.core.activations.massive`) unless the SAE was trained on them: the SAE is applied, and the
zero ablation made, only on tokens under its norm threshold, so the score measures the SAE on
the tokens it is meant for while every position's loss still counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mistudio.core.activations.massive import DEFAULT_FACTOR, sae_threshold, token_mask
from mistudio.core.data.tokenization import open_tokenized
from mistudio.core.models.adapters import first_tensor, get_submodule, parse_hook_key
from mistudio.core.models.hooks import capture
from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.workspace import Workspace


@contextmanager
def replace_site(loaded: LoadedModel, key: str, fn: Callable[[Tensor], Tensor],
                 keep: Callable[[Tensor], Tensor] | None = None) -> Iterator[None]:
    """Replace a hook point's activations [B, T, D] by ``fn(activations)`` from position 1 on,
    only where ``keep(activations)`` [B, T-1] is true when it is given."""
    layer, hook = parse_hook_key(key)
    path, side = loaded.adapter.sites[hook]
    module = get_submodule(loaded.layers[layer], path)

    def swap(h: Tensor) -> Tensor:
        out = h.clone()
        new = fn(h[:, 1:]).to(h.dtype)
        if keep is not None:
            new = torch.where(keep(h[:, 1:])[..., None], new, h[:, 1:])
        out[:, 1:] = new
        return out

    if side == "input":
        def pre(_m: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (swap(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": swap(kwargs["hidden_states"])}
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(_m: Any, _args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (swap(first_tensor(output)), *output[1:])
            return swap(output)
        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


def _next_token_ce(logits: Tensor, ids: Tensor) -> Tensor:
    """Per-token cross-entropy of predicting ids[:, t+1] at t >= 1: [B, T-2]."""
    lp = logits[:, 1:-1].float().log_softmax(-1)
    return -lp.gather(-1, ids[:, 2:, None]).squeeze(-1)


@torch.no_grad()
def splice_eval(ws: Workspace, sae: Any, meta: dict[str, Any], n_sequences: int = 32,
                batch_size: int = 8, loaded: LoadedModel | None = None,
                task: TaskState | None = None) -> dict[str, float]:
    """CE loss clean / spliced / zero-ablated, the CE loss score and the KL divergence."""
    task = task or silent_task()
    model_name, tok_name = meta["model_name"], meta["dataset_path"]
    key, target = meta["hook_name"], meta.get("hook_name_out") or meta["hook_name"]
    loaded = loaded or load_model(ws, model_name)
    tokens = open_tokenized(ws, tok_name)
    start = max(0, tokens.n_sequences - n_sequences)
    sae = sae.to(loaded.device).float()
    threshold = sae_threshold(meta)
    factor = float(meta.get("massive_factor") or DEFAULT_FACTOR)
    ce = {"clean": [], "sae": [], "zero": []}
    kls: list[Tensor] = []
    skipped = [0]
    for s in range(start, tokens.n_sequences, batch_size):
        check_cancelled(task)
        ids_np, mask_np = tokens.slice(s, min(s + batch_size, tokens.n_sequences))
        ids = torch.from_numpy(ids_np.astype(np.int64)).to(loaded.device)
        mask = torch.from_numpy(mask_np.astype(np.int64)).to(loaded.device)
        valid = mask[:, 2:].bool()
        # the clean pass also reads the SAE's input, to tell which tokens it is applied to
        with capture(loaded, [parse_hook_key(key)], stop_early=False) as seen:
            clean = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        meant = token_mask(seen[key][:, 1:], threshold, factor) & mask[:, 1:].bool()  # [B, T-1]
        skipped[0] += int((~meant & mask[:, 1:].bool()).sum())
        if target == key:
            ctx = replace_site(loaded, key, lambda h: sae.reconstruct(h.float()),
                               lambda h, m=meant: m)
            with ctx:
                spliced = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        else:  # transcoder: read the input hook point, replace the target
            with capture(loaded, [parse_hook_key(key)], stop_early=False) as seen, replace_site(
                    loaded, target, lambda h, st=seen: sae.reconstruct(st[key][:, 1:].float()),
                    lambda h, m=meant: m):
                spliced = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        with replace_site(loaded, target, torch.zeros_like, lambda h, m=meant: m):
            zero = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for name, logits in (("clean", clean), ("sae", spliced), ("zero", zero)):
            ce[name].append(_next_token_ce(logits, ids)[valid])
        p_log = clean[:, 1:-1].float().log_softmax(-1)
        q_log = spliced[:, 1:-1].float().log_softmax(-1)
        kl = (p_log.exp() * (p_log - q_log)).sum(-1)
        kls.append(kl[valid])
        task.set_progress((s - start + batch_size) / max(1, tokens.n_sequences - start))
    means = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    gap = means["zero"] - means["clean"]
    return {"ce_loss_clean": means["clean"], "ce_loss_sae": means["sae"],
            "ce_loss_zero": means["zero"],
            "ce_loss_score": (means["zero"] - means["sae"]) / gap if gap > 0 else float("nan"),
            "kl_div": float(torch.cat(kls).mean()),
            "in_model_tokens": int(sum(len(v) for v in ce["clean"])),
            "massive_passed_through": skipped[0],
            "in_model_sequences": tokens.n_sequences - start}


