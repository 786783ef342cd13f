"""The task protocol, the workspace's atomic writes and the catalog."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mistudio.core.runtime.errors import Cancelled, CorruptedError, InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import CallbackTask, CancelToken, SubTask, TaskState, check_cancelled
from mistudio.core.store.catalog import Catalog, rebuild_catalog
from mistudio.core.store.files import building, read_json, write_json_atomic
from mistudio.core.store.layout import SUBDIRS
from mistudio.core.store.workspace import Workspace


def test_callback_task_throttles_progress_but_always_reports_the_end() -> None:
    seen: list[float] = []
    task = CallbackTask(on_progress=seen.append, max_rate=1e-6)  # one update per ~11 days
    for i in range(1, 1001):
        task.set_progress(i / 1000)
    assert seen == [0.001, 1.0]
    assert isinstance(task, TaskState)


def test_callback_task_skips_tiny_steps() -> None:
    seen: list[float] = []
    task = CallbackTask(on_progress=seen.append, max_rate=1e9, min_step=0.1)
    for i in range(100):
        task.set_progress(i / 100)
    assert len(seen) == 10


def test_cancel_token_stops_a_job_between_units() -> None:
    token = CancelToken()
    task = CallbackTask(cancel=token)
    check_cancelled(task)
    token.cancel()
    with pytest.raises(Cancelled):
        check_cancelled(task)


def test_subtask_maps_progress_into_its_span() -> None:
    seen: list[float] = []
    parent = CallbackTask(on_progress=seen.append, max_rate=1e9, min_step=0)
    SubTask(parent, 0.5, 0.75).set_progress(0.5)
    assert seen == [0.625]


def test_workspace_layout(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "w")
    assert all((ws.root / sub).is_dir() for sub in SUBDIRS)
    assert (ws.root / "metadata" / "catalog.sqlite").exists() is False  # opened lazily
    ws.catalog.list()
    mode = sqlite3.connect(ws.root / "metadata" / "catalog.sqlite").execute(
        "PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    ws.close()


def test_workspace_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    assert Workspace().root == (tmp_path / "home").resolve()


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "x y", "../up"])
def test_artifact_names_are_validated(ws: Workspace, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid name"):
        ws.artifact_path("dataset", bad)


def test_building_renames_only_on_success(tmp_path: Path) -> None:
    final, partial = tmp_path / "art", tmp_path / ".art.partial"
    final.mkdir()
    (final / "old.txt").write_text("keep me")
    with pytest.raises(RuntimeError), building(final, partial) as out:
        (out / "new.txt").write_text("half")
        raise RuntimeError("crash")
    assert not partial.exists()
    assert (final / "old.txt").read_text() == "keep me"
    with building(final, partial) as out:
        (out / "new.txt").write_text("done")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_json_written_atomically_and_damage_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1})
    assert read_json(path, "thing", "fix") == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    path.write_text("{broken")
    with pytest.raises(CorruptedError, match="thing manifest .* is corrupted"):
        read_json(path, "thing", "fix")


def test_catalog_roundtrip_and_unknown_names(ws: Workspace) -> None:
    ws.catalog.put("dataset", "d1", ws.root / "raw" / "d1", config={"source": "x"},
                   summary={"documents": 3})
    art = ws.catalog.get("dataset", "d1")
    assert art.config == {"source": "x"} and art.summary.documents == 3
    with pytest.raises(NotFoundError, match=r"no dataset named 'nope'.*known: d1"):
        ws.catalog.get("dataset", "nope")


def test_corrupted_catalog_row_names_the_fix(ws: Workspace) -> None:
    ws.catalog.put("dataset", "d1", ws.root / "raw" / "d1")
    ws.catalog._db.execute("UPDATE artifacts SET config='{oops' WHERE name='d1'")
    with pytest.raises(CorruptedError, match="(?i)rebuild the workspace catalog"):
        ws.catalog.get("dataset", "d1")


def test_damaged_catalog_file_is_rebuilt_from_manifests(toy_ws: Workspace) -> None:
    root = toy_ws.root
    before = {(a.kind, a.name) for a in toy_ws.catalog.list()}
    toy_ws.close()
    db = root / "metadata" / "catalog.sqlite"
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptedError, match="(?i)rebuild the workspace catalog"):
        Catalog(db).list()
    backup, result = rebuild_catalog(root)
    assert backup is not None and backup.read_bytes().startswith(b"this is not")
    assert result.count == len(before) and not result.skipped
    assert {(a.kind, a.name) for a in Workspace(root).catalog.list()} == before


def test_jobs_are_recorded_with_their_outcome(ws: Workspace) -> None:
    with ws.job("demo", "t1", {}):
        pass
    with pytest.raises(Cancelled), ws.job("demo", "t2", {}):
        raise Cancelled()
    with pytest.raises(ValueError), ws.job("demo", "t3", {}):
        raise ValueError("boom")
    jobs = {j.target: j for j in ws.catalog.jobs()}
    assert (jobs["t1"].status, jobs["t2"].status, jobs["t3"].status) == ("done", "cancelled", "failed")
    assert jobs["t3"].message == "boom"


def test_disk_space_is_checked_before_writing(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Workspace, "free_bytes", lambda self: 1000)
    from mistudio.core.runtime.errors import ResourceError

    with pytest.raises(ResourceError, match="Not enough disk space .* needs about 9.5 KB"):
        ws.require_free_space(9700, "a thing")


def _slow_child(n: int, task: Any = None) -> int:
    """Runs in a child process (module level, so it can be spawned)."""
    import time

    for i in range(n):
        if task.cancelled():
            raise Cancelled()
        task.set_status(f"step {i}")
        task.set_progress((i + 1) / n)
        time.sleep(0.02)
    return n * 2


def _failing_child(task: Any = None) -> None:
    from mistudio.core.runtime.errors import InvalidInputError

    raise InvalidInputError("bad thing in the child.", "Fix it.")


def test_child_process_work_reports_progress_and_can_be_cancelled() -> None:
    from mistudio.core.runtime.errors import InvalidInputError
    from mistudio.core.runtime.processes import run_in_child
    from mistudio.core.runtime.tasks import CallbackTask, CancelToken

    seen: list[float] = []
    statuses: list[str] = []
    task = CallbackTask(seen.append, statuses.append, max_rate=1e9, min_step=0.0)
    assert run_in_child(_slow_child, 10, task=task) == 20
    assert seen and seen[-1] == 1.0 and statuses[-1] == "step 9"
    token = CancelToken()
    task = CallbackTask(on_status=lambda s: token.cancel() if s == "step 3" else None,
                        cancel=token)
    with pytest.raises(Cancelled):
        run_in_child(_slow_child, 10_000, task=task)  # 200 s if it were not cancelled
    with pytest.raises(InvalidInputError, match="bad thing in the child"):
        run_in_child(_failing_child)


def _counting_service_call(state: dict, step_s: float, steps: int, honour: bool,
                           task: Any = None) -> tuple[int, int]:
    """Runs in a ChildService: counts its calls in the state the calls share."""
    import os
    import time

    state["calls"] = state.get("calls", 0) + 1
    for i in range(steps):
        if honour and task.cancelled():
            raise Cancelled()
        task.set_status(f"step {i}")
        time.sleep(step_s)
    return os.getpid(), state["calls"]


def test_child_service_keeps_state_between_calls_and_recovers_from_cancel_and_death() -> None:
    import os
    import signal

    from mistudio.core.runtime.processes import ChildService
    from mistudio.core.runtime.tasks import CallbackTask, CancelToken

    service = ChildService(grace_s=1.0)
    try:
        pid, calls = service.call(_counting_service_call, 0.0, 1, True)
        assert pid != os.getpid() and calls == 1
        assert service.call(_counting_service_call, 0.0, 1, True) == (pid, 2)  # same process
        token = CancelToken()
        task = CallbackTask(on_status=lambda s: token.cancel() if s == "step 2" else None,
                            cancel=token)
        with pytest.raises(Cancelled):  # honoured: the process and what it holds stay
            service.call(_counting_service_call, 0.02, 10_000, True, task=task)
        assert service.call(_counting_service_call, 0.0, 1, True) == (pid, 4)
        token = CancelToken()
        task = CallbackTask(on_status=lambda s: token.cancel() if s == "step 2" else None,
                            cancel=token)
        with pytest.raises(Cancelled):  # ignored: terminated after the grace period
            service.call(_counting_service_call, 0.02, 10_000, False, task=task)
        assert not service.alive
        pid2, calls = service.call(_counting_service_call, 0.0, 1, True)
        assert pid2 != pid and calls == 1  # a fresh process, with empty state
        os.kill(pid2, signal.SIGKILL)  # killed from outside (out of memory, a user)
        for _ in range(100):
            if not service.alive:
                break
            import time
            time.sleep(0.05)
        pid3, calls = service.call(_counting_service_call, 0.0, 1, True)
        assert pid3 not in (pid, pid2) and calls == 1
    finally:
        service.close()
    assert not service.alive

