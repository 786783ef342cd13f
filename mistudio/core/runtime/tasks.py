"""The tiny protocol every long core operation sees: progress, status, partial results, cancel.

Core functions take ``task: TaskState`` and never a Qt object. The CLI passes a
:class:`CallbackTask` that draws a progress bar; the app passes one whose callbacks emit queued
Qt signals. Both get the same throttling, so a tight training loop cannot flood a UI thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from mistudio.core.runtime.errors import Cancelled


@runtime_checkable
class TaskState(Protocol):
    """What a compute function may tell its caller, and ask it."""

    def set_progress(self, fraction: float) -> None:
        """Report overall progress in [0, 1]."""

    def set_status(self, text: str) -> None:
        """Report what the job is doing now, in a few words."""

    def emit_partial(self, obj: Any) -> None:
        """Hand over an intermediate result (metrics, a finished chunk)."""

    def cancelled(self) -> bool:
        """Whether the caller asked the job to stop."""


class CancelToken:
    """A thread-safe flag the UI sets and the job polls between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class CallbackTask:
    """A :class:`TaskState` that forwards to plain callbacks, at most ``max_rate`` times a second.

    Progress is forwarded when it moved by at least ``min_step`` or ``1 / max_rate`` seconds
    passed, and always when it reaches 1.0, so consumers see the end.
    """

    def __init__(
        self,
        on_progress: Callable[[float], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        on_partial: Callable[[Any], None] | None = None,
        cancel: CancelToken | None = None,
        max_rate: float = 20.0,
        min_step: float = 0.01,
    ) -> None:
        self._on_progress = on_progress
        self._on_status = on_status
        self._on_partial = on_partial
        self.cancel_token = cancel or CancelToken()
        self._min_interval = 1.0 / max_rate
        self._min_step = min_step
        self._last_time = -1e9
        self._last_value = -1.0
        self.progress = 0.0
        self.status = ""

    def set_progress(self, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.progress = fraction
        now = time.monotonic()
        due = now - self._last_time >= self._min_interval
        moved = abs(fraction - self._last_value) >= self._min_step
        if self._on_progress is not None and (fraction >= 1.0 or (due and moved)):
            self._last_time, self._last_value = now, fraction
            self._on_progress(fraction)

    def set_status(self, text: str) -> None:
        self.status = text
        if self._on_status is not None:
            self._on_status(text)

    def emit_partial(self, obj: Any) -> None:
        if self._on_partial is not None:
            self._on_partial(obj)

    def cancelled(self) -> bool:
        return self.cancel_token.is_set()


class SubTask:
    """A view of a parent task covering the progress span ``[start, end]``.

    Lets one job (quickstart) run several steps that each report 0..1 progress.
    """

    def __init__(self, parent: TaskState, start: float, end: float) -> None:
        self._parent, self._start, self._span = parent, start, end - start

    def set_progress(self, fraction: float) -> None:
        self._parent.set_progress(self._start + self._span * min(max(fraction, 0.0), 1.0))

    def set_status(self, text: str) -> None:
        self._parent.set_status(text)

    def emit_partial(self, obj: Any) -> None:
        self._parent.emit_partial(obj)

    def cancelled(self) -> bool:
        return self._parent.cancelled()


def silent_task() -> CallbackTask:
    """A task that reports nowhere and is never cancelled (scripts and tests)."""
    return CallbackTask()


def check_cancelled(task: TaskState) -> None:
    """Raise :class:`Cancelled` if the caller asked to stop; call between units of work."""
    if task.cancelled():
        raise Cancelled()
