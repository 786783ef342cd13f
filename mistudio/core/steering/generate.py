"""Side-by-side generation: the same prompt, seed and sampling, with and without steering.

Both continuations are generated token by token in lockstep, each with its own KV cache and its
own random generator seeded alike, and every token is streamed through the task's
``emit_partial`` ({"side": "plain" | "steered", "index", "token_id", "text"}) so a UI can fill
both panes live. Afterwards the comparison is computed with teacher-forced passes of the
unsteered model (see :class:`Comparison`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mistudio.core.models.registry import LoadedModel
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.steering.interventions import SiteSteer, steering


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings shared by both sides."""

    max_tokens: int = 40
    """New tokens per side."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k cut."""
    seed: int = 0
    steer_prompt: bool = True
    """Steer the prompt's positions too (else only generated ones)."""

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise InvalidInputError("Max tokens must be positive.", f"Got {self.max_tokens}.")
        if not (math.isfinite(self.temperature) and math.isfinite(self.top_p)) or \
                self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise InvalidInputError("Sampling settings out of range.",
                                    "Use «temperature» >= 0, 0 < «top_p» <= 1, «top_k» >= 0.")


class Side(NamedTuple):
    text: str
    token_ids: list[int]
    error: str | None
    """Why this side stopped early (NaN logits), or None."""


class Comparison(NamedTuple):
    """Both continuations and how they differ."""

    prompt: str
    plain: Side
    steered: Side
    diverges_at: int | None
    """First generated index where the tokens differ (None: identical)."""
    kl_per_position: list[float]
    """KL(steered || unsteered) of the next-token distributions at each steered position."""
    kl_mean: float
    gained: list[list[tuple[str, float]]]
    """Per steered position, the tokens whose probability rose most (token, rise)."""
    lost: list[list[tuple[str, float]]]
    """Per steered position, the tokens whose probability fell most (token, fall > 0)."""
    perplexity_plain: float
    """Of each continuation under the unsteered model."""
    perplexity_steered: float
    similarity: float
    """Cosine of the mean-pooled last hidden states of the two continuations."""
    feature_activations: dict[str, dict[str, float]]
    """Per steered feature: mean activation over generated positions, plain and steered."""


def _sample(logits: Tensor, cfg: GenerationConfig, gen: torch.Generator) -> int:
    if cfg.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_l, order = logits.sort(descending=True)
        cum = sorted_l.softmax(-1).cumsum(-1)
        drop = cum - sorted_l.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
        logits[order[drop]] = float("-inf")
    probs = logits.softmax(-1).cpu()
    return int(torch.multinomial(probs, 1, generator=gen))


class _Stream:
    """One side's incremental state: cache, tokens, text, logits."""

    def __init__(self, name: str, prompt_ids: Tensor, seed: int) -> None:
        self.name, self.ids, self.cache = name, prompt_ids, None
        self.new: list[int] = []
        self.logits: list[Tensor] = []
        self.text, self.error, self.done = "", None, False
        self.gen = torch.Generator().manual_seed(seed)


@torch.no_grad()
def compare(loaded: LoadedModel, sites: dict[str, SiteSteer], prompt: str,
            cfg: GenerationConfig, task: TaskState | None = None,
            watch: dict[str, tuple[Any, list[int] | None]] | None = None) -> Comparison:
    """Generate plain and steered continuations of ``prompt`` and compare them.

    ``watch``: hook key -> (SAE, features, or None for its most changed ones) whose mean
    activations are reported per side.
    """
    task = task or silent_task()
    tok = loaded.tokenizer
    if not prompt.strip():
        raise InvalidInputError("The prompt is empty.", "Type a prompt («prompt=TEXT»).")
    prompt_ids = tok(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
    n_prompt = prompt_ids.shape[1]
    limit = loaded.info.max_context
    if n_prompt >= limit:
        raise InvalidInputError(f"The prompt has {n_prompt:,} tokens; the model reads at most "
                                f"{limit:,}.", "Shorten the prompt.")
    if n_prompt + cfg.max_tokens > limit:
        raise InvalidInputError(
            f"{cfg.max_tokens:,} new tokens after a prompt of {n_prompt:,} exceed the model's "
            f"maximum of {limit:,} tokens.", f"Ask for at most {limit - n_prompt:,} new tokens.")
    max_new = cfg.max_tokens
    device = loaded.device
    prompt_ids = prompt_ids.to(device)
    for s in sites.values():
        s.reset()
        s.start = 1 if cfg.steer_prompt else n_prompt
    sides = [_Stream("plain", prompt_ids, cfg.seed), _Stream("steered", prompt_ids, cfg.seed)]
    eos = tok.eos_token_id
    cache_arg = _cache_argument(loaded.model)
    last_only = _logits_to_keep(loaded.model, 1)  # the prefill needs no logits for the prompt
    for i in range(max_new):
        check_cancelled(task)
        for side in sides:
            if side.done:
                continue
            step_ids = side.ids if side.cache is None else side.ids[:, -1:]
            kwargs = {"input_ids": step_ids, "use_cache": True, cache_arg: side.cache,
                      **last_only}
            if side.name == "steered":
                with steering(loaded, sites):
                    out = loaded.model(**kwargs)
            else:
                out = loaded.model(**kwargs)
            side.cache = getattr(out, cache_arg)
            logits = out.logits[0, -1]
            if not torch.isfinite(logits).all():
                side.error = (f"Steering made the model's output NaN/Inf at token {i}; this "
                              "side stopped. Lower the coefficients.")
                side.done = True
                continue
            token = _sample(logits, cfg, side.gen)
            side.logits.append(logits.float().cpu())
            side.new.append(token)
            side.ids = torch.cat([side.ids, torch.tensor([[token]], device=device)], dim=1)
            text = tok.decode(side.new, skip_special_tokens=True)
            task.emit_partial({"side": side.name, "index": i, "token_id": token,
                               "text": text[len(side.text):]})
            side.text = text
            side.done = token == eos
        task.set_progress((i + 1) / max_new * 0.9)
        if all(s.done for s in sides):
            break
    return _compare(loaded, sites, prompt, n_prompt, sides, watch or {})


def _cache_argument(model: Any) -> str:
    """transformers 5.2x names the KV cache ``cache``; earlier releases ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters \
        else "past_key_values"


def _logits_to_keep(model: Any, n: int) -> dict[str, int]:
    """Ask for the last ``n`` positions' logits only, where the model supports it: a 262k-token
    vocabulary (Gemma 3) makes the unembedding of a whole prompt cost more than its blocks."""
    import inspect

    return {"logits_to_keep": n} if "logits_to_keep" in inspect.signature(
        model.forward).parameters else {}


def _forward_hidden(loaded: LoadedModel, ids: Tensor, n_prompt: int) -> Any:
    """Hidden states, and logits from the last prompt position on (what perplexity reads)."""
    keep = _logits_to_keep(loaded.model, ids.shape[1] - n_prompt + 1)
    out = loaded.model(input_ids=ids, output_hidden_states=True, use_cache=False, **keep)
    if not keep:  # the model gave every position: keep the same tail
        out.logits = out.logits[:, n_prompt - 1:]
    return out


def _compare(loaded: LoadedModel, sites: dict[str, SiteSteer], prompt: str, n_prompt: int,
             sides: list[_Stream], watch: dict[str, tuple[Any, list[int] | None]]
             ) -> Comparison:
    plain, steered = sides
    tok = loaded.tokenizer
    common = min(len(plain.new), len(steered.new))
    diverge = next((i for i in range(common) if plain.new[i] != steered.new[i]),
                   None if len(plain.new) == len(steered.new) else common)
    outs = {s.name: _forward_hidden(loaded, s.ids, n_prompt) for s in sides if s.new}

    def ppl(side: _Stream) -> float:
        if not side.new:
            return float("nan")
        lp = outs[side.name].logits[0, :-1].float().log_softmax(-1)
        nll = -lp.gather(-1, side.ids[0, n_prompt:, None].to(lp.device)).mean()
        return float(nll.exp())

    kls: list[float] = []
    gained: list[list[tuple[str, float]]] = []
    lost: list[list[tuple[str, float]]] = []
    if steered.new:
        base = outs["steered"].logits[0, :-1].float().log_softmax(-1).cpu()
        for j, s_logits in enumerate(steered.logits):
            lp_s, lp_u = s_logits.log_softmax(-1), base[j]
            kls.append(float((lp_s.exp() * (lp_s - lp_u)).sum()))
            change = lp_s.exp() - lp_u.exp()
            up, down = change.topk(3), (-change).topk(3)
            gained.append([(tok.decode([int(t)]), round(float(v), 4))
                           for v, t in zip(up.values, up.indices, strict=True)])
            lost.append([(tok.decode([int(t)]), round(float(v), 4))
                         for v, t in zip(down.values, down.indices, strict=True)])
    sim = float("nan")
    if plain.new and steered.new:
        pool = {n: o.hidden_states[-1][0, n_prompt:].float().mean(0) for n, o in outs.items()}
        sim = float(F.cosine_similarity(pool["plain"], pool["steered"], dim=0))
    acts = _feature_activations(loaded, sites, sides, n_prompt, watch)
    return Comparison(prompt, Side(plain.text, plain.new, plain.error),
                      Side(steered.text, steered.new, steered.error), diverge, kls,
                      sum(kls) / len(kls) if kls else 0.0, gained, lost, ppl(plain), ppl(steered),
                      sim, acts)


def _feature_activations(loaded: LoadedModel, sites: dict[str, SiteSteer], sides: list[_Stream],
                         n_prompt: int, watch: dict[str, tuple[Any, list[int] | None]]
                         ) -> dict[str, dict[str, float]]:
    """Mean activation of watched features over generated positions, plain vs steered (the
    steered text read with the steering applied, as it was generated). ``None`` instead of a
    feature list watches a whole SAE (e.g. at a later layer) and reports its five features whose
    mean activation changed most."""
    from mistudio.core.models.adapters import parse_hook_key
    from mistudio.core.models.hooks import capture

    out: dict[str, dict[str, float]] = {}
    if not watch or not all(s.new for s in sides):
        return out
    keys = [parse_hook_key(k) for k in watch]
    means: dict[str, dict[str, Tensor]] = {}
    for side in sides:
        for s in sites.values():
            s.reset()
        if side.name == "steered":
            with steering(loaded, sites), capture(loaded, keys, stop_early=False) as seen:
                loaded.model(input_ids=side.ids, use_cache=False)
        else:
            with capture(loaded, keys, stop_early=False) as seen:
                loaded.model(input_ids=side.ids, use_cache=False)
        for key, (sae, _) in watch.items():
            means.setdefault(key, {})[side.name] = sae.encode(seen[key][0, n_prompt:].float()
                                                              ).mean(0)
    for key, (_, feats) in watch.items():
        plain, steered = means[key]["plain"], means[key]["steered"]
        chosen = feats if feats is not None else \
            (steered - plain).abs().topk(min(5, plain.numel())).indices.tolist()
        for f in chosen:
            out[f"{key}#{f}"] = {"plain": float(plain[f]), "steered": float(steered[f])}
    return out
