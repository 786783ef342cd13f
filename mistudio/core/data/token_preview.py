"""The first tokens of a tokenized set with their text, stored beside it (``preview.json``).

The Datasets tab shows a set's first sequences token by token. Decoding them needs the
model's tokenizer, and loading one imports transformers (seconds, in a process of its own);
storing the few hundred token texts when the set is made lets the tab show it by reading a
file. Sets made before the preview was stored get it once, from a job that loads the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.store.files import write_json_atomic

PREVIEW_FILE = "preview.json"
PREVIEW_SEQUENCES = 3
"""Sequences shown."""
PREVIEW_TOKENS = 160
"""Tokens shown of each (those the attention mask keeps)."""


class PreviewToken(NamedTuple):
    id: int
    text: str
    """As decoded alone (leading spaces kept, newlines as they are)."""


def preview_tokens(ids_NC: np.ndarray, mask_NC: np.ndarray,
                   tokenizer: Any) -> list[list[PreviewToken]]:
    """The first tokens of each sequence with their text."""
    out = []
    for row, keep in zip(ids_NC[:PREVIEW_SEQUENCES], mask_NC[:PREVIEW_SEQUENCES], strict=True):
        ids = [int(t) for t in row[keep.astype(bool)][:PREVIEW_TOKENS]]
        out.append([PreviewToken(t, tokenizer.decode([t])) for t in ids])
    return out


def write_preview(folder: Path, preview: list[list[PreviewToken]]) -> None:
    write_json_atomic(folder / PREVIEW_FILE,
                      {"sequences": [[[t.id, t.text] for t in seq] for seq in preview]})


def stored_preview(folder: Path) -> list[list[PreviewToken]] | None:
    """The stored preview, or None for a set made before it was stored (or one whose file
    cannot be read: the preview is made again, nothing else depends on it)."""
    try:
        data = json.loads((folder / PREVIEW_FILE).read_text(encoding="utf-8"))
        return [[PreviewToken(int(i), str(text)) for i, text in seq]
                for seq in data["sequences"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
