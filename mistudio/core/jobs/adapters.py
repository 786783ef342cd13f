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
    html: str | None
    """The first sequences, one hoverable span per token (None: the set has no stored preview;
    ``store_tokenized_preview`` makes it)."""
    policy: str
    """Where the attention sink sits, in a sentence."""
    stats: Any
    """The set's document-length histogram and top tokens."""


def preview_tokenized(ws: Workspace, name: str, task: TaskState | None = None) -> TokenizedPreview:
    """A tokenized set's first sequences as HTML (from the preview stored with it), its BOS
    policy and its statistics: reading files only."""
    from mistudio.core.data.token_preview import stored_preview
    from mistudio.core.data.tokenization import open_tokenized

    tokens = open_tokenized(ws, name)
    return _tokenized_preview(tokens, stored_preview(tokens.path))


def store_tokenized_preview(ws: Workspace, name: str,
                            task: TaskState | None = None) -> TokenizedPreview:
    """Store the preview of a set made before it was stored (loads the tokenizer once), and
    return the set's preview."""
    from mistudio.core.data.token_preview import PREVIEW_SEQUENCES, preview_tokens, write_preview
    from mistudio.core.data.tokenization import open_tokenized
    from mistudio.core.models.registry import load_tokenizer

    tokens = open_tokenized(ws, name)
    tokenizer = load_tokenizer(ws, tokens.manifest.config["model"])
    preview = preview_tokens(*tokens.slice(0, PREVIEW_SEQUENCES), tokenizer)
    write_preview(tokens.path, preview)
    return _tokenized_preview(tokens, preview)


def _tokenized_preview(tokens: Any, preview: Any) -> TokenizedPreview:
    prov = tokens.manifest.provenance
    policy = (f"Every sequence starts with BOS ({prov.bos_token or prov.bos_token_id}), where "
              "the attention sink sits; extraction leaves it out."
              if prov.bos_token_id is not None else
              "No BOS first: the text's first tokens take the attention sink (extraction "
              "flags their huge norms and training leaves them out).")
    return TokenizedPreview(_preview_html(preview) if preview is not None else None, policy,
                            tokens.manifest.stats)


def _preview_html(preview: Any) -> str:
    parts = []
    for seq in preview:
        for i, token in enumerate(seq):
            shade = "#f3d9d9" if i % 2 else "#d9e6f3"
            text = html.escape(token.text).replace("\n", "⏎")
            parts.append(f'<a href="tok:{token.id}" style="background:{shade};color:#111;'
                         f'text-decoration:none">{text}</a>')
        parts.append("<br><br>")
    return "".join(parts)


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
