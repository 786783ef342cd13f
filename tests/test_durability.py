"""What survives what, proved with real processes: kill -9 mid-job and resume, two processes on
one artifact, a rebuild beside a running job, a full disk. Every job here runs as the CLI in a
subprocess, exactly as a user's would."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mistudio.core.store.catalog import rebuild_catalog
from mistudio.core.store.workspace import Workspace

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")


def cli(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "mistudio", *args, "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"mistudio {' '.join(args)} failed:\n{res.stderr}")
    return res


def start(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mistudio", *args, "--workspace", str(ws)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 10 ms)."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before it could be killed:\n{proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the job never reached the point to kill it at")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def digest(folder: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob(pattern)):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def toy_cli_ws(tmp_path: Path, toy_folder: Callable[[str], Path]) -> Path:
    """A workspace made through the CLI: a tiny LLaMA and 40 documents of the built-in corpus."""
    ws = tmp_path / "ws"
    cli(ws, "models", "add", "toy", "--source", str(toy_folder("llama")))
    cli(ws, "datasets", "add", "docs", "--max-samples", "40")
    cli(ws, "tokenize", "docs", "--model", "toy", "--context-length", "64")
    return ws


EXTRACT = ("extract", "--model", "toy", "--dataset", "docs.toy.ctx64.bos", "--layer", "1",
           "--name", "acts", "--chunk-rows", "1000", "--batch-size", "2", "--dtype", "float32")
TRAIN = ("train", "--activations", "acts", "--expansion", "4", "--k", "8", "--batch-size",
         "128", "--steps", "1500", "--checkpoint-every", "50", "--name", "sae")
ANALYZE = ("analyze", "sae", "--tokens", "6000", "--top-k", "5")
LABEL = ("label", "sae", "--top", "64")


def test_kill_9_mid_job_then_resume_equals_an_uninterrupted_run(toy_cli_ws: Path,
                                                                 tmp_path: Path) -> None:
    ws, clean = toy_cli_ws, tmp_path / "clean"
    shutil.copytree(ws, clean, symlinks=True)  # the same start, never interrupted
    partial = ws / "activations" / ".acts.partial" / "manifest.json"

    # extraction: killed after two chunks, resumed from them
    kill_when(start(ws, *EXTRACT),
              lambda: len((json_or_none(partial) or {}).get("chunks", [])) >= 2)
    w = Workspace(ws)
    assert w.catalog.get("activations", "acts").status == "partial"  # listed, resumable
    w.close()
    cli(ws, *EXTRACT)
    cli(clean, *EXTRACT)
    for key in ("layers.1.resid_post", "positions"):
        assert digest(ws / "activations" / "acts" / key, "*.npy") == \
            digest(clean / "activations" / "acts" / key, "*.npy")

    # training: killed after its second checkpoint, resumed to the same weights and curve
    ckpt_dir = ws / "saes" / ".sae.partial"
    kill_when(start(ws, *TRAIN), lambda: any(
        int(json.loads(line)["step"]) >= 120 for line in _lines(ckpt_dir / "metrics.jsonl")))
    cli(ws, *TRAIN)
    cli(clean, *TRAIN)
    assert digest(ws / "saes" / "sae", "sae_weights.safetensors") == \
        digest(clean / "saes" / "sae", "sae_weights.safetensors")
    curve = [json.loads(x)["mse"] for x in _lines(ws / "saes" / "sae" / "metrics.jsonl")]
    assert curve == [json.loads(x)["mse"] for x in
                     _lines(clean / "saes" / "sae" / "metrics.jsonl")]

    # analysis: killed mid-pass, never shown as complete, redone to the same table
    kill_when(start(ws, *ANALYZE), lambda: (ws / "features" / ".sae.partial" /
                                            "csr_features.bin").is_file())
    assert Workspace(ws).catalog.find("features", "sae") is None
    cli(ws, *ANALYZE)
    cli(clean, *ANALYZE)
    for f in ("csc_rows.npy", "csc_values.npy", "top_values.npy"):
        np.testing.assert_array_equal(np.load(ws / "features" / "sae" / f),
                                      np.load(clean / "features" / "sae" / f))

    # labelling: killed after a commit, resumed to the same labels
    db = ws / "features" / "sae" / "labels.sqlite"
    kill_when(start(ws, *LABEL), lambda: _count_labels(db) >= 16)
    kept = _count_labels(db)
    assert 16 <= kept < 64
    cli(ws, *LABEL)
    cli(clean, *LABEL)
    assert _labels(db) == _labels(clean / "features" / "sae" / "labels.sqlite")


def _lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text().splitlines() if x.strip().endswith("}")]
    except OSError:
        return []


def _count_labels(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            return con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _labels(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT feature, label, source, score FROM labels ORDER BY feature"
                           ).fetchall()
    finally:
        con.close()


def test_two_processes_on_one_artifact(toy_cli_ws: Path) -> None:
    ws = toy_cli_ws
    cli(ws, *EXTRACT)
    first = start(ws, *TRAIN)
    owner = ws / "metadata" / "locks" / "sae.sae.owner.json"
    t0 = time.monotonic()
    while not owner.is_file() and first.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    second = cli(ws, *TRAIN, check=False)
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()
    assert len(message) == 1 and f"pid {first.pid}" in message[0] and "train" in message[0]
    over = cli(ws, *TRAIN, "--overwrite", check=False)  # nor may it delete the running job's
    assert over.returncode == 2 and f"pid {first.pid}" in over.stderr  # partial folder
    # the holder dies: its lock dies with it, and the next run takes over and resumes
    kill_when(first, lambda: (ws / "saes" / ".sae.partial" / "checkpoint.pt").is_file())
    res = cli(ws, *TRAIN, "--steps", "1500")
    assert "SAE sae:" in res.stdout
    assert not owner.exists()


def test_rebuild_beside_a_running_job_keeps_it_and_the_history(toy_cli_ws: Path) -> None:
    ws = toy_cli_ws
    job = start(ws, *EXTRACT)
    rebuilds = 0
    while job.poll() is None:
        _, result = rebuild_catalog(ws)
        assert not result.skipped
        rebuilds += 1
    assert job.returncode == 0, job.stderr.read()
    assert rebuilds >= 1
    w = Workspace(ws)
    try:
        assert w.catalog.get("activations", "acts").status == "complete"  # not invisible
        kinds = [j.kind for j in w.catalog.jobs()]
        assert "tokenize" in kinds and "add-dataset" in kinds and "extract" in kinds
    finally:
        w.close()


def mount_small_disk(mnt: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``mnt`` (needs permission to mount: the test is skipped
    otherwise); the caller unmounts it."""
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    return mnt


def test_a_full_disk_ends_in_one_line_and_a_sound_workspace(toy_cli_ws: Path,
                                                            tmp_path: Path) -> None:
    """On a small filesystem (tmpfs; needs permission to mount, skipped otherwise), filled
    until training's checkpoint no longer fits."""
    mnt = mount_small_disk(tmp_path / "small", "12m")
    try:
        ws = mnt / "ws"
        shutil.copytree(toy_cli_ws, ws, symlinks=True)
        cli(ws, "extract", "--model", "toy", "--dataset", "docs.toy.ctx64.bos", "--layer", "1",
            "--name", "acts", "--max-tokens", "4000")
        ballast = mnt / "ballast"
        free = shutil.disk_usage(mnt).free
        with open(ballast, "wb") as fh:
            fh.write(b"\0" * (free - 96 * 1024))  # leave 96 KB
        train = ("train", "--activations", "acts", "--expansion", "64", "--k", "8",
                 "--batch-size", "128", "--steps", "60", "--checkpoint-every", "20",
                 "--name", "wide")
        res = cli(ws, *train, check=False)
        assert res.returncode == 2, res.stderr
        lines = [x for x in res.stderr.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and "disk" in lines[0].lower(), res.stderr
        assert "Traceback" not in res.stderr
        assert not [p for p in ws.rglob("*.tmp")], "temporary files were left behind"
        listing = cli(ws, "saes", "list", check=False)  # the catalog is not called damaged
        assert listing.returncode == 0, listing.stderr
        cli(ws, "catalog", "rebuild", check=False)  # on the full disk: never a 0-byte file
        assert (ws / "metadata" / "catalog.sqlite").stat().st_size > 0
        assert '"docs"' in cli(ws, "datasets", "list", "--json").stdout
        ballast.unlink()  # space comes back: the same command completes
        assert "SAE wide:" in cli(ws, *train).stdout
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
