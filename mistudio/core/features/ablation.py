"""What a feature does and what drives it: ablation in the model, and input-token attribution.

Ablation removes one feature's contribution from the hook point, h - a_f(h) W_dec[f], keeping the
SAE's error term (the rest of h) intact, so only this feature changes. The effect is the change
in next-token loss on the feature's top contexts, from its first firing token on.

Attribution asks which input tokens make the feature fire at a chosen token: the gradient of its
activation with respect to the input embeddings, times the embeddings (summed over the width),
or integrated gradients along the straight path from zero embeddings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from mistudio.core.activations.massive import sae_threshold, token_mask
from mistudio.core.data.tokenization import open_tokenized
from mistudio.core.features.examples import FeatureReader
from mistudio.core.models.adapters import parse_hook_key
from mistudio.core.models.hooks import capture, forward
from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.io import open_sae
from mistudio.core.sae.splice import _next_token_ce, replace_site
from mistudio.core.store.workspace import Workspace


class AblationEffect(NamedTuple):
    """Change of next-token loss when one feature is removed, on its top contexts."""

    feature: int
    ce_clean: float
    ce_ablated: float
    delta: float
    """ce_ablated - ce_clean: > 0 when the feature helps the model predict."""
    tokens: int
    """Predicted tokens the means are over."""
    per_context: list[float]
    """delta on each context."""


class Attribution(NamedTuple):
    sequence: int
    position: int
    """The token whose activation is explained."""
    token_ids: np.ndarray
    """Tokens 0..position of the sequence."""
    scores: np.ndarray
    """Attribution of each of those tokens (same length)."""
    activation: float
    method: str


class FeatureModel:
    """An analysis's SAE, model and token store, loaded once for several features."""

    def __init__(self, ws: Workspace, folder: Any, loaded: LoadedModel | None = None) -> None:
        self.reader = FeatureReader(folder)
        prov = self.reader.manifest.provenance
        self.sae, self.meta = open_sae(ws, prov.sae)
        self.sae = self.sae.float()
        self.threshold = sae_threshold(self.meta.get("metadata") or {})
        if self.sae.cfg.transcoder:
            raise InvalidInputError("Ablation and attribution work on SAEs, not transcoders.",
                                    "Choose an analysis of an SAE.")
        self.loaded = loaded or load_model(ws, prov.model)
        self.sae = self.sae.to(self.loaded.device)
        self.hook = prov.hook
        self.tokens = open_tokenized(ws, prov.tokenized)

    def sequence(self, seq: int) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokens.slice(seq, seq + 1)
        dev = self.loaded.device
        return (torch.from_numpy(ids.astype(np.int64)).to(dev),
                torch.from_numpy(mask.astype(np.int64)).to(dev))

    def feature_activation(self, h: Tensor, feature: int) -> Tensor:
        return self.sae.encode(h.float())[..., feature]

    @torch.no_grad()
    def ablate(self, feature: int, n_contexts: int = 10) -> AblationEffect:
        W_f = self.sae.W_dec_FO[feature].float()

        def remove(h: Tensor) -> Tensor:
            return h.float() - self.feature_activation(h, feature)[..., None] * W_f

        clean_all, ablated_all, per_context = [], [], []
        for ex in self.reader.top_examples(feature, n_contexts):
            ids, mask = self.sequence(ex.sequence)
            first = int(ex.positions[np.flatnonzero(ex.activations > 0)[0]])
            valid = mask[:, 2:].bool().clone()
            valid[:, : max(first - 1, 0)] = False  # predictions made at the firing token on
            clean = self.loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            with replace_site(self.loaded, self.hook, remove,
                              lambda h: token_mask(h, self.threshold)):
                ablated = self.loaded.model(input_ids=ids, attention_mask=mask,
                                            use_cache=False).logits
            c, a = _next_token_ce(clean, ids)[valid], _next_token_ce(ablated, ids)[valid]
            if c.numel():
                clean_all.append(c)
                ablated_all.append(a)
                per_context.append(float((a - c).mean()))
        if not clean_all:
            raise InvalidInputError(f"Feature {feature} has no context to ablate on.",
                                    "Choose a live feature («do:list_features»).")
        c, a = torch.cat(clean_all), torch.cat(ablated_all)
        return AblationEffect(feature, float(c.mean()), float(a.mean()), float((a - c).mean()),
                              int(c.numel()), per_context)

    def attribute(self, feature: int, sequence: int, position: int, method: str = "grad",
                  steps: int = 16) -> Attribution:
        if method not in ("grad", "ig"):
            raise InvalidInputError(f"Unknown attribution method {method!r}.",
                                    "Use grad (activation x gradient) or ig (integrated gradients).")
        ids, mask = self.sequence(sequence)
        ids, mask = ids[:, : position + 1], mask[:, : position + 1]
        embed = self.loaded.model.get_input_embeddings()
        with torch.no_grad():
            emb = embed(ids).float()
        alphas = [1.0] if method == "grad" else [(i + 0.5) / steps for i in range(steps)]
        total = torch.zeros_like(emb)
        layer, site = parse_hook_key(self.hook)
        with torch.no_grad(), capture(self.loaded, [(layer, site)], stop_early=True) as seen:
            forward(self.loaded, ids, mask)
            act = float(self.feature_activation(seen[self.hook][0, position], feature))
        for alpha in alphas:
            x = (emb * alpha).to(self.loaded.dtype).requires_grad_(True)
            with capture(self.loaded, [(layer, site)], stop_early=True) as seen:
                forward(self.loaded, None, mask, inputs_embeds=x)
            a_f = self.feature_activation(seen[self.hook][0, position], feature)
            if not a_f.requires_grad:  # silent at this input: no gradient to follow
                continue
            (grad,) = torch.autograd.grad(a_f, x, allow_unused=True)
            if grad is not None:
                total += grad.float()
        scores = ((total / len(alphas)) * emb).sum(-1)[0]  # [T]
        return Attribution(sequence, position, ids[0].cpu().numpy(), scores.detach().cpu().numpy(),
                           act, method)
