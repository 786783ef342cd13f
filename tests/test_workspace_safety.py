"""Nothing lost: copies and moves, folders the catalog does not know, labels across
re-analysis, removal, rebuilds, and one clear line for every bad input."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from toy import small_train_config

from mistudio.core.runtime.errors import CorruptedError, InvalidInputError, markers
from mistudio.core.store.catalog import rebuild_catalog
from mistudio.core.store.workspace import Workspace

# -- copies and moves ------------------------------------------------------------------------


@pytest.fixture
def trained(acts_ws: Workspace) -> Workspace:
    from mistudio.core.sae.trainer import train_sae

    train_sae(acts_ws, small_train_config(steps=20), "sae")
    return acts_ws


def test_a_copied_workspace_is_independent(trained: Workspace, tmp_path: Path) -> None:
    copy_root = tmp_path / "copy"
    shutil.copytree(trained.root, copy_root, symlinks=True)
    copy = Workspace(copy_root)
    try:
        assert Path(copy.catalog.get("sae", "sae").path) == copy_root / "saes" / "sae"
        copy.remove("sae", "sae")
        copy.remove("activations", "acts")
        copy.remove("dataset", "pydoc")
        assert not (copy_root / "saes" / "sae").exists()
    finally:
        copy.close()
    # the original lost nothing, and still lists it
    assert (trained.root / "saes" / "sae" / "sae_weights.safetensors").is_file()
    assert (trained.root / "activations" / "acts").is_dir()
    assert trained.catalog.get("sae", "sae").status == "complete"


def test_a_moved_workspace_keeps_working(trained: Workspace, tmp_path: Path) -> None:
    from mistudio.core.activations.store import open_activations
    from mistudio.core.sae.io import open_sae

    old_root = trained.root
    trained.close()
    new_root = tmp_path / "moved"
    shutil.move(old_root, new_root)
    ws = Workspace(new_root)
    try:
        open_sae(ws, "sae")  # no "missing its manifest", no re-index needed
        assert open_activations(ws, "acts").n_rows > 0
        assert Path(ws.catalog.get("sae", "sae").path).parent == new_root / "saes"
    finally:
        ws.close()


def test_catalogs_of_earlier_versions_with_absolute_paths(trained: Workspace,
                                                          tmp_path: Path) -> None:
    """Earlier catalogs stored absolute paths; a copy of such a workspace must act on its own
    folders, never on the original's."""
    db = trained.root / "metadata" / "catalog.sqlite"
    trained.catalog._db.execute("UPDATE artifacts SET path = ? || '/' || path",
                                (str(trained.root),))
    trained.catalog._db.commit()
    trained.close()
    copy_root = tmp_path / "copy"
    shutil.copytree(trained.root, copy_root, symlinks=True)
    con = sqlite3.connect(copy_root / "metadata" / db.name)
    stored = con.execute("SELECT path FROM artifacts WHERE name='sae'").fetchone()[0]
    con.close()
    assert stored.startswith(str(trained.root))  # points into the original
    copy = Workspace(copy_root)
    try:
        copy.remove("sae", "sae")
    finally:
        copy.close()
    assert (trained.root / "saes" / "sae").is_dir()


# -- folders on disk are never replaced silently -----------------------------------------------


def test_a_folder_the_catalog_does_not_know_is_not_replaced(toy_ws: Workspace) -> None:
    from mistudio.core.data.datasets import DatasetConfig, add_dataset

    keep = toy_ws.root / "raw" / "keepme"
    keep.mkdir()
    (keep / "manifest.json").write_text("{damaged")
    (keep / "data.arrow").write_bytes(b"precious")
    with pytest.raises(InvalidInputError, match="already on disk.*catalog does not list it"):
        add_dataset(toy_ws, "keepme", DatasetConfig("builtin:pydoc", max_samples=3))
    assert (keep / "data.arrow").read_bytes() == b"precious"
    # a rebuild says why it is not listed, instead of dropping it silently
    toy_ws.close()
    _, result = rebuild_catalog(toy_ws.root)
    assert any(folder == "raw/keepme" and "cannot be read" in why
               for folder, why in result.skipped)


def test_a_deleted_catalog_is_rebuilt_on_its_own(trained: Workspace) -> None:
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations

    root = trained.root
    jobs_before = len(trained.catalog.jobs())
    assert jobs_before > 0
    trained.close()
    for f in (root / "metadata").glob("catalog.sqlite*"):
        f.unlink()
    ws = Workspace(root)
    try:
        assert ws.catalog.get("sae", "sae").status == "complete"
        with pytest.raises(InvalidInputError, match="already exists"):
            extract_activations(ws, ExtractConfig("toy", "pydoc", (1,)), "acts")
    finally:
        ws.close()


def test_rebuild_in_place_keeps_the_job_history(trained: Workspace) -> None:
    root = trained.root
    jobs = [(j.kind, j.target, j.status) for j in trained.catalog.jobs()]
    trained.close()
    backup, result = rebuild_catalog(root)
    assert backup is None and result.count >= 5 and not result.skipped
    ws = Workspace(root)
    try:
        assert [(j.kind, j.target, j.status) for j in ws.catalog.jobs()] == jobs
    finally:
        ws.close()


# -- labels outlive their analysis ---------------------------------------------------------


def test_reanalysis_keeps_labels_of_the_same_weights(analysed: Workspace) -> None:
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.store import Label, open_features

    store = open_features(analysed, "sae")
    store.set_labels([Label(3, "my careful label", "human", None, None, "ok", None),
                      Label(4, "auto label", "pattern", "simulation", 0.8, "ok", None)])
    m = analyze(analysed, AnalyzeConfig("sae", tokens=2000, top_contexts=5), overwrite=True)
    assert m.previous_labels["carried_over"] == 2 and m.previous_labels["human"] == 1
    store = open_features(analysed, "sae")
    assert store.label(3).label == "my careful label" and store.label(4).score == 0.8


def test_reanalysis_after_retraining_archives_the_labels(analysed: Workspace) -> None:
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.carry import describe
    from mistudio.core.features.store import Label, open_features
    from mistudio.core.sae.trainer import train_sae

    open_features(analysed, "sae").set_labels(
        [Label(3, "my careful label", "human", None, None, "ok", None)])
    train_sae(analysed, small_train_config(steps=61), "sae", overwrite=True)  # new weights
    m = analyze(analysed, AnalyzeConfig("sae", tokens=2000, top_contexts=5), overwrite=True)
    kept = m.previous_labels
    assert kept["archived_labels"] == 1 and kept["human"] == 1
    assert "archived" in describe(kept)
    folder = analysed.artifact_path("features", "sae")
    con = sqlite3.connect(folder / kept["archived"])
    assert con.execute("SELECT label FROM labels").fetchall() == [("my careful label",)]
    con.close()
    assert open_features(analysed, "sae").label(3) is None  # not pinned on a new feature 3
    # and a third analysis still carries the archive forward
    m = analyze(analysed, AnalyzeConfig("sae", tokens=2000, top_contexts=5), overwrite=True)
    assert (folder / kept["archived"]).is_file()


def test_removing_an_sae_removes_its_analyses_but_keeps_their_labels(
        analysed: Workspace) -> None:
    from mistudio.core.features.carry import remove_sae
    from mistudio.core.features.store import Label, open_features

    open_features(analysed, "sae").set_labels(
        [Label(7, "keep me", "human", None, None, "ok", None)])
    r = remove_sae(analysed, "sae")
    assert r["analyses_removed"] == ["sae"] and len(r["labels_archived"]) == 1
    assert analysed.catalog.find("features", "sae") is None
    con = sqlite3.connect(r["labels_archived"][0])
    assert con.execute("SELECT label FROM labels").fetchall() == [("keep me",)]
    con.close()


# -- one clear line for every bad input ----------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("lr", -1.0), ("lr", 0.0), ("lr", math.nan), ("lr", math.inf),
    ("sparsity_coefficient", -1.0), ("warmup_steps", -1), ("steps", 0),
    ("grad_clip", math.nan), ("lr_end_fraction", 2.0), ("target_l0", math.nan),
])
def test_training_settings_out_of_range(field: str, value: float) -> None:
    kw = {"architecture": "relu"} if field == "target_l0" else {}
    with pytest.raises(InvalidInputError) as err:
        small_train_config(**kw, **{field: value})
    assert field in {s.name for s in markers(err.value.problem)[0]}  # the setting at fault


def test_files_are_written_readable_and_without_leftovers(trained: Workspace) -> None:
    folder = trained.artifact_path("sae", "sae")
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
    assert not list(trained.root.rglob("*.tmp"))


def test_export_refuses_weights_that_are_not_numbers(trained: Workspace,
                                                     tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from mistudio.core.sae.formats import export_sae

    path = trained.artifact_path("sae", "sae") / "sae_weights.safetensors"
    tensors = load_file(path)
    tensors["W_dec"][0, 0] = float("nan")
    save_file(tensors, path)
    with pytest.raises(CorruptedError, match="NaN or infinite values.*W_dec"):
        export_sae(trained, "sae", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nan_in_an_activation_chunk_stops_analysis_with_the_rows(trained: Workspace) -> None:
    from mistudio.core.activations.store import chunk_file
    from mistudio.core.features.analysis import AnalyzeConfig, analyze

    path = chunk_file(trained.artifact_path("activations", "acts"), "layers.1.resid_post", 0)
    data = np.load(path)
    data[5, 3] = np.nan
    np.save(path, data)
    with pytest.raises(InvalidInputError, match=r"NaN or infinite values.*rows 5"):
        analyze(trained, AnalyzeConfig("sae", tokens=1000))
    assert trained.catalog.find("features", "sae") is None


def test_live_explained_variance_of_a_one_token_batch_is_not_made_up(
        acts_ws: Workspace) -> None:
    from mistudio.core.sae.trainer import train_sae

    train_sae(acts_ws, small_train_config(steps=5, batch_size=1, log_every=1), "one")
    rows = [json.loads(x) for x in
            (acts_ws.artifact_path("sae", "one") / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["explained_variance"] is None for r in rows)


def test_resume_tolerates_a_torn_metrics_tail(acts_ws: Workspace) -> None:
    from mistudio.core.runtime.errors import Cancelled
    from mistudio.core.runtime.tasks import CallbackTask, CancelToken
    from mistudio.core.sae.checkpoints import METRICS
    from mistudio.core.sae.trainer import train_sae

    token = CancelToken()
    task = CallbackTask(lambda p: token.cancel() if p > 0.5 else None, cancel=token,
                        max_rate=1e9, min_step=0.0)
    with pytest.raises(Cancelled):
        train_sae(acts_ws, small_train_config(), "torn", task)
    log = acts_ws.partial_path("sae", "torn") / METRICS
    with open(log, "a") as fh:
        fh.write('{"step": 999, "mse": 0.1')  # a crash in the middle of a line
    m = train_sae(acts_ws, small_train_config(), "torn")
    assert m.summary.steps == 40
    steps = [json.loads(x)["step"] for x in
             (acts_ws.artifact_path("sae", "torn") / METRICS).read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_a_crash_between_the_two_renames_of_a_rebuild_is_undone(trained: Workspace) -> None:
    """building() moves the old artifact aside, then the new one in: a crash between the two
    leaves only `.NAME.old`; the next opening of the workspace puts it back."""
    root = trained.root
    trained.close()
    final = root / "saes" / "sae"
    final.rename(final.with_name(".sae.old"))
    ws = Workspace(root)
    try:
        assert ws.catalog.get("sae", "sae").status == "complete"
        assert (final / "sae_weights.safetensors").is_file()
        assert not final.with_name(".sae.old").exists()
    finally:
        ws.close()
