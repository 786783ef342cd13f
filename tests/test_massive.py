"""Massive tokens (attention sinks): flagged at extraction, left out of batches, metrics and
analysis by default, and honest explained variance as a result."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from toy import small_train_config

from mistudio.core.activations.massive import describe_positions, flag_massive, token_mask
from mistudio.core.activations.store import (
    MASSIVE_ROWS,
    NORMS,
    POSITIONS,
    chunk_file,
    finish_massive,
    open_activations,
)
from mistudio.core.sae.data import ActivationBatches
from mistudio.core.sae.io import load_sae
from mistudio.core.sae.trainer import train_sae
from mistudio.core.store.files import write_json_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.manifests import manifest_of
from mistudio.core.store.workspace import Workspace

D, SEQ = 32, 64


def _synthetic(ws: Workspace, name: str = "acts", n_seq: int = 400, seed: int = 0,
               massive_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """An activation set of sparse-ish data with a huge "sink" token at position 1 of every
    ``massive_every``-th sequence; written in the store's own layout. Returns (X, planted)."""
    rng = np.random.default_rng(seed)
    n = n_seq * (SEQ - 1)
    atoms = rng.normal(size=(64, D)).astype(np.float32)
    codes = rng.random((n, 64)) * (rng.random((n, 64)) < 0.06)
    X = (codes @ atoms + 0.05 * rng.normal(size=(n, D))).astype(np.float32)
    pos = np.stack(np.meshgrid(np.arange(n_seq), np.arange(1, SEQ), indexing="ij"), -1)
    pos = pos.reshape(-1, 2).astype(np.int32)  # (sequence, position) of every row
    sink = rng.normal(size=D).astype(np.float32)
    sink *= 150 * np.median(np.linalg.norm(X, axis=1)) / np.linalg.norm(sink)
    planted = np.flatnonzero((pos[:, 1] == 1) & (pos[:, 0] % massive_every == 0))
    X[planted] = sink + rng.normal(size=(len(planted), D)).astype(np.float32)
    key = "layers.1.resid_post"
    folder = ws.artifact_path("activations", name)
    half = n // 2
    chunks = []
    for i, (a, z) in enumerate([(0, half), (half, n)]):
        for k, arr in ((key, X[a:z]), (POSITIONS, pos[a:z])):
            chunk_file(folder, k, i).parent.mkdir(parents=True, exist_ok=True)
            np.save(chunk_file(folder, k, i), arr)
        chunks.append({"rows": z - a, "seq_end": int(pos[z - 1, 0]) + 1})
    manifest = manifest_of({"kind": "activations", "name": name, "status": "complete",
                            "config": {"model": "synthetic", "dtype": "float32",
                                       "context_length": SEQ, "tokenized": None},
                            "provenance": {"model": "synthetic"}, "hook_points": [key],
                            "d_model": D, "chunks": chunks, "summary": {"tokens": n}})
    finish_massive(folder, manifest, 10.0)  # norms computed from the rows (no norms stored)
    write_json_atomic(folder / MANIFEST, manifest.to_json())
    ws.register(manifest)
    return X, planted


def test_flagging_finds_exactly_the_planted_tokens(ws: Workspace) -> None:
    X, planted = _synthetic(ws)
    acts = open_activations(ws, "acts")
    np.testing.assert_array_equal(acts.massive_rows(), planted)
    report = acts.massive
    assert report.count == len(planted) == 40 and report.positions == {"1": 40}
    hook = report.by_hook["layers.1.resid_post"]
    assert hook.median_norm == pytest.approx(np.median(np.linalg.norm(X, axis=1)), rel=1e-4)
    assert acts.manifest.summary.massive_tokens == 40
    assert describe_positions(report).startswith("40 tokens over 10x the median norm, at "
                                                 "position 1 (40)")
    # the norms were stored beside the chunks, and the normalisation ignores the sinks
    assert chunk_file(acts.path, NORMS, 0).is_file()
    stats = acts.manifest.stats["layers.1.resid_post"]
    kept = np.delete(np.linalg.norm(X, axis=1), planted)
    assert stats.mean_norm == pytest.approx(kept.mean(), rel=1e-4)
    assert stats.mean_norm_all_rows > 1.2 * stats.mean_norm  # 40 sinks of 25,000 rows


def test_flags_are_kept_per_hook_point() -> None:
    """Hook "a" (an early layer) gives ordinary tokens huge norms, hook "b" does not: work at
    "b" must not lose "a"'s tokens, and each hook's examples show its own norms."""
    norms = np.ones((100, 3), np.float32)
    norms[:, 2] = 1000.0  # a later layer: every norm large, none out of line
    norms[3, 0], norms[7, 1] = 50.0, 11.0
    pos = np.stack([np.arange(100) // 10, np.arange(100) % 10], 1)
    flags = flag_massive(norms, ["a", "b", "c"], pos, 4, factor=10.0)
    assert flags.rows.tolist() == [3, 7]  # the report counts rows flagged anywhere
    assert {k: v.tolist() for k, v in flags.by_hook.items()} == {"a": [3], "b": [7], "c": []}
    a, c = flags.report.by_hook["a"], flags.report.by_hook["c"]
    assert a.count == 1 and a.positions == {"3": 1} and c.count == 0 and c.examples == []
    assert [(e.row, e.norm, e.hook) for e in a.examples] == [(3, 50.0, "a")]
    assert [(e.row, e.norm, e.hook) for e in flags.report.examples] == [(3, 50.0, "a"),
                                                                       (7, 11.0, "b")]
    assert flags.stats["c"].count == 100  # nothing left out of the scale at "c"
    assert flags.report.positions == {"3": 1, "7": 1}


def test_batches_leave_massive_rows_out(ws: Workspace) -> None:
    X, _ = _synthetic(ws)
    acts = open_activations(ws, "acts")
    limit = 10 * np.median(np.linalg.norm(X, axis=1))

    def max_norm(exclude: np.ndarray | None) -> tuple[float, int]:
        loader = ActivationBatches(acts, acts.keys[0], None, 500, seed=1, exclude=exclude,
                                   buffer_rows=4096)
        try:
            seen = [next(loader)[0] for _ in range(3 * len(X) // 500)]  # about three epochs
        finally:
            loader.close()
        x = torch.cat(seen)
        return float(x.norm(dim=-1).max()), len(x)

    with_sinks, _ = max_norm(None)
    without, n = max_norm(acts.excluded_rows())
    assert with_sinks > limit  # the planted tokens are there to be found
    assert without <= limit and n > 2 * len(X)


def _clean_ev(folder: Path, X: np.ndarray, rows: slice, drop: np.ndarray) -> float:
    """Explained variance recomputed from the saved SAELens weights, without miStudio's code."""
    sae, _ = load_sae(folder)
    x = np.delete(X[rows], drop, axis=0)
    with torch.no_grad():
        x_hat = sae.reconstruct(torch.from_numpy(x)).numpy()
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def test_explained_variance_is_not_inflated_by_massive_tokens(ws: Workspace) -> None:
    X, planted = _synthetic(ws)
    n_eval = 1024
    held = slice(len(X) - n_eval, len(X))
    in_held = planted[planted >= len(X) - n_eval] - (len(X) - n_eval)
    assert len(in_held) >= 1
    cfg = dict(steps=150, batch_size=256, eval_tokens=n_eval, expansion=4, k=8)
    honest = train_sae(ws, small_train_config(**cfg), "honest").summary
    kept = train_sae(ws, small_train_config(**cfg, keep_massive=True), "kept").summary
    # the reported figure is the one over the tokens the SAE is meant for ...
    assert honest.massive_excluded == len(in_held) and not honest.keep_massive
    assert honest.explained_variance == pytest.approx(
        _clean_ev(ws.artifact_path("sae", "honest"), X, held, in_held), abs=2e-3)
    # ... while an SAE trained and scored on every token reports a figure the sinks lift far
    # above what it does on the other tokens
    kept_clean = _clean_ev(ws.artifact_path("sae", "kept"), X, held, in_held)
    assert kept.explained_variance == pytest.approx(kept.explained_variance_all_tokens)
    assert kept.explained_variance > kept_clean + 0.1
    assert honest.explained_variance > 0.5
    meta = json.loads((ws.artifact_path("sae", "honest") / "cfg.json").read_text())["metadata"]
    assert meta["keep_massive"] is False and meta["massive_norm_threshold"] > 0


def test_sets_extracted_before_flagging_are_flagged_once(ws: Workspace) -> None:
    _, planted = _synthetic(ws)
    folder = ws.artifact_path("activations", "acts")
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["massive"]
    write_json_atomic(folder / MANIFEST, manifest)
    shutil.rmtree(folder / NORMS)
    (folder / MASSIVE_ROWS).unlink()
    acts = open_activations(ws, "acts")
    np.testing.assert_array_equal(acts.massive_rows(), planted)
    assert json.loads((folder / MANIFEST).read_text())["massive"]["count"] == len(planted)
    assert ws.catalog.get("activations", "acts").summary.massive_tokens == len(planted)
    before = (folder / MANIFEST).stat().st_mtime_ns
    time.sleep(0.01)
    open_activations(ws, "acts")
    assert (folder / MANIFEST).stat().st_mtime_ns == before  # not again


def test_token_mask_uses_the_threshold_or_the_median() -> None:
    h = torch.ones(2, 6, 4)
    h[0, 1] *= 500
    assert token_mask(h, None).tolist() == [[True, False, True, True, True, True], [True] * 6]
    assert token_mask(h, 1e9).all()
    assert token_mask(h, float("inf")).all()
    assert token_mask(h, 1.5).sum() == 0  # every norm is 2 or more
    assert token_mask(h[:1, :2], None).all()  # two tokens: no median to judge by


def test_extraction_flags_and_analysis_skips_massive_rows(acts_ws: Workspace) -> None:
    """A real extraction stores norms and a report; a planted sink fires no feature."""
    from mistudio.core.features.analysis import AnalyzeConfig, analyze

    acts = open_activations(acts_ws, "acts")
    assert chunk_file(acts.path, NORMS, 0).is_file() and acts.manifest.massive is not None
    stored = acts.chunk(NORMS, 0)
    assert stored.shape == (acts.chunks[0].rows, 3)
    np.testing.assert_allclose(stored[:50, 0], np.linalg.norm(
        acts.rows(acts.keys[0], 0, 50), axis=1), rtol=1e-3)
    train_sae(acts_ws, small_train_config(steps=30), "sae")
    # plant one sink in the stored rows and let the set be flagged again
    path = chunk_file(acts.path, "layers.1.resid_post", 0)
    data = np.load(path)
    data[100] *= 1000.0
    np.save(path, data)
    manifest = json.loads((acts.path / MANIFEST).read_text())
    del manifest["massive"]
    write_json_atomic(acts.path / MANIFEST, manifest)
    shutil.rmtree(acts.path / NORMS)
    again = open_activations(acts_ws, "acts")
    assert 100 in again.massive_rows()
    assert 100 in again.excluded_rows(False, ("layers.1.resid_post",))
    others = [k for k in again.keys if k != "layers.1.resid_post"]  # planted at layer 1 only
    assert others and all(100 not in again.excluded_rows(False, (k,)) for k in others)
    m = analyze(acts_ws, AnalyzeConfig("sae", tokens=2000, top_contexts=5))
    s = m.summary
    assert s.massive_excluded >= 1 and s.n_tokens == s.n_rows - s.massive_excluded
    folder = acts_ws.artifact_path("features", "sae")
    indptr = np.load(folder / "csr_indptr.npy")
    assert indptr[101] == indptr[100]  # row 100 has no feature
    kept = analyze(acts_ws, AnalyzeConfig("sae", tokens=2000, top_contexts=5, keep_massive=True),
                   name="with-sinks")
    assert kept.summary.massive_excluded == 0
    indptr = np.load(acts_ws.artifact_path("features", "with-sinks") / "csr_indptr.npy")
    assert indptr[101] > indptr[100]


def test_in_model_evaluation_leaves_massive_tokens_alone(acts_ws: Workspace) -> None:
    """The splice applies the SAE only under its threshold: the trained one, or for an imported
    SAE without one, 10x the median norm of the tokens at hand."""
    from mistudio.core.sae.evaluation import evaluate_in_model

    train_sae(acts_ws, small_train_config(steps=30), "sae")
    cfg_path = acts_ws.artifact_path("sae", "sae") / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["metadata"]["massive_norm_threshold"] > 0
    normal = evaluate_in_model(acts_ws, "sae", n_sequences=4)
    assert normal.massive_passed_through == 0 and normal.kl_div > 0
    # every token over the threshold: nothing is replaced, the model is untouched
    cfg["metadata"]["massive_norm_threshold"] = 1e-6
    write_json_atomic(cfg_path, cfg)
    none = evaluate_in_model(acts_ws, "sae", n_sequences=4)
    assert none.massive_passed_through == none.in_model_tokens + 4  # + each sequence's last
    assert none.kl_div == pytest.approx(0.0, abs=1e-6)
    assert none.ce_loss_sae == pytest.approx(none.ce_loss_clean, abs=1e-5)
    # as imported from elsewhere: no threshold on record, the median rule decides
    del cfg["metadata"]["massive_norm_threshold"], cfg["metadata"]["keep_massive"]
    write_json_atomic(cfg_path, cfg)
    imported = evaluate_in_model(acts_ws, "sae", n_sequences=4)
    assert imported.massive_passed_through == 0  # toy models have no sinks
    assert imported.kl_div == pytest.approx(normal.kl_div, rel=1e-5)
