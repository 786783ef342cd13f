"""Work in a spawned process, reporting through the same :class:`TaskState` as work in a thread.

Why a process: loading a model, compiling with numba or generating token by token runs Python
between torch calls, and in the app's process that Python competes with the UI thread for the
interpreter lock (measured: steering from a worker thread ran 10-25% slower than on a main
thread, even with the UI idle). A spawned process has its own interpreter and main thread.

- :func:`run_in_child` runs one function in a fresh process and returns its result; given a
  :class:`SpareProcess` (started ahead, its imports done while nothing ran) it runs there, and
  the job skips the seconds a new interpreter takes to import torch.
- :class:`ChildService` keeps one process alive across calls, with a ``state`` dict the calls
  share, so a loaded model stays loaded (the Steering tab's generations).

In both, the child's progress, status and partial results reach the caller's task, cancelling
the caller's task cancels the child's, and a child that does not stop within ``grace_s`` is
terminated, so closing a window never waits on it.
"""

from __future__ import annotations

import importlib
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from typing import Any

from mistudio.core.runtime.errors import Cancelled
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task


class _ChildTask:
    """The task a child process sees: reports go up a queue, cancel comes down an event."""

    def __init__(self, queue: Any, cancel: Any) -> None:
        self._queue, self._cancel = queue, cancel
        self._last = 0.0

    def set_progress(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last >= 0.05 or fraction >= 1.0:  # throttled: the queue is a pipe
            self._last = now
            self._queue.put(("progress", float(fraction)))

    def set_status(self, text: str) -> None:
        self._queue.put(("status", str(text)))

    def emit_partial(self, obj: Any) -> None:
        self._queue.put(("partial", obj))

    def cancelled(self) -> bool:
        return self._cancel.is_set()


def _send_outcome(queue: Any, fn: Callable[..., Any], args: tuple, cancel: Any) -> None:
    try:
        queue.put(("result", fn(*args, task=_ChildTask(queue, cancel))))
    except BaseException as err:  # sent to the parent, which raises it there
        try:
            queue.put(("error", err))
        except Exception:  # an exception that does not pickle: its text still goes up
            queue.put(("error", RuntimeError(f"{type(err).__name__}: {err}")))


def _child_main(fn: Callable[..., Any], args: tuple, queue: Any, cancel: Any) -> None:
    _send_outcome(queue, fn, args, cancel)


class _Unanswered(Cancelled):
    """The child did not stop within its grace period after a cancel (it is still busy)."""


def _relay(child: Any, reports: Any, cancel: Any, task: TaskState, grace_s: float) -> Any:
    """Forward the child's reports to ``task`` until its outcome arrives; return or raise it.
    Raises :class:`_Unanswered` if the child is still busy ``grace_s`` after a cancel (the caller
    then terminates it)."""
    cancel_sent: float | None = None
    while True:
        if task.cancelled() and cancel_sent is None:  # checked at every turn: a child that
            cancel.set()  # reports all the time never leaves the queue empty
            cancel_sent = time.monotonic()
        if cancel_sent is not None and time.monotonic() - cancel_sent > grace_s:
            raise _Unanswered()
        try:
            kind, value = reports.get(timeout=0.1)
        except queue_mod.Empty:
            if not child.is_alive() and reports.empty():
                raise RuntimeError(f"The child process ended without a result (exit code "
                                   f"{child.exitcode}).") from None
            continue
        if kind == "progress":
            task.set_progress(value)
        elif kind == "status":
            task.set_status(value)
        elif kind == "partial":
            task.emit_partial(value)
        elif kind == "error":
            raise value
        else:
            return value


def _stop(child: Any, patient: bool) -> None:
    if child.is_alive():
        child.join(timeout=1.0 if patient else 0.1)
    if child.is_alive():
        child.terminate()
        child.join(timeout=5.0)


class SpareProcess:
    """A fresh process started before it is needed: it imports ``preload`` (torch, the job
    modules) while nothing runs, then waits for the one job it will run, and ends after it.
    Each job still gets a process of its own (its memory goes back when it ends)."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.requests, self.reports, self.cancel = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.child = ctx.Process(target=_spare_main, daemon=True, args=(
            preload, self.requests, self.reports, self.cancel))
        self.child.start()

    @property
    def alive(self) -> bool:
        return self.child.is_alive()

    def close(self) -> None:
        """End it unused."""
        try:
            self.requests.put(None)
        except (OSError, ValueError):
            pass
        _stop(self.child, patient=True)
        for q in (self.requests, self.reports):
            q.close()


def _spare_main(preload: tuple[str, ...], requests: Any, reports: Any, cancel: Any) -> None:
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # the job that needs it reports the error itself
            pass
    request = requests.get()
    if request is not None:
        _send_outcome(reports, *request, cancel)


def run_in_child(fn: Callable[..., Any], *args: Any, task: TaskState | None = None,
                 grace_s: float = 5.0, spare: SpareProcess | None = None) -> Any:
    """``fn(*args, task=...)`` in a fresh (spawned) process, or in ``spare`` when it is alive.
    ``fn`` must be a module-level function taking a ``task`` keyword."""
    import multiprocessing

    task = task or silent_task()
    if spare is not None and spare.alive:
        child, reports, cancel = spare.child, spare.reports, spare.cancel
        spare.requests.put((fn, args))
        spare.requests.close()
    else:
        ctx = multiprocessing.get_context("spawn")
        reports, cancel = ctx.Queue(), ctx.Event()
        child = ctx.Process(target=_child_main, args=(fn, args, reports, cancel), daemon=True)
        child.start()
    try:
        result = _relay(child, reports, cancel, task, grace_s)
    except BaseException:
        _stop(child, patient=not cancel.is_set())
        reports.close()
        raise
    _reap_later(child, reports)
    return result


def _reap_later(child: Any, reports: Any) -> None:
    """Wait for a child that has sent its result to exit, on a thread of its own: a process
    that imported torch takes about half a second to finish, which the job need not wait for."""
    def reap() -> None:
        _stop(child, patient=True)
        reports.close()

    threading.Thread(target=reap, name="reap child", daemon=True).start()


def _service_main(requests: Any, reports: Any, cancel: Any) -> None:
    state: dict[str, Any] = {}
    while (request := requests.get()) is not None:
        fn, args = request
        _send_outcome(reports, fn, (state, *args), cancel)


class ChildService:
    """One spawned process kept across calls; each call is ``fn(state, *args, task=...)``.

    ``state`` is a dict that lives in the child between calls (what a call loaded, for the
    next one to reuse). One call at a time; a call from a second thread waits for the first.
    The process starts on the first call, again after it died or was terminated by a cancel
    that it did not honour in time (the state is then empty), and ends on :meth:`close`.
    """

    def __init__(self, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._child: Any = None
        self._requests: Any = None
        self._reports: Any = None
        self._cancel: Any = None

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._requests, self._reports, self._cancel = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._child = ctx.Process(target=_service_main,
                                  args=(self._requests, self._reports, self._cancel), daemon=True)
        self._child.start()

    def call(self, fn: Callable[..., Any], *args: Any, task: TaskState | None = None) -> Any:
        """``fn(state, *args, task=...)`` in the service's process; ``fn`` must be a
        module-level function."""
        task = task or silent_task()
        while not self._lock.acquire(timeout=0.1):  # another call runs: wait, cancellably
            check_cancelled(task)
        try:
            if not self.alive:
                self._discard()
                self._start()
            self._cancel.clear()
            self._requests.put((fn, args))
            try:
                return _relay(self._child, self._reports, self._cancel, task, self.grace_s)
            except _Unanswered:
                self._terminate()  # still busy: its late answer must not reach the next call
                raise Cancelled() from None
            except RuntimeError:
                if not self.alive:  # it died (killed, out of memory): start afresh next time
                    self._discard()
                raise
        finally:
            self._lock.release()

    def close(self) -> None:
        """End the process (waits up to a second for it to finish, then terminates it)."""
        if self._child is None:
            return
        if self.alive:
            try:
                self._requests.put(None)
            except (OSError, ValueError):
                pass
        _stop(self._child, patient=True)
        self._discard()

    def _terminate(self) -> None:
        _stop(self._child, patient=False)
        self._discard()

    def _discard(self) -> None:
        for q in (self._requests, self._reports):
            if q is not None:
                q.close()
        self._child = self._requests = self._reports = self._cancel = None
