"""The job center: every job of the app is declared once, runs where its kind says, reaches the
status bar and is stopped and waited for when the window closes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import time
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from mistudio.core.jobs.center import JobCenter
from mistudio.core.jobs.kinds import JOBS, JobKind, Placement
from mistudio.core.runtime.errors import Cancelled, InvalidInputError
from mistudio.core.runtime.tasks import CallbackTask

GUI = Path(__file__).resolve().parents[1] / "mistudio" / "gui"


def test_every_declared_job_resolves_to_a_function() -> None:
    for kind in JOBS.values():
        assert callable(kind.fn), kind.name
        if kind.placement is Placement.SERVICE:
            assert kind.model_of is not None, f"{kind.name} must say which model it needs"


def test_the_gui_starts_jobs_only_by_name_through_the_center() -> None:
    """No other way to run work in the background: no threads, QThreads, process pools or
    services of its own; every job it starts is one of the declared kinds."""
    started = set()
    for path in GUI.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for banned in ("threading", "QThread", "ChildService", "run_in_child", "ThreadPool",
                       "concurrent.futures", "multiprocessing"):
            assert banned not in text, f"{path.name} uses {banned}"
        started |= set(re.findall(r"(?:runner|loader)\.start\(\s*\"([a-z_]+)\"", text))
    assert started, "the panels start their jobs by name"
    assert started <= set(JOBS), started - set(JOBS)


def _stubbed(kinds: dict[str, JobKind]) -> dict[str, JobKind]:
    return {name: dataclasses.replace(k, function="job_stubs:until_cancelled",
                                      model="job_stubs:stub_model")
            for name, k in kinds.items()}


def test_center_runs_each_placement_and_stops_everything(tmp_path: Path) -> None:
    kinds = {
        "here": JobKind("here", "job_stubs:where", Placement.THREAD, "here"),
        "child": JobKind("child", "job_stubs:where", Placement.PROCESS, "child"),
        "model": JobKind("model", "job_stubs:where", Placement.SERVICE, "model",
                         "job_stubs:stub_model"),
        "wait": JobKind("wait", "job_stubs:until_cancelled", Placement.PROCESS, "wait"),
    }
    center = JobCenter(tmp_path / "ws", kinds)
    assert center.run("here") == os.getpid()
    assert center.run("child") != os.getpid()
    first = center.run("model")
    assert center.run("model") == first != os.getpid()  # one service per model, kept
    assert list(center.services.processes().values()) == [first]
    token = CallbackTask()
    waiting = center.start("wait", owner="a")
    assert center.running("a") == [waiting]
    left = center.shutdown(timeout_s=20)
    assert left == [] and waiting.outcome == "cancelled" and isinstance(waiting.error, Cancelled)
    assert center.services.processes() == {}
    # a job's process that has handed back its result may still be exiting: it must be gone
    # within seconds (a loaded machine made the check flaky the instant after shutdown)
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="shut down"):
        center.start("here")
    del token


def test_a_spare_process_runs_the_next_job_and_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spare is started ahead, runs exactly one job, a new one follows it, and shutdown
    ends it; the results are those of a fresh process."""
    monkeypatch.setenv("MISTUDIO_SPARE_PROCESS", "1")
    monkeypatch.setattr("mistudio.core.jobs.center.SPARE_MIN_FREE_BYTES", 0)
    kinds = {"child": JobKind("child", "job_stubs:where", Placement.PROCESS, "child"),
             "wait": JobKind("wait", "job_stubs:until_cancelled", Placement.PROCESS, "wait"),
             "bad": JobKind("bad", "job_stubs:bad", Placement.PROCESS, "bad")}
    center = JobCenter(tmp_path / "ws", kinds, spare=True)
    try:
        spare = center._spare
        assert spare is not None and spare.alive and "job_stubs" in center._preload()
        assert center.run("child") == spare.child.pid  # the job ran in the spare...
        # ...which ends with it. Polled, not joined: a second thread joining the child beside
        # the center's reaper can see it alive for a moment after the reaper collected it.
        assert _ends_within(spare, 10)
        second = center._spare
        assert second is not None and second is not spare and second.alive
        with pytest.raises(InvalidInputError, match="The thing is wrong"):
            center.run("bad")  # errors come back from a spare as from a fresh process
        waiting = center.start("wait")
        time.sleep(1)
    finally:
        left = center.shutdown(timeout_s=20)
    assert left == [] and waiting.outcome == "cancelled"
    assert center._spare is None and multiprocessing.active_children() == []


def _ends_within(spare: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while spare.alive and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    return not spare.alive  # type: ignore[attr-defined]


def test_no_spare_process_when_switched_off(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTUDIO_SPARE_PROCESS", "0")
    center = JobCenter(tmp_path / "ws", spare=True)
    assert center._spare is None
    center.shutdown()


def test_every_job_reaches_the_status_bar_and_is_joined_at_close(
        qtbot: QtBot, toy_ws: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each declared job, its function replaced by one that reports and waits for its cancel
    but run where the real one runs, shows in the status bar; closing the window stops them
    all, ends their processes and model services."""
    from mistudio.gui.main_window import MainWindow

    for name, kind in _stubbed(JOBS).items():
        monkeypatch.setitem(JOBS, name, kind)
    win = MainWindow(str(toy_ws.root))  # type: ignore[attr-defined]
    qtbot.addWidget(win)
    win.show()
    runners = []
    for name in JOBS:
        runner = win.jobs.runner(f"test {name}")
        runners.append(runner)
        assert runner.start(name, name, title=f"Job {name}")
        qtbot.waitUntil(lambda r=runner: win.job_label.text().startswith("stub working")
                        and win._active is r, timeout=30_000)
        assert win.cancel_button.isVisible()
    services = win.jobs.center.services
    assert len(services.processes()) == sum(k.placement is Placement.SERVICE
                                            for k in JOBS.values())
    cancelled: list[str] = []
    for r in runners:
        r.cancelled.connect(lambda r=r: cancelled.append(r.owner))
    win.close()
    assert all(not r.running for r in runners)
    assert len(cancelled) == len(runners)  # each told how its job ended
    assert services.processes() == {} and multiprocessing.active_children() == []


QUIT_WHILE_RUNNING = """
import dataclasses, sys
sys.path.insert(0, {tests!r})
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from mistudio.core.jobs.kinds import JOBS
for name, kind in list(JOBS.items()):  # each job waits for its cancel, where it really runs
    JOBS[name] = dataclasses.replace(kind, function="job_stubs:until_cancelled",
                                     model="job_stubs:stub_model")
from mistudio.gui.main_window import MainWindow
win = MainWindow({ws!r})
win.show()
for name in JOBS:
    win.jobs.runner("test " + name).start(name, name, title=name)
QTimer.singleShot({ms}, win.close)
QTimer.singleShot({ms} + 200, app.quit)
sys.exit(app.exec())
"""


@pytest.mark.parametrize("quit_after_ms", [100, 2500])
def test_quitting_while_every_kind_of_job_runs_exits_cleanly(tmp_path: Path,
                                                             quit_after_ms: int) -> None:
    """The app in its own process, every declared job started (threads, processes, model
    services), then closed: before the children are up and once they all run. Exit status 0,
    no thread destroyed while running, no child left behind."""
    import subprocess
    import sys

    import psutil

    code = QUIT_WHILE_RUNNING.format(tests=str(Path(__file__).parent), ws=str(tmp_path / "ws"),
                                     ms=quit_after_ms)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    children: set[int] = set()
    while proc.poll() is None:
        try:
            children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "Destroyed while thread" not in err
    assert children or quit_after_ms < 1000  # the late quit did find processes running
    time.sleep(1)
    assert not [p for p in children if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
