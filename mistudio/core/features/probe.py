"""Which features fire on a text the user types: the model runs to the SAE's hook point, the SAE
encodes every token, and the strongest features per token come back with their activations.

:class:`TextProbe` keeps the model and SAE loaded, so a panel can probe one text after another.
Position 0 (BOS, or the attention sink whose norm is an outlier) and massive tokens (sinks
elsewhere, :mod:`mistudio.core.activations.massive`) are reported silent, as the analysis and the training
data leave them out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from mistudio.core.activations.massive import sae_threshold, token_mask
from mistudio.core.features.examples import TokenText
from mistudio.core.features.store import open_features
from mistudio.core.models.adapters import parse_hook_key
from mistudio.core.models.hooks import capture, forward
from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.io import open_sae
from mistudio.core.store.files import read_manifest
from mistudio.core.store.workspace import Workspace

MAX_PROBE_TOKENS = 2048
"""Longer texts are refused: the probe runs on the UI's behalf and should answer in seconds."""


class TextActivations(NamedTuple):
    """Features on each token of a probed text."""

    token_ids: np.ndarray
    """[T] token ids (with the BOS the tokenizer adds, if any)."""
    tokens: list[str]
    """[T] readable text of each token (newlines as ⏎)."""
    top_features_TK: np.ndarray
    """[T, k] strongest features per token, strongest first; -1 where fewer fire."""
    top_values_TK: np.ndarray
    """[T, k] their activations (0 where padded)."""
    watched_TW: np.ndarray
    """[T, W] activations of the features asked for with ``watch`` (in that order)."""
    massive_T: np.ndarray | None = None
    """[T] bool: tokens left silent because their norm marks them as massive."""


class TextProbe:
    """An analysis's SAE and model, loaded once for many texts."""

    def __init__(self, ws: Workspace, analysis: str, device: str = "auto",
                 loaded: LoadedModel | None = None) -> None:
        store = open_features(ws, analysis)
        prov = read_manifest(store.folder, f"analysis {analysis}",
                             f"«do:analyze={analysis}» again.").provenance
        self.sae, saelens_cfg = open_sae(ws, prov.sae)
        self.threshold = sae_threshold(saelens_cfg.get("metadata") or {})
        self.hook = prov.hook
        self.loaded = loaded or load_model(ws, prov.model, device=device)
        self.sae = self.sae.float().to(self.loaded.device)
        self.text = TokenText(self.loaded.tokenizer)
        self.d_sae = self.sae.cfg.d_sae

    @torch.no_grad()
    def run(self, text: str, k: int = 8, watch: tuple[int, ...] = ()) -> TextActivations:
        if not text.strip():
            raise InvalidInputError("There is no text to analyse.", "Type or paste some text.")
        ids = self.loaded.tokenizer(text, return_tensors="pt")["input_ids"][0]
        return self.run_ids(ids.numpy(), k, watch)

    @torch.no_grad()
    def run_ids(self, token_ids: np.ndarray, k: int = 8,
                watch: tuple[int, ...] = ()) -> TextActivations:
        """The same for a sequence already tokenized."""
        if len(token_ids) > MAX_PROBE_TOKENS:
            raise InvalidInputError(f"The text has {len(token_ids):,} tokens; the probe reads "
                                    f"at most {MAX_PROBE_TOKENS:,}.", "Paste a shorter passage.")
        bad = [f for f in watch if not 0 <= f < self.d_sae]
        if bad:
            raise InvalidInputError(f"Feature {bad[0]} is out of range: the SAE has "
                                    f"{self.d_sae:,} features.", "Pick an index in that range.")
        ids = torch.as_tensor(np.asarray(token_ids, np.int64))[None].to(self.loaded.device)
        layer, site = parse_hook_key(self.hook)
        with capture(self.loaded, [(layer, site)], stop_early=True) as seen:
            forward(self.loaded, ids, torch.ones_like(ids))
        h_TD = seen[self.hook][0].float()
        acts_TF = self.sae.encode(h_TD)  # [T, d_sae]
        acts_TF[0] = 0.0  # position 0 is outside what the SAE was trained on
        massive_T = ~token_mask(h_TD, self.threshold)
        massive_T[0] = False
        acts_TF[massive_T] = 0.0
        k = min(k, self.d_sae)
        top = acts_TF.topk(k, dim=-1)
        values_TK = top.values.clamp_min(0.0).cpu().numpy()
        feats_TK = np.where(values_TK > 0, top.indices.cpu().numpy(), -1)
        watched = acts_TF[:, list(watch)].cpu().numpy() if watch else np.zeros((len(ids[0]), 0))
        token_ids = ids[0].cpu().numpy()
        return TextActivations(token_ids, self.text.many(token_ids), feats_TK,
                               values_TK.astype(np.float32), watched.astype(np.float32),
                               massive_T.cpu().numpy())


def probe_text(ws: Workspace, analysis: str, text: str, k: int = 8,
               watch: tuple[int, ...] = (), device: str = "auto") -> TextActivations:
    """One text, loading what it needs (the app keeps a :class:`TextProbe` instead)."""
    return TextProbe(ws, analysis, device).run(text, k, watch)


def strongest(acts: TextActivations, n: int = 10) -> list[tuple[int, float, int]]:
    """The features with the highest activation anywhere in the text:
    (feature, peak activation, token index of the peak), strongest first."""
    best: dict[int, tuple[float, int]] = {}
    for t, (feats, vals) in enumerate(zip(acts.top_features_TK, acts.top_values_TK, strict=True)):
        for f, v in zip(feats.tolist(), vals.tolist(), strict=True):
            if f >= 0 and v > best.get(f, (0.0, 0))[0]:
                best[f] = (v, t)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:n]
    return [(f, v, t) for f, (v, t) in ranked]


def describe(acts: TextActivations, labels: Any, n: int = 10) -> list[dict[str, Any]]:
    """:func:`strongest` as plain rows, with labels (a column of the feature table)."""
    return [{"feature": f, "activation": round(v, 4), "token": acts.tokens[t], "position": t,
             "label": str(labels[f]) if labels is not None else ""}
            for f, v, t in strongest(acts, n)]
