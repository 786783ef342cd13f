"""Plot axes whose tick labels never collide, at any font size (presentation mode is 1.6x).

pyqtgraph chooses the major tick spacing from the axis length alone and always labels the
major level, so with large type "200", "400", "600" ran together into "200400600". A
:class:`SpacedAxis` widens the major spacing to the next 1-2-5 step until its widest label,
plus a gap, fits between two ticks in the current tick font, and labels only that level.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFont, QFontMetricsF

GAP_CHARS = 1.5
"""Space between neighbouring labels, in widths of the digit 0."""


def _next_step(spacing: float) -> float:
    """The next 1-2-5 value above ``spacing``."""
    exp = 10.0 ** math.floor(math.log10(spacing))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * exp > spacing * (1 + 1e-9):
            return m * exp
    return 10.0 * exp


class SpacedAxis(pg.AxisItem):
    """An axis whose labelled ticks are spaced for their labels' size in the tick font."""

    def __init__(self, orientation: str, **kw: Any) -> None:
        super().__init__(orientation, **kw)
        self.setStyle(maxTextLevel=0)  # only the level spaced for its labels carries text

    def tick_font(self) -> QFont:
        return self.style.get("tickFont") or self.font()

    def label_boxes(self, values: np.ndarray, spacing: float) -> list[tuple[float, float]]:
        """(width, height) in pixels of each tick label at ``values``."""
        metrics = QFontMetricsF(self.tick_font())
        strings = self.tickStrings(list(values), self.autoSIPrefixScale * self.scale, spacing)
        return [(metrics.horizontalAdvance(s), metrics.height()) for s in strings]

    def fits(self, min_val: float, max_val: float, size: float, spacing: float) -> bool:
        """Whether labels every ``spacing`` units leave a gap between neighbours."""
        first = math.ceil(min_val / spacing) * spacing
        values = np.arange(first, max_val + spacing * 1e-6, spacing)
        if len(values) < 2:
            return True
        boxes = self.label_boxes(values, spacing)
        px = size / (max_val - min_val) * spacing
        gap = QFontMetricsF(self.tick_font()).horizontalAdvance("0") * GAP_CHARS
        if self.orientation in ("bottom", "top"):
            return px >= max(w for w, _ in boxes) + gap
        return px >= max(h for _, h in boxes) * 1.2

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> Any:
        levels = super().tickSpacing(minVal, maxVal, size)
        if not levels or size <= 0 or maxVal <= minVal or self.logMode:
            return levels
        major = levels[0][0]
        for _ in range(30):  # a handful of steps at most; bounded in case of odd input
            if self.fits(minVal, maxVal, size, major):
                break
            major = _next_step(major)
        minor = [(s, o) for s, o in levels[1:] if s < major and
                 abs(major / s - round(major / s)) < 1e-6]
        return [(major, 0.0), *minor[:1]]

    def tickValues(self, minVal: float, maxVal: float, size: float) -> Any:
        """On a log axis pyqtgraph labels 2, 3, ... 9 when the range is under a decade, one
        on top of the other: keep only the labelled ticks that have room."""
        levels = super().tickValues(minVal, maxVal, size)
        if not self.logMode or not levels or size <= 0 or maxVal <= minVal:
            return levels
        spacing, values = levels[0]
        px_per_unit = size / (maxVal - minVal)
        metrics = QFontMetricsF(self.tick_font())
        need = metrics.height() * 1.2 if self.orientation in ("left", "right") else \
            metrics.horizontalAdvance("0.0000") + metrics.horizontalAdvance("0") * GAP_CHARS
        kept: list[float] = []
        for v in sorted(values):
            if not kept or (v - kept[-1]) * px_per_unit >= need:
                kept.append(v)
        return [(spacing, kept), *levels[1:]]


def spaced_axes() -> dict[str, SpacedAxis]:
    """``axisItems`` for ``addPlot`` / ``PlotWidget``: spaced bottom and left axes."""
    return {"bottom": SpacedAxis("bottom"), "left": SpacedAxis("left")}
