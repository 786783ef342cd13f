"""A 2D map of the features: UMAP of the decoder directions (cosine), cached beside the analysis.

Features that write similar directions into the residual stream land close together. UMAP
(umap-learn) needs a few dozen points to build its neighbour graph, so very small SAEs (and
installs without umap-learn) get a PCA projection instead; the map records which it is.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from mistudio.core.runtime.tasks import TaskState, silent_task
from mistudio.core.store.files import read_manifest, write_json_atomic, write_npy_atomic
from mistudio.core.store.workspace import Workspace

MAP_FILE = "map.npy"
MAP_INFO = "map.json"
MIN_UMAP_POINTS = 64


class FeatureMap(NamedTuple):
    xy: np.ndarray
    """[F, 2] coordinates, scaled into [0, 1]."""
    method: str
    """umap or pca."""


def _normalise(xy: np.ndarray) -> np.ndarray:
    lo, hi = xy.min(0), xy.max(0)
    return ((xy - lo) / np.maximum(hi - lo, 1e-9)).astype(np.float32)


def pca_2d(W_FD: np.ndarray) -> np.ndarray:
    centred = torch.from_numpy(W_FD - W_FD.mean(0))
    _, _, V = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ V[:2].T).numpy()


def compute_map(W_dec_FD: np.ndarray, n_neighbors: int = 15, seed: int = 0) -> FeatureMap:
    unit = W_dec_FD / np.maximum(np.linalg.norm(W_dec_FD, axis=1, keepdims=True), 1e-8)
    if len(unit) >= MIN_UMAP_POINTS:
        try:
            import umap
        except ImportError:
            umap = None
        if umap is not None:
            with warnings.catch_warnings():  # numba and umap warn about threads and seeds
                warnings.simplefilter("ignore")
                reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(unit) - 1), metric="cosine",
                                    random_state=seed, n_jobs=1, init="spectral")
                return FeatureMap(_normalise(reducer.fit_transform(unit)), "umap")
    return FeatureMap(_normalise(pca_2d(unit)), "pca")


def map_seconds(n_features: int) -> float:
    """UMAP's time for ``n_features`` decoder directions, as measured on this project's 2-core
    CPU machine: 4,608 features took 62 s, importing umap and numba's first compilation
    included (about 20 s of it)."""
    return 20.0 + 0.009 * n_features


def cached_map(ws: Workspace, analysis: str) -> FeatureMap | None:
    """The analysis's map as computed before, or None."""
    from mistudio.core.features.store import open_features

    store = open_features(ws, analysis)
    folder: Path = store.folder
    if (folder / MAP_FILE).is_file() and (folder / MAP_INFO).is_file():
        xy = np.load(folder / MAP_FILE)
        if xy.shape == (store.n, 2):
            return FeatureMap(xy, json.loads((folder / MAP_INFO).read_text())["method"])
    return None


def feature_map(ws: Workspace, analysis: str, task: TaskState | None = None,
                recompute: bool = False) -> FeatureMap:
    """The analysis's map, computed once (about a minute for 4608 features) and cached."""
    from mistudio.core.features.store import open_features
    from mistudio.core.sae.io import open_sae

    task = task or silent_task()
    cached = None if recompute else cached_map(ws, analysis)
    if cached is not None:
        return cached
    folder = open_features(ws, analysis).folder
    sae, _ = open_sae(ws, read_manifest(folder, f"analysis {analysis!r}").provenance.sae)
    n = sae.cfg.d_sae
    estimate = map_seconds(n)
    task.set_status(f"Computing the feature map of {n:,} features (UMAP, about "
                    f"{estimate:.0f} s on 2 CPU cores)")
    # UMAP reports nothing while it runs: the front end moves its bar along the estimate
    task.emit_partial({"expected_seconds": estimate})
    fmap = compute_map(sae.W_dec_FO.detach().float().numpy())
    write_npy_atomic(folder / MAP_FILE, fmap.xy)
    write_json_atomic(folder / MAP_INFO, {"method": fmap.method})
    task.set_progress(1.0)
    return fmap
