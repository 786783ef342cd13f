"""Examples of a feature, read lazily from an analysis: max-activating contexts, contexts from
activation quantiles, non-activating contexts (random and hard), and per-token features.

Every context is a window of tokens around one token, with the feature's activation on each
token of the window, so the browser can draw a heatmap and the explainers can read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.store.files import atomic_write, read_manifest
from mistudio.core.store.manifests import FeaturesManifest

BEFORE, AFTER = 24, 8
"""Tokens shown before and after the marked token (a 33-token window, as delphi uses ~32)."""


class Example(NamedTuple):
    """One context of a feature."""

    sequence: int
    """Sequence index in the tokenized set."""
    positions: np.ndarray
    """Position in the sequence of each window token."""
    token_ids: np.ndarray
    activations: np.ndarray
    """The feature's activation on each window token (0 where it is silent)."""
    marked: int
    """Index in the window of the token the example was chosen for (the peak, for top examples)."""
    activation: float
    """The feature's activation on the marked token."""
    kind: str
    """top, quantile N (1 = lowest band), random or hard negative."""


class FeatureReader:
    """Lazy per-feature access to an analysis folder (the sparse store is memory-mapped)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest: FeaturesManifest = read_manifest(
            folder, f"analysis at {folder}", "«do:analyze» again.")
        load = lambda n: np.load(folder / n, mmap_mode="r")  # noqa: E731
        self.rows = load("rows.npy")  # [n_rows, 3]: sequence, position, token
        self.top_values, self.top_sequences = load("top_values.npy"), load("top_sequences.npy")
        self.col_ptr, self.col_rows, self.col_vals = (load("csc_indptr.npy"), load("csc_rows.npy"),
                                                      load("csc_values.npy"))
        self.row_ptr, self.row_feats, self.row_vals = (load("csr_indptr.npy"),
                                                       load("csr_features.npy"),
                                                       load("csr_values.npy"))
        self.histograms = load("histograms.npy")
        self.n_rows = len(self.rows)
        self._by_token: tuple[np.ndarray, np.ndarray] | None = None
        self.d_sae = len(self.col_ptr) - 1

    # -- sparse lookups -------------------------------------------------------------------------
    def firing(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (ascending) where ``feature`` fires, and its activations there."""
        lo, hi = int(self.col_ptr[feature]), int(self.col_ptr[feature + 1])
        return np.asarray(self.col_rows[lo:hi]), np.asarray(self.col_vals[lo:hi])

    def token_features(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Features active on one analysed token, and their activations (strongest first)."""
        lo, hi = int(self.row_ptr[row]), int(self.row_ptr[row + 1])
        feats, vals = np.asarray(self.row_feats[lo:hi]), np.asarray(self.row_vals[lo:hi])
        order = np.argsort(-vals, kind="stable")
        return feats[order], vals[order]

    def sequence_rows(self, sequence: int) -> tuple[int, int]:
        seqs = self.rows[:, 0]
        return (int(np.searchsorted(seqs, sequence, "left")),
                int(np.searchsorted(seqs, sequence, "right")))

    def _window(self, feature: int, row: int, kind: str,
                firing: tuple[np.ndarray, np.ndarray] | None = None) -> Example:
        seq = int(self.rows[row, 0])
        r0, r1 = self.sequence_rows(seq)
        lo, hi = max(r0, row - BEFORE), min(r1, row + AFTER + 1)
        f_rows, f_vals = firing if firing is not None else self.firing(feature)
        a, z = np.searchsorted(f_rows, lo), np.searchsorted(f_rows, hi)
        acts = np.zeros(hi - lo, np.float32)
        acts[f_rows[a:z] - lo] = f_vals[a:z]
        return Example(seq, np.asarray(self.rows[lo:hi, 1]), np.asarray(self.rows[lo:hi, 2]), acts,
                       row - lo, float(acts[row - lo]), kind)

    # -- examples -------------------------------------------------------------------------------
    def top_examples(self, feature: int, n: int | None = None) -> list[Example]:
        """The contexts with the highest per-sequence maxima, each centred on its peak; a context
        whose tokens repeat an earlier one (a passage the corpus holds twice) is skipped."""
        firing = self.firing(feature)
        f_rows, f_vals = firing
        out: list[Example] = []
        seen: set[bytes] = set()
        for seq, val in zip(self.top_sequences[feature], self.top_values[feature], strict=True):
            if seq < 0 or val <= 0 or (n is not None and len(out) >= n):
                break
            r0, r1 = self.sequence_rows(int(seq))
            a, z = np.searchsorted(f_rows, r0), np.searchsorted(f_rows, r1)
            if z <= a:
                continue
            peak = int(f_rows[a + int(np.argmax(f_vals[a:z]))])
            example = self._window(feature, peak, "top", firing)
            key = np.ascontiguousarray(example.token_ids).tobytes()
            if key not in seen:
                seen.add(key)
                out.append(example)
        return out

    def quantile_examples(self, feature: int, n_bins: int = 10, per_bin: int = 2,
                          seed: int = 0) -> list[Example]:
        """Contexts sampled from equal-count bands of the feature's activations (lowest band
        first), so that descriptions are not drawn only from the extremes."""
        firing = self.firing(feature)
        f_rows, f_vals = firing
        if len(f_rows) == 0:
            return []
        rng = np.random.default_rng([seed, feature])
        order = np.argsort(f_vals, kind="stable")
        out = []
        for b, band in enumerate(np.array_split(order, n_bins)):
            if len(band) == 0:
                continue
            for i in rng.choice(band, size=min(per_bin, len(band)), replace=False):
                out.append(self._window(feature, int(f_rows[i]), f"quantile {b + 1}", firing))
        return out

    def random_negatives(self, feature: int, n: int, seed: int = 0) -> list[Example]:
        """Random tokens where the feature is silent."""
        f_rows, _ = self.firing(feature)
        rng = np.random.default_rng([seed, feature, 1])
        silent = np.setdiff1d(rng.choice(self.n_rows, size=min(self.n_rows, 4 * n + 8),
                                         replace=False), f_rows)
        return [self._window(feature, int(r), "random negative") for r in silent[:n]]

    def rows_with_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """Rows whose token is one of ``token_ids`` (ascending), from a token index built once
        per reader instead of a scan of every row per feature."""
        if self._by_token is None:
            tokens = np.asarray(self.rows[:, 2])
            order = np.argsort(tokens, kind="stable")
            self._by_token = (tokens[order], order)
        sorted_tokens, order = self._by_token
        ids = np.asarray(token_ids)
        lo = np.searchsorted(sorted_tokens, ids, "left")
        hi = np.searchsorted(sorted_tokens, ids, "right")
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([order[a:z] for a, z in zip(lo, hi, strict=True)]))

    def hard_negatives(self, feature: int, token_ids: np.ndarray, n: int,
                       seed: int = 0) -> list[Example]:
        """Tokens equal to ``token_ids`` (the feature's usual triggers) where it stays silent."""
        f_rows, _ = self.firing(feature)
        silent = np.setdiff1d(self.rows_with_tokens(token_ids), f_rows)
        if len(silent) == 0:
            return []
        rng = np.random.default_rng([seed, feature, 2])
        pick = rng.choice(silent, size=min(n, len(silent)), replace=False)
        return [self._window(feature, int(r), "hard negative") for r in np.sort(pick)]


TOKEN_TEXTS_FILE = "token_texts.json"
"""Readable text of every token an analysis shows (its rows and logit-lens tokens), so that
browsing it needs no tokenizer."""


class TokenText:
    """Readable text of single tokens, cached (leading spaces kept, newlines shown as ⏎), from
    a tokenizer or from an analysis's stored token texts."""

    def __init__(self, tokenizer: Any = None, known: dict[int, str] | None = None) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = dict(known or {})

    def __call__(self, token_id: int) -> str:
        t = self._cache.get(int(token_id))
        if t is None:
            t = (self.tokenizer.decode([int(token_id)]).replace("\n", "⏎")
                 if self.tokenizer is not None else f"<{int(token_id)}>")
            self._cache[int(token_id)] = t
        return t

    def many(self, ids: Any) -> list[str]:
        return [self(int(i)) for i in ids]

    def known_ids(self) -> list[int]:
        """The ids whose text is at hand without the tokenizer."""
        return list(self._cache)


def write_token_texts(folder: Path, tokenizer: Any, extra_ids: np.ndarray) -> int:
    """Store the text of every token in ``rows.npy`` and of ``extra_ids`` (logit lens)."""
    rows = np.load(folder / "rows.npy", mmap_mode="r")
    ids = np.union1d(np.unique(np.asarray(rows[:, 2])), np.unique(extra_ids))
    text = TokenText(tokenizer)
    with atomic_write(folder / TOKEN_TEXTS_FILE, "w", encoding="utf-8") as fh:
        json.dump({str(int(i)): text(int(i)) for i in ids}, fh, ensure_ascii=False)
    return len(ids)


class _LazyTokenizer:
    """A tokenizer loaded on its first use."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load, self._tokenizer = load, None

    def decode(self, ids: list[int]) -> str:
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer.decode(ids)


def analysis_token_text(folder: Path, load_tokenizer: Callable[[], Any]) -> TokenText:
    """The analysis's stored token texts; ``load_tokenizer()`` is called only for a token they
    lack (so a run that finds nothing to do never loads transformers)."""
    stored = stored_token_text(folder)
    known = {i: stored(i) for i in stored.known_ids()} if stored is not None else {}
    return TokenText(_LazyTokenizer(load_tokenizer), known)


def stored_token_text(folder: Path) -> TokenText | None:
    """The analysis's token texts, or None for analyses made before they were stored."""
    path = folder / TOKEN_TEXTS_FILE
    if not path.is_file():
        return None
    try:
        known = {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError):
        return None
    return TokenText(None, known)
