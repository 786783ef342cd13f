"""The activation store: chunked ``.npy`` files with a JSON manifest, read by memory map.

Layout of ``activations/NAME/``::

    manifest.json                 model, dataset, hook points, dtype, chunks, statistics,
                                  massive-token report (see mistudio.core.activations.massive)
    positions/chunk_00000.npy     int32 [rows, 2]: (sequence index, position) of every row
    norms/chunk_00000.npy         float32 [rows, n_hook_points]: each row's norm per hook point
    layers.6.resid_post/chunk_00000.npy   float16 [rows, d_model]
    massive/HOOK.npy              int64: rows flagged as massive at that hook point
    massive_rows.npy              int64: rows flagged as massive (left out of training,
                                  evaluation and analysis by default)

Every hook point of a set has the same rows in the same order, so row ``i`` of
``layers.6.mlp_in`` and of ``layers.6.mlp_out`` come from the same token (transcoders train on
such pairs). Rows can always be traced back to their text through ``positions`` and the
tokenized set named in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mistudio.core.activations.massive import DEFAULT_FACTOR, flag_massive
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError
from mistudio.core.store.files import read_manifest, write_json_atomic, write_npy_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.manifests import ActivationsManifest, Chunk, MassiveReport, NormStats
from mistudio.core.store.workspace import Workspace

POSITIONS = "positions"
NORMS = "norms"
MASSIVE_ROWS = "massive_rows.npy"
MASSIVE_DIR = "massive"
"""``massive/HOOK.npy``: the rows flagged at each hook point."""


def chunk_file(folder: Path, key: str, index: int) -> Path:
    return folder / key / f"chunk_{index:05d}.npy"


class ActivationSet:
    """Read-only view of a stored activation set; nothing is loaded until it is indexed."""

    def __init__(self, path: Path, manifest: ActivationsManifest) -> None:
        self.path = path
        self.manifest = manifest
        self.keys: list[str] = list(manifest.hook_points)
        self.d_model: int = int(manifest.d_model)
        self.chunks: list[Chunk] = list(manifest.chunks)
        try:
            self.dtype = np.dtype(manifest.config["dtype"])
        except (KeyError, TypeError) as err:
            raise CorruptedError(f"The activation manifest in {path} is incomplete ({err}).",
                                 "Extract it again («overwrite»).") from err
        if not self.keys or not self.d_model:
            raise CorruptedError(f"The activation manifest in {path} names no hook points.",
                                 "Extract it again («overwrite»).")
        self._starts = np.concatenate([[0], np.cumsum([c.rows for c in self.chunks])])
        self.n_rows = int(self._starts[-1])

    def chunk(self, key: str, index: int) -> np.ndarray:
        """One chunk of one hook point, memory-mapped: [rows, d_model]."""
        if key not in self.keys and key not in (POSITIONS, NORMS):
            raise InvalidInputError(f"This activation set has no hook point {key!r}.",
                                    f"It has: {', '.join(self.keys)}.")
        path = chunk_file(self.path, key, index)
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CorruptedError(f"Activation chunk {path} is missing or damaged ({err}).",
                                 "Extract the set again («overwrite»).") from err
        if arr.shape[0] != self.chunks[index].rows:
            raise CorruptedError(f"Activation chunk {path} has {arr.shape[0]} rows, the manifest "
                                 f"says {self.chunks[index].rows}.",
                                 "Extract the set again («overwrite»).")
        return arr

    def positions(self, index: int) -> np.ndarray:
        """(sequence, position) of every row of chunk ``index``: int32 [rows, 2]."""
        return self.chunk(POSITIONS, index)

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` across chunk boundaries, as a float32 array [n, d_model]."""
        return self.gather(key, start, stop).astype(np.float32, copy=False)

    def row_positions(self, start: int, stop: int) -> np.ndarray:
        return self.gather(POSITIONS, start, stop)

    def gather(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` across chunk boundaries, in the stored dtype."""
        stop = min(stop, self.n_rows)
        parts = []
        first = max(int(np.searchsorted(self._starts, start, side="right")) - 1, 0)
        for i in range(first, len(self.chunks)):
            lo, hi = int(self._starts[i]), int(self._starts[i + 1])
            if lo >= stop:
                break
            parts.append(self.chunk(key, i)[max(start, lo) - lo: min(stop, hi) - lo])
        if not parts:
            width = {POSITIONS: 2, NORMS: len(self.keys)}.get(key, self.d_model)
            dtype = {POSITIONS: np.int32, NORMS: np.float32}.get(key, self.dtype)
            return np.zeros((0, width), dtype)
        return np.concatenate(parts)

    @property
    def config(self) -> dict[str, Any]:
        """How the set was extracted (the ExtractConfig as JSON, with the tokenized set)."""
        return self.manifest.config

    @property
    def model(self) -> str:
        return self.manifest.provenance.model or self.config["model"]

    @property
    def tokenized(self) -> str:
        return self.manifest.provenance.tokenized or self.config["tokenized"]

    def norm_stats(self, key: str) -> NormStats:
        """Norm statistics over the rows that are kept (massive rows left out)."""
        return self.manifest.stats[key]

    # -- massive tokens (mistudio.core.activations.massive) ---------------------------------
    @property
    def massive(self) -> MassiveReport:
        """The manifest's massive-token report (count, per-hook thresholds, positions)."""
        return self.manifest.massive or MassiveReport(DEFAULT_FACTOR)

    def massive_rows(self, key: str | None = None) -> np.ndarray:
        """Sorted int64 indices of the rows flagged at hook point ``key`` (None: at any).
        Sets extracted before flags were kept per hook point have only the pooled ones."""
        if not self.massive.count:
            return np.zeros(0, np.int64)
        path = self.path / MASSIVE_DIR / f"{key}.npy" if key else None
        if path is None or not path.is_file():
            path = self.path / MASSIVE_ROWS
        try:
            return np.load(path).astype(np.int64)
        except (OSError, ValueError) as err:
            raise CorruptedError(f"The massive-token flags of {self.path} are damaged ({err}).",
                                 "Extract the set again («overwrite»).") from err

    def excluded_rows(self, keep_massive: bool = False,
                      keys: Sequence[str | None] = (None,)) -> np.ndarray:
        """Rows that training, evaluation and analysis at hook points ``keys`` leave out: those
        flagged at any of them (``(None,)``: at any hook point of the set)."""
        if keep_massive:
            return np.zeros(0, np.int64)
        wanted = [k for k in keys if k is not None] or [None]
        return np.unique(np.concatenate([self.massive_rows(k) for k in wanted])).astype(np.int64)

    def kept_mask(self, start: int, stop: int, keep_massive: bool = False,
                  keys: Sequence[str | None] = (None,)) -> np.ndarray:
        """bool [stop - start]: which of rows ``start:stop`` are used at hook points ``keys``."""
        mask = np.ones(max(stop - start, 0), dtype=bool)
        rows = self.excluded_rows(keep_massive, keys)
        inside = rows[(rows >= start) & (rows < stop)]
        mask[inside - start] = False
        return mask


def finish_massive(folder: Path, manifest: ActivationsManifest, factor: float) -> None:
    """Flag massive rows from the stored norms; fill the manifest's ``massive`` and ``stats``
    sections and write ``massive_rows.npy`` (the caller writes the manifest)."""
    acts = ActivationSet(folder, manifest)
    norms, positions = _all_norms(acts), acts.row_positions(0, acts.n_rows)
    flags = flag_massive(norms, acts.keys, positions, acts.d_model, factor)
    write_npy_atomic(folder / MASSIVE_ROWS, flags.rows)
    (folder / MASSIVE_DIR).mkdir(exist_ok=True)
    for key, rows in flags.by_hook.items():
        write_npy_atomic(folder / MASSIVE_DIR / f"{key}.npy", rows)
    manifest.massive = flags.report
    manifest.stats = flags.stats
    manifest.summary.massive_tokens = flags.report.count


def _all_norms(acts: ActivationSet) -> np.ndarray:
    """[n_rows, n_keys] float32 norms: the stored ones, or computed from the rows for sets
    extracted before norms were stored (and then stored, so it happens once)."""
    out = []
    for i in range(len(acts.chunks)):
        path = chunk_file(acts.path, NORMS, i)
        if path.is_file():
            out.append(acts.chunk(NORMS, i))
            continue
        cols = [np.linalg.norm(acts.chunk(k, i).astype(np.float32), axis=1) for k in acts.keys]
        arr = np.stack(cols, axis=1).astype(np.float32)  # [rows, n_keys]
        try:
            path.parent.mkdir(exist_ok=True)
            write_npy_atomic(path, arr)
        except OSError:
            pass  # a read-only workspace: computed again next time
        out.append(arr)
    return np.concatenate(out) if out else np.zeros((0, len(acts.keys)), np.float32)


def open_activations(ws: Workspace, name: str) -> ActivationSet:
    art = ws.catalog.get("activations", name)
    path = Path(art.path)
    manifest = read_manifest(path, f"activation set {name!r}",
                             f"Extract it again («name={name}», «overwrite»).")
    if manifest.status != "complete":
        done = sum(c.rows for c in manifest.chunks)
        raise InvalidInputError(
            f"Activation set {name!r} is incomplete ({done:,} tokens so far).",
            "«do:resume».")
    if manifest.massive is None:  # extracted before massive tokens were flagged: flag once
        finish_massive(path, manifest, DEFAULT_FACTOR)
        try:
            write_json_atomic(path / MANIFEST, manifest.to_json())
            ws.register(manifest, path)
        except OSError:
            pass  # read-only: flagged again next time
    return ActivationSet(path, manifest)
