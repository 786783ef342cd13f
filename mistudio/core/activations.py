"""The activation store: chunked ``.npy`` files with a JSON manifest, read by memory map.

Layout of ``activations/NAME/``::

    manifest.json                 model, dataset, hook points, dtype, chunks, statistics
    positions/chunk_00000.npy     int32 [rows, 2]: (sequence index, position) of every row
    layers.6.resid_post/chunk_00000.npy   float16 [rows, d_model]

Every hook point of a set has the same rows in the same order, so row ``i`` of
``layers.6.mlp_in`` and of ``layers.6.mlp_out`` come from the same token (transcoders train on
such pairs). Rows can always be traced back to their text through ``positions`` and the
tokenized set named in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mistudio.core.errors import CorruptedError, InvalidInputError
from mistudio.core.workspace import MANIFEST, Workspace, read_json

POSITIONS = "positions"


def chunk_file(folder: Path, key: str, index: int) -> Path:
    return folder / key / f"chunk_{index:05d}.npy"


@dataclass(frozen=True)
class NormStats:
    """Norm statistics of one hook point's activations, for normalisation during training."""

    count: int
    mean_norm: float
    std_norm: float
    scale_to_sqrt_d: float
    """Multiply activations by this to make their mean norm sqrt(d_model) (the SAELens convention)."""


class ActivationSet:
    """Read-only view of a stored activation set; nothing is loaded until it is indexed."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        fix = "Extract it again with --overwrite."
        try:
            self.keys: list[str] = list(manifest["hook_points"])
            self.d_model: int = int(manifest["d_model"])
            self.chunks: list[dict[str, Any]] = list(manifest["chunks"])
            self.dtype = np.dtype(manifest["config"]["dtype"])
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptedError(f"The activation manifest in {path} is incomplete ({err}).",
                                 fix) from err
        self._starts = np.concatenate([[0], np.cumsum([c["rows"] for c in self.chunks])])
        self.n_rows = int(self._starts[-1])

    def chunk(self, key: str, index: int) -> np.ndarray:
        """One chunk of one hook point, memory-mapped: [rows, d_model]."""
        if key not in self.keys and key != POSITIONS:
            raise InvalidInputError(f"This activation set has no hook point {key!r}.",
                                    f"It has: {', '.join(self.keys)}.")
        path = chunk_file(self.path, key, index)
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CorruptedError(f"Activation chunk {path} is missing or damaged ({err}).",
                                 "Extract the set again with --overwrite.") from err
        if arr.shape[0] != self.chunks[index]["rows"]:
            raise CorruptedError(f"Activation chunk {path} has {arr.shape[0]} rows, the manifest "
                                 f"says {self.chunks[index]['rows']}.",
                                 "Extract the set again with --overwrite.")
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
            width = 2 if key == POSITIONS else self.d_model
            return np.zeros((0, width), np.int32 if key == POSITIONS else self.dtype)
        return np.concatenate(parts)

    def norm_stats(self, key: str) -> NormStats:
        s = self.manifest["stats"][key]
        return NormStats(int(s["count"]), float(s["mean_norm"]), float(s["std_norm"]),
                         float(s["scale_to_sqrt_d"]))


def summarize_norms(chunks: list[dict[str, Any]], keys: list[str], d_model: int) -> dict[str, Any]:
    """Combine per-chunk norm sums into mean / std / scale per hook point."""
    out = {}
    for key in keys:
        n = sum(c["norms"][key]["n"] for c in chunks)
        s1 = sum(c["norms"][key]["sum"] for c in chunks)
        s2 = sum(c["norms"][key]["sum_sq"] for c in chunks)
        mean = s1 / n if n else 0.0
        std = max(s2 / n - mean * mean, 0.0) ** 0.5 if n else 0.0
        out[key] = {"count": n, "mean_norm": mean, "std_norm": std,
                    "scale_to_sqrt_d": (d_model ** 0.5) / mean if mean > 0 else 1.0}
    return out


def open_activations(ws: Workspace, name: str) -> ActivationSet:
    art = ws.catalog.get("activations", name)
    path = Path(art.path)
    manifest = read_json(path / MANIFEST, f"activation set {name!r}",
                         f"Extract it again with `mistudio extract ... --name {name} --overwrite`.")
    if manifest.get("status") != "complete":
        done = sum(c.get("rows", 0) for c in manifest.get("chunks", []))
        raise InvalidInputError(
            f"Activation set {name!r} is incomplete ({done:,} tokens so far).",
            "Run the same `mistudio extract` command again to resume it.")
    return ActivationSet(path, manifest)
