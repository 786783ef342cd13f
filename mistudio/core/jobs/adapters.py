"""Small jobs of the app that are not a stage's own function: previews, reading what an analysis
stored, a published SAE pulled with the app's online setting, the catalog rebuilt. Each takes the
job's workspace handle first, as :func:`~mistudio.core.jobs.center.in_workspace` calls it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.runtime.tasks import TaskState
from mistudio.core.store.workspace import Workspace


def preview_source(ws: Workspace, cfg: Any, task: TaskState | None = None) -> Any:
    """The columns of a dataset source and its first rows (the dataset dialog)."""
    from mistudio.core.data.sources import preview_source as preview

    return preview(cfg)


class TokenizedPreview(NamedTuple):
    html: str
    """The first sequences, one hoverable span per token."""
    policy: str
    """Where the attention sink sits, in a sentence."""
    stats: Any
    """The set's document-length histogram and top tokens."""


def preview_tokenized(ws: Workspace, name: str, task: TaskState | None = None) -> TokenizedPreview:
    """A tokenized set's first sequences as HTML, its BOS policy and its statistics."""
    from mistudio.core.data.tokenization import open_tokenized
    from mistudio.core.models.registry import load_tokenizer

    tokens = open_tokenized(ws, name)
    tok = load_tokenizer(ws, tokens.manifest.config["model"])
    ids, mask = tokens.slice(0, min(3, tokens.n_sequences))
    parts = []
    for row, m in zip(ids, mask, strict=True):
        for i, t in enumerate(row[m.astype(bool)][:160]):
            shade = "#f3d9d9" if i % 2 else "#d9e6f3"
            text = html.escape(tok.decode([int(t)])).replace("\n", "⏎")
            parts.append(f'<a href="tok:{int(t)}" style="background:{shade};color:#111;'
                         f'text-decoration:none">{text}</a>')
        parts.append("<br><br>")
    prov = tokens.manifest.provenance
    policy = (f"Every sequence starts with BOS ({prov.bos_token or prov.bos_token_id}), where "
              "the attention sink sits; extraction leaves it out."
              if prov.bos_token_id is not None else
              "No BOS first: the text's first tokens take the attention sink (extraction "
              "flags their huge norms and training leaves them out).")
    return TokenizedPreview("".join(parts), policy, tokens.manifest.stats)


def read_feature_map(ws: Workspace, analysis: str, task: TaskState | None = None) -> Any:
    """The analysis's cached feature map, or None when it has not been computed yet."""
    from mistudio.core.features.feature_map import cached_map

    return cached_map(ws, analysis)


def token_texts(ws: Workspace, folder: str, task: TaskState | None = None) -> Any:
    """The token texts an analysis stored (None for analyses made before they were)."""
    from mistudio.core.features.examples import stored_token_text

    return stored_token_text(Path(folder))


def store_token_texts(ws: Workspace, folder: str, model: str,
                      task: TaskState | None = None) -> Any:
    """Store the token texts of an analysis made before they were stored (loads the
    tokenizer once), and return them."""
    from mistudio.core.features.examples import stored_token_text, write_token_texts
    from mistudio.core.features.store import FeatureStore
    from mistudio.core.models.registry import load_tokenizer

    tokenizer = load_tokenizer(ws, model)
    store = FeatureStore(Path(folder))
    write_token_texts(Path(folder), tokenizer, np.concatenate(
        [store.column("logit_pos_ids").ravel(), store.column("logit_neg_ids").ravel()]))
    return stored_token_text(Path(folder))


def correlate(ws: Workspace, folder: str, features: list[int],
              task: TaskState | None = None) -> tuple[list[int], np.ndarray]:
    """The Pearson correlation of a few features' activations (the Correlations view)."""
    from mistudio.core.features.interpret import feature_correlation

    return features, feature_correlation(Path(folder), features)


def pull_sae(ws: Workspace, release: str, sae_id: str, name: str | None, model: str | None,
             online: bool, task: TaskState | None = None) -> Any:
    """A published SAE, downloaded (with the app's online setting) or found in the cache."""
    from mistudio.core.runtime.online import set_online
    from mistudio.core.sae.releases import pull_sae as pull

    set_online(online)
    return pull(ws, release, sae_id, name, model, task)


def rebuild_catalog(ws: Workspace, task: TaskState | None = None) -> str:
    """Re-index the workspace from its manifests; one line saying what was done."""
    from mistudio.core.store.catalog import rebuild_catalog as rebuild

    ws.close()
    backup, result = rebuild(ws.root)
    return (f"Re-indexed {result.count} artifacts"
            + (f"; the damaged catalog is kept as {backup}" if backup else "")
            + (f"; {len(result.skipped)} folders not indexed" if result.skipped else "") + ".")
