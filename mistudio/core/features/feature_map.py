"""A 2D map of the features: UMAP of the decoder directions (cosine), cached beside the analysis.

Features that write similar directions into the residual stream land close together. UMAP
(umap-learn) needs a few dozen points to build its neighbour graph, so very small SAEs (and
installs without umap-learn) get a PCA projection instead; the map records which it is.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _ticking(task: TaskState, estimate_s: float) -> Iterator[None]:
    """UMAP reports nothing while it runs: move the progress bar along the estimate (never
    past 95% before the end), so the status bar shows a moving bar and a time left."""
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not stop.wait(0.5):
            task.set_progress(min(0.95, (time.monotonic() - start) / estimate_s))

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def feature_map(ws: Workspace, analysis: str, task: TaskState | None = None,
                recompute: bool = False) -> FeatureMap:
    """The analysis's map, computed once (about half a minute for 4608 features) and cached."""
    from mistudio.core.features.store import open_features
    from mistudio.core.sae.io import open_sae

    task = task or silent_task()
    store = open_features(ws, analysis)
    folder: Path = store.folder
    if not recompute and (folder / MAP_FILE).is_file() and (folder / MAP_INFO).is_file():
        xy = np.load(folder / MAP_FILE)
        if xy.shape == (store.n, 2):
            return FeatureMap(xy, json.loads((folder / MAP_INFO).read_text())["method"])
    sae, _ = open_sae(ws, read_manifest(folder, f"analysis {analysis!r}").provenance.sae)
    n = sae.cfg.d_sae
    estimate = map_seconds(n)
    task.set_status(f"Computing the feature map of {n:,} features (UMAP, about "
                    f"{estimate:.0f} s on 2 CPU cores)")
    with _ticking(task, estimate):
        fmap = compute_map(sae.W_dec_FO.detach().float().numpy())
    write_npy_atomic(folder / MAP_FILE, fmap.xy)
    write_json_atomic(folder / MAP_INFO, {"method": fmap.method})
    task.set_progress(1.0)
    return fmap


def feature_map_in_child(root: str, analysis: str, recompute: bool = False,
                         task: TaskState | None = None) -> FeatureMap:
    """:func:`feature_map` in a fresh process, for the app: UMAP imports numba and scikit-learn
    and compiles with numba, long stretches that hold the interpreter lock, and importing them
    on a worker thread of a PySide6 app once hung the app (PySide6 hooks every import).
    Progress reaches ``task``; cancelling it stops the child."""
    from mistudio.core.runtime.processes import run_in_child

    return FeatureMap(*run_in_child(_map_at, root, analysis, recompute, task=task))


def _map_at(root: str, analysis: str, recompute: bool,
            task: TaskState | None = None) -> tuple[np.ndarray, str]:
    ws = Workspace(root)
    try:
        return tuple(feature_map(ws, analysis, task, recompute=recompute))  # type: ignore[return-value]
    finally:
        ws.close()
