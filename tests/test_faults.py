"""Faults a user meets, each reproduced for real with the CLI in a subprocess: a disk that
fills mid-job or is full, a read-only workspace, a damaged labels file, an SAE removed or
overwritten under its analysis. Each ends in one clear line and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_durability import (  # noqa: F401  (toy_cli_ws: the fixture)
    cli,
    mount_small_disk,
    start,
    toy_cli_ws,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX mounts and signals")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs (needs permission to mount; skipped otherwise)."""
    mnt = mount_small_disk(tmp_path / "small", "16m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """Fill ``mnt`` until ``leave`` bytes are free; returns the ballast file."""
    ballast = mnt / "ballast"
    with open(ballast, "ab") as fh:
        while (free := shutil.disk_usage(mnt).free) > leave:
            try:
                fh.write(b"\0" * min(free - leave, 1 << 20))
                fh.flush()
            except OSError:
                break
    return ballast


def one_error_line(res: subprocess.CompletedProcess, *words: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for word in words:
        assert word in lines[0].lower(), lines[0]
    return lines[0]


SMALL_EXTRACT = ("extract", "--model", "toy", "--dataset", "docs.toy.ctx64.bos", "--layer", "1",
                 "--name", "acts", "--chunk-rows", "2048", "--batch-size", "2",
                 "--dtype", "float32", "--max-tokens", "24000")


def test_a_disk_that_fills_during_extraction(toy_cli_ws: Path,  # noqa: F811
                                             small_disk: Path) -> None:
    """The disk fills to 100 KB free once the first chunk is written: the next chunk's write
    comes up short (numpy's OSError carries no errno), which must still read as a full disk;
    with the space back, the same command resumes and completes."""
    ws = small_disk / "ws"
    shutil.copytree(toy_cli_ws, ws, symlinks=True)
    ballast = fill(small_disk, 100_000)  # too little for the whole set: refused up front
    one_error_line(cli(ws, *SMALL_EXTRACT, check=False), "not enough disk space")
    assert not list((ws / "activations").glob(".*partial")), "an empty partial folder was left"
    ballast.unlink()
    proc = start(ws, *SMALL_EXTRACT)
    chunk = ws / "activations" / ".acts.partial" / "layers.1.resid_post" / "chunk_00000.npy"
    t0 = time.monotonic()
    while not chunk.exists() and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.005)
    ballast = fill(small_disk, 100_000)
    _, err = proc.communicate(timeout=300)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    one_error_line(res, "disk filled up while writing activation set")
    ballast.unlink()
    done = cli(ws, *SMALL_EXTRACT, "--json")
    assert '"tokens": 24000' in done.stdout


@pytest.fixture(scope="module")
def analysed_template(tmp_path_factory: pytest.TempPathFactory,
                      toy_folder: Callable[[str], Path]) -> Path:
    """A workspace made through the CLI once per module: a tiny LLaMA, 40 documents, their
    activations, a small SAE, its analysis and a hand label."""
    ws = tmp_path_factory.mktemp("analysed") / "ws"
    cli(ws, "models", "add", "toy", "--source", str(toy_folder("llama")))
    cli(ws, "datasets", "add", "docs", "--max-samples", "40")
    cli(ws, "tokenize", "docs", "--model", "toy", "--context-length", "64")
    cli(ws, "extract", "--model", "toy", "--dataset", "docs.toy.ctx64.bos", "--layer", "1",
        "--name", "acts", "--max-tokens", "4000")
    cli(ws, "train", "--activations", "acts", "--expansion", "2", "--k", "4", "--steps", "20",
        "--batch-size", "128", "--name", "sae1")
    cli(ws, "analyze", "sae1", "--tokens", "2000", "--top-k", "5")
    cli(ws, "label", "sae1", "--feature", "3", "--set", "my own words")
    return ws


@pytest.fixture
def analysed_cli_ws(analysed_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the analysed workspace."""
    ws = tmp_path / "ws"
    shutil.copytree(analysed_template, ws, symlinks=True)
    return ws


def test_a_full_disk_never_calls_the_catalog_damaged(analysed_cli_ws: Path,
                                                     small_disk: Path) -> None:
    ws = small_disk / "ws"
    shutil.copytree(analysed_cli_ws, ws, symlinks=True)
    ballast = fill(small_disk, 0)
    listing = cli(ws, "saes", "list", check=False)
    assert listing.returncode == 0 and "sae1" in listing.stdout, listing.stderr
    shown = cli(ws, "feature", "sae1", "3", check=False)
    assert shown.returncode == 0 and "my own words" in shown.stdout, shown.stderr
    one_error_line(cli(ws, "label", "sae1", "--feature", "4", "--set", "x", check=False),
                   "disk is full")
    one_error_line(cli(ws, "saes", "remove", "sae1", check=False), "disk is full")
    ballast.unlink()
    assert "sae1" in cli(ws, "saes", "list").stdout
    assert "my own words" in cli(ws, "feature", "sae1", "3").stdout
    cli(ws, "label", "sae1", "--feature", "4", "--set", "x")


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_a_damaged_labels_file_is_named_kept_and_recovered(analysed_cli_ws: Path,
                                                           damage: str) -> None:
    ws = analysed_cli_ws
    cli(ws, "label", "sae1", "--top", "8")
    db = ws / "features" / "sae1" / "labels.sqlite"
    data = bytearray(db.read_bytes())
    if damage == "overwrite":  # the pages after the schema: the table's rows and indexes
        data[len(data) // 2:len(data) // 2 + 2048] = b"\xa5" * 2048
        data[100:108] = b"\xff" * 8  # and the first page's header
    else:
        data = data[:len(data) // 2]
    db.write_bytes(bytes(data))
    for argv in (("features", "sae1"), ("feature", "sae1", "3"), ("label", "sae1", "--top", "5")):
        line = one_error_line(cli(ws, *argv, check=False), "labels file", "damaged")
        assert "mistudio label sae1 --recover" in line
    assert db.read_bytes() == bytes(data)  # untouched
    out = cli(ws, "label", "sae1", "--recover", "--json").stdout
    kept = Path(json.loads(out)["kept_as"])
    assert kept.read_bytes() == bytes(data)  # the damaged file is kept, as it was
    assert cli(ws, "features", "sae1").returncode == 0
    assert json.loads(out)["human"] == 1  # the hand label, from the database or its journal
    assert "my own words" in cli(ws, "feature", "sae1", "3").stdout
    cli(ws, "label", "sae1", "--feature", "5", "--set", "after recovery")
    assert "after recovery" in cli(ws, "feature", "sae1", "5").stdout


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` seen read-only: a read-only bind mount as root (root writes through file
    permissions), else every file and folder in it made read-only."""
    if os.geteuid() == 0:
        view = folder.with_name(folder.name + "-ro")
        view.mkdir()
        ok = subprocess.run(["mount", "--bind", str(folder), str(view)],
                            capture_output=True).returncode == 0 and subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode == 0
        if not ok:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here")
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
        return
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in sorted(paths, key=lambda p: -len(p.parts)):
        p.chmod(modes[p] & ~0o222)
    try:
        yield folder
    finally:
        for p in sorted(paths, key=lambda p: len(p.parts)):
            p.chmod(modes[p])


def tree_digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_read_only_workspace_can_be_viewed(analysed_cli_ws: Path) -> None:
    ws = analysed_cli_ws
    shutil.rmtree(ws / "raw")  # a folder it would create when missing, and cannot here
    before = tree_digest(ws)
    with read_only(ws) as view:
        listing = cli(view, "saes", "list", check=False)
        assert listing.returncode == 0 and "sae1" in listing.stdout, listing.stderr
        table = cli(view, "features", "sae1", "--search", "own", check=False)
        assert table.returncode == 0 and "my own words" in table.stdout, table.stderr
        shown = cli(view, "feature", "sae1", "3", check=False)
        assert shown.returncode == 0 and "my own words" in shown.stdout, shown.stderr
        for argv in (("label", "sae1", "--feature", "4", "--set", "x"), ("catalog", "rebuild"),
                     ("saes", "remove", "sae1")):
            one_error_line(cli(view, *argv, check=False), "read-only")
    assert tree_digest(ws) == before  # nothing changed


def test_an_sae_cannot_be_removed_from_under_its_analysis(analysed_cli_ws: Path) -> None:
    from mistudio.core.features.carry import remove_sae
    from mistudio.core.store.locks import BusyError
    from mistudio.core.store.workspace import Workspace

    ws = analysed_cli_ws
    proc = start(ws, "analyze", "sae1", "--name", "an2", "--tokens", "4000", "--top-k", "20")
    w = Workspace(ws)
    try:
        t0 = time.monotonic()
        while not w.catalog.running("analyze") and time.monotonic() - t0 < 120:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.005)
        with pytest.raises(BusyError, match="Analysis 'an2' of SAE 'sae1' is being made"):
            remove_sae(w, "sae1")
    finally:
        w.close()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    out = cli(ws, "saes", "remove", "sae1", "--json").stdout
    assert sorted(json.loads(out)["analyses_removed"]) == ["an2", "sae1"]  # none left behind


def test_an_analysis_whose_sae_goes_meanwhile_is_discarded(analysed_cli_ws: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.features.analysis as analysis_mod
    from mistudio.core.runtime.errors import InvalidInputError
    from mistudio.core.store.workspace import Workspace

    w = Workspace(analysed_cli_ws)
    real_fill = analysis_mod._fill

    def fill_then_remove(ws: Workspace, *rest: object) -> object:
        summary = real_fill(ws, *rest)
        ws.remove("sae", "sae1")  # what another process could do, bypassing every check
        return summary

    monkeypatch.setattr(analysis_mod, "_fill", fill_then_remove)
    with pytest.raises(InvalidInputError, match="SAE 'sae1' was removed while it was being"):
        analysis_mod.analyze(w, analysis_mod.AnalyzeConfig("sae1", tokens=1000), "an3")
    assert w.catalog.find("features", "an3") is None
    assert not (analysed_cli_ws / "features" / "an3").exists()
    w.close()


SAE1 = ("train", "--activations", "acts", "--expansion", "2", "--k", "4", "--batch-size", "128",
        "--name", "sae1", "--overwrite")


def test_an_analysis_of_earlier_weights_says_so(analysed_cli_ws: Path) -> None:
    ws = analysed_cli_ws
    assert "out of date" not in cli(ws, "feature", "sae1", "3").stderr
    cli(ws, *SAE1, "--steps", "20", "--seed", "7")
    for argv in (("feature", "sae1", "3"), ("features", "sae1")):
        res = cli(ws, *argv)
        assert "analysis 'sae1' is out of date: SAE 'sae1' was trained again" in res.stderr
        assert "mistudio analyze sae1 --overwrite" in res.stderr


def test_an_unfinished_overwrite_leaves_the_sae_usable(analysed_cli_ws: Path) -> None:
    from test_durability import digest, kill_when

    ws = analysed_cli_ws
    weights = digest(ws / "saes" / "sae1", "*.safetensors")
    partial = ws / "saes" / ".sae1.partial" / "metrics.jsonl"
    kill_when(start(ws, *SAE1, "--steps", "3000", "--checkpoint-every", "20", "--seed", "1"),
              lambda: partial.is_file() and partial.stat().st_size > 0)
    listing = cli(ws, "saes", "list", "--json").stdout
    row = next(r for r in json.loads(listing) if r["name"] == "sae1")
    assert row["status"] == "complete"
    assert digest(ws / "saes" / "sae1", "*.safetensors") == weights
    assert "my own words" in cli(ws, "feature", "sae1", "3").stdout
    cli(ws, "analyze", "sae1", "--name", "an4", "--tokens", "1000")
