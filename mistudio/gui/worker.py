"""The one worker mechanism: a core job function run on a QThread, reporting through signals.

The core never sees Qt: the job gets a :class:`QtTask`, which implements the core's
``TaskState`` protocol (``set_progress``, ``set_status``, ``emit_partial``, ``cancelled``).
Progress and status are coalesced and delivered to the UI thread at most ~20 times a second;
partial results (metric rows, streamed tokens) are queued and delivered in batches on the same
timer, so a job that reports thousands of times a second cannot flood the event loop.
Cancel sets the job's cancel token; the job stops at its next check and the runner reports
``cancelled``. Errors arrive as the core's one-line message (problem and fix) plus details.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from mistudio.core.runtime.errors import Cancelled, as_user_error
from mistudio.core.runtime.tasks import CancelToken
from mistudio.core.store.workspace import Workspace
from mistudio.gui.words import app_text

UI_INTERVAL_MS = 50
"""At most this often (20 Hz) progress, status and partial results reach the UI thread."""


class QtTask:
    """The core's TaskState, filled from the worker thread, drained by the UI thread."""

    def __init__(self, cancel: CancelToken) -> None:
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._status: str | None = None
        self._partials: list[Any] = []
        self._cancel = cancel

    def set_progress(self, fraction: float) -> None:
        with self._lock:
            self._progress = fraction

    def set_status(self, text: str) -> None:
        with self._lock:
            self._status = text

    def emit_partial(self, obj: Any) -> None:
        with self._lock:
            self._partials.append(obj)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def drain(self) -> tuple[float | None, str | None, list[Any]]:
        with self._lock:
            out = (self._progress, self._status, self._partials)
            self._progress, self._status, self._partials = None, None, []
        return out


class _Thread(QThread):
    def __init__(self, fn: Callable[[QtTask], Any], task: QtTask) -> None:
        super().__init__()
        self.fn, self.task = fn, task
        self.result: Any = None
        self.error: BaseException | None = None
        self.details = ""

    def run(self) -> None:
        try:
            self.result = self.fn(self.task)
        except BaseException as err:  # reported on the UI thread, never lost
            self.error = err
            self.details = traceback.format_exc()


class JobRunner(QObject):
    """Runs one job at a time (one per panel) and reports on the UI thread."""

    progress = Signal(float)
    status = Signal(str)
    partial = Signal(list)
    """A batch of partial results, in order."""
    finished = Signal(object)
    failed = Signal(str, str)
    """The core's message (problem and fix), and details (the traceback) for the expander."""
    cancelled = Signal()
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: _Thread | None = None
        self._task: QtTask | None = None
        self._token: CancelToken | None = None
        self.title = ""
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._pump)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, title: str, fn: Callable[[QtTask], Any]) -> bool:
        """Run ``fn(task)`` on a worker thread; False if a job is already running."""
        if self._thread is not None:
            return False
        self.title = title
        self._token = CancelToken()
        self._task = QtTask(self._token)
        self._thread = _Thread(fn, self._task)
        self._thread.finished.connect(self._done)
        self._timer.start()
        self._thread.start()
        self.running_changed.emit(True)
        self.status.emit(title)
        return True

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def wait(self, ms: int = 30_000) -> bool:
        """Cancel and join the worker (on quit): True if it ended."""
        if self._thread is None:
            return True
        self.cancel()
        return bool(self._thread.wait(ms))

    def _pump(self) -> None:
        if self._task is None:
            return
        progress, status, partials = self._task.drain()
        if progress is not None:
            self.progress.emit(progress)
        if status is not None:
            self.status.emit(status)
        if partials:
            self.partial.emit(partials)

    def _done(self) -> None:
        self._pump()
        thread, self._thread = self._thread, None
        self._timer.stop()
        self.running_changed.emit(False)
        if thread is None:
            return
        err = thread.error
        if err is None:
            self.finished.emit(thread.result)
        elif isinstance(err, Cancelled):
            self.cancelled.emit()
        elif (user := as_user_error(err)) is not None:
            self.failed.emit(app_text(user), thread.details)
        else:
            self.failed.emit(f"{type(err).__name__}: {err}", thread.details)
        thread.deleteLater()


def in_worker(ws: Workspace, fn: Callable[[Workspace, Any], Any]) -> Callable[[Any], Any]:
    """A job that runs ``fn(workspace, task)`` with the worker thread's own workspace handle
    (SQLite connections must stay on the thread that opened them)."""
    root = ws.root

    def job(task: Any) -> Any:
        own = Workspace(root)
        try:
            return fn(own, task)
        finally:
            own.close()
    return job
