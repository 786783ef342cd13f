"""The app's side of the job center (:mod:`mistudio.core.jobs`): signals on the UI thread.

:class:`AppJobs` owns the one :class:`~mistudio.core.jobs.center.JobCenter` of a window: every
job of the app is started through one of its :class:`Runner`s (one per panel or dialog, one job
at a time each), by the name of its kind, and runs where the kind says (a thread, a child
process, a model service). A 20 Hz timer drains what the jobs reported and emits it as signals,
so a job that reports thousands of times a second cannot flood the event loop. The status bar
listens to :attr:`AppJobs.activeChanged`; closing the window calls :meth:`AppJobs.shutdown`,
which cancels every job and waits for it within a bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from mistudio.core.jobs.center import Job, JobCenter
from mistudio.core.runtime.errors import Cancelled, as_user_error
from mistudio.gui.words import app_text

UI_INTERVAL_MS = 50
"""At most this often (20 Hz) progress, status and partial results reach the UI thread."""


class Runner(QObject):
    """The jobs of one part of the app, one at a time, reported as signals."""

    progress = Signal(float)
    status = Signal(str)
    partial = Signal(list)
    """A batch of partial results, in order."""
    finished = Signal(object)
    failed = Signal(str, str)
    """The message in the app's words (problem and fix), and details for the expander."""
    cancelled = Signal()
    running_changed = Signal(bool)

    def __init__(self, jobs: AppJobs, owner: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs, self.owner = jobs, owner
        self.job: Job | None = None
        self.kind = ""
        """The kind of the last job started (to route its result)."""

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    @property
    def title(self) -> str:
        return self.job.title if self.job is not None else ""

    def start(self, kind: str, *args: Any, title: str = "", **kwargs: Any) -> bool:
        """Start job ``kind`` (:data:`mistudio.core.jobs.kinds.JOBS`); False if busy."""
        if self.running or self.jobs.closed:
            return False
        self.kind = kind
        self.job = self.jobs.center.start(kind, *args, title=title, owner=self.owner, **kwargs)
        self.jobs.begun(self)
        self.running_changed.emit(True)
        self.status.emit(self.job.title)
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def pump(self) -> None:
        """Emit what the job reported; at its end, how it ended."""
        job = self.job
        if job is None:
            return
        progress, status, partials = job.task.drain()
        if progress is not None:
            self.progress.emit(progress)
        if status is not None:
            self.status.emit(status)
        if partials:
            self.partial.emit(partials)
        if progress is not None or status is not None:
            self.jobs.reported.emit(self, progress, status)
        if not job.running and job is self.job:
            self.job = None
            self._ended(job)

    def _ended(self, job: Job) -> None:
        self.running_changed.emit(False)
        self.jobs.ended(self)
        err = job.error
        if err is None:
            self.finished.emit(job.result)
        elif isinstance(err, Cancelled):
            self.cancelled.emit()
        elif (user := as_user_error(err)) is not None:
            self.failed.emit(app_text(user), job.details)
        else:
            self.failed.emit(f"{type(err).__name__}: {err}", job.details)


class AppJobs(QObject):
    """The window's job center and its runners."""

    activeChanged = Signal()
    """A job started or ended (the status bar shows the latest running one)."""
    reported = Signal(object, object, object)
    """(runner, progress or None, status or None): what a running job just reported."""

    def __init__(self, root: str | Path, parent: QObject | None = None,
                 kinds: dict[str, Any] | None = None, spare: bool = False) -> None:
        """``spare``: keep a process started ahead for the next job (the main window)."""
        super().__init__(parent)
        self.center = JobCenter(root, kinds, spare=spare)
        self.runners: list[Runner] = []
        self.active: list[Runner] = []
        """Runners with a running job, the most recently started last."""
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._pump)

    @property
    def closed(self) -> bool:
        return self.center.closed

    def runner(self, owner: str, parent: QObject | None = None) -> Runner:
        """A new runner for a part of the app (``owner`` names it in the job list)."""
        r = Runner(self, owner, parent or self)
        self.runners.append(r)
        r.destroyed.connect(lambda *_: self.runners.remove(r) if r in self.runners else None)
        return r

    def begun(self, runner: Runner) -> None:
        self.active = [r for r in self.active if r is not runner] + [runner]
        self._timer.start()
        self.activeChanged.emit()

    def ended(self, runner: Runner) -> None:
        self.active = [r for r in self.active if r is not runner]
        if not self.active:
            self._timer.stop()
        self.activeChanged.emit()

    def _pump(self) -> None:
        for r in list(self.active):
            r.pump()

    def shutdown(self, timeout_s: float = 10.0) -> list[Job]:
        """Cancel every job, wait for them (within ``timeout_s``), end the model services;
        the runners report how their jobs ended. Returns the jobs that did not stop."""
        left = self.center.shutdown(timeout_s)
        self._pump()
        return left
