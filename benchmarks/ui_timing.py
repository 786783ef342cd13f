"""Timing the window as a person sees it (``benchmarks/ui.py``, ``ui_startup.py``, ``jobs.py``):
a 10 ms timer on the UI thread and the gaps between its ticks (a stall), and letting the window
run for a while."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def settle(seconds: float) -> None:
    """Let the window run (paint, deliver events) for ``seconds``."""
    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


class UiGaps:
    """Records the milliseconds between ticks of a 10 ms UI timer while started;
    ``on_tick`` is called at each tick (to note what was happening)."""

    def __init__(self, on_tick: Callable[[], None] | None = None) -> None:
        self.gaps_ms: list[float] = []
        self._on_tick = on_tick
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps_ms.append(1000 * (now - self._last))
        self._last = now
        if self._on_tick is not None:
            self._on_tick()

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def max_ms(self) -> float:
        return max(self.gaps_ms, default=0.0)
