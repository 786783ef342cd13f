"""A run of tokens drawn as a heatmap: each token's background goes from the page colour to red
with its value, the marked token is underlined, hovering shows a tooltip, clicking reports the index.

One widget serves the feature examples, "Analyze this text" and both sides of a steering
comparison (which colour tokens themselves: diverging tokens highlighted). Tokens wrap to the
widget's width; the layout is computed once per width, not at every paint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QScrollArea, QSizePolicy, QToolTip, QVBoxLayout, QWidget

HOT = QColor(214, 39, 40)
"""Full activation: the red of the heatmap."""
PAD_X, PAD_Y, GAP = 1, 2, 2
"""GAP only before a token that starts a word (leading space or a new line): a word split into
tokens ("import" + "ed") stays one word on screen."""
MIN_TINT = 0.18
"""The weakest activation above zero still tints its token this much (18% of the way to full
red): on a black page, a linear 5% tint was invisible."""


def starts_word(token: str) -> bool:
    return not token or token[0].isspace() or token[0] == "⏎"


def tint(value: float, peak: float) -> float:
    """How far from the page colour to full red a token's background goes (0 for zero)."""
    if value <= 0:
        return 0.0
    return MIN_TINT + (1.0 - MIN_TINT) * min(value / peak, 1.0)


def blend(base: QColor, top: QColor, t: float) -> QColor:
    t = min(max(t, 0.0), 1.0)
    return QColor(round(base.red() + (top.red() - base.red()) * t),
                  round(base.green() + (top.green() - base.green()) * t),
                  round(base.blue() + (top.blue() - base.blue()) * t))


def readable_text(bg: QColor) -> QColor:
    """Black or white, whichever reads better on ``bg``."""
    luma = 0.299 * bg.red() + 0.587 * bg.green() + 0.114 * bg.blue()
    return QColor(20, 20, 20) if luma > 140 else QColor(245, 245, 245)


class TokenHeatmap(QWidget):
    """Tokens coloured by value; ``tokenClicked(i)`` on click, a tooltip from ``tooltip(i)``."""

    tokenClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tokens: list[str] = []
        self.values = np.zeros(0, np.float32)
        self.peak = 1.0
        self.marked = -1
        self.colors: list[QColor | None] = []
        self.tooltip: Callable[[int], str] | None = None
        self._rects: list[QRect] = []
        self._layout_width = -1
        self.setMouseTracking(True)
        # Not height-for-width to the layouts: that propagates up to every panel holding one
        # (and through hidden tabs); the widget sets its minimum height from its width instead.
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

    # -- content --------------------------------------------------------------------------------
    def set_tokens(self, tokens: Sequence[str], values: Sequence[float] | np.ndarray | None = None,
                   marked: int = -1, peak: float | None = None,
                   colors: Sequence[QColor | None] | None = None) -> None:
        """``values`` colour by activation (scaled to ``peak``, default their maximum);
        ``colors`` set a token's background directly (None: from its value)."""
        self.tokens = [t.replace("\n", "⏎") for t in tokens]
        n = len(self.tokens)
        self.values = np.zeros(n, np.float32) if values is None else np.asarray(values, np.float32)
        top = float(self.values.max()) if n and self.values.size else 0.0
        self.peak = peak if peak and peak > 0 else (top if top > 0 else 1.0)
        self.marked = marked
        self.colors = list(colors) if colors is not None else [None] * n
        self._relayout()

    def append(self, token: str, color: QColor | None = None) -> None:
        """One more token (streamed generation), without recolouring the rest."""
        self.tokens.append(token.replace("\n", "⏎"))
        self.values = np.append(self.values, np.float32(0))
        self.colors.append(color)
        self._relayout()

    def set_color(self, i: int, color: QColor | None) -> None:
        if 0 <= i < len(self.colors):
            self.colors[i] = color
            self.update()

    def text(self) -> str:
        return "".join(self.tokens)

    # -- layout ---------------------------------------------------------------------------------
    def _relayout(self) -> None:
        self._layout_width = -1
        self._fit_height()
        self.update()

    def _layout(self, width: int) -> list[QRect]:
        if width == self._layout_width:
            return self._rects
        fm = QFontMetrics(self.font())
        h = fm.height() + 2 * PAD_Y
        x = y = 0
        rects = []
        for i, t in enumerate(self.tokens):
            w = fm.horizontalAdvance(t if t.strip() else t.replace(" ", "·") or "·") + 2 * PAD_X
            if i and starts_word(t):
                x += GAP
            if x > 0 and x + w > width:
                x, y = 0, y + h + GAP
            rects.append(QRect(x, y, w, h))
            x += w
        self._rects, self._layout_width = rects, width
        return rects

    def heightForWidth(self, width: int) -> int:
        rects = self._layout(max(width, 50))
        fm = QFontMetrics(self.font())
        return (rects[-1].bottom() + 1) if rects else fm.height() + 2 * PAD_Y

    def sizeHint(self) -> QSize:
        width = self.width() if self.width() > 50 else 600
        return QSize(width, self.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        return QSize(100, QFontMetrics(self.font()).height() + 2 * PAD_Y)

    def resizeEvent(self, e: object) -> None:
        self._layout_width = -1
        self._fit_height()

    def _fit_height(self) -> None:
        """Ask for the height the wrapped tokens need at this width: box layouts nested in
        scroll areas do not all honour height-for-width, and rows would overlap."""
        if self.width() > 50:
            need = self.heightForWidth(self.width())
            if self.minimumHeight() != need:
                self.setMinimumHeight(need)
        self.updateGeometry()

    # -- painting and mouse ---------------------------------------------------------------------
    def background(self, i: int) -> QColor:
        base = self.palette().base().color()
        color = self.colors[i] if i < len(self.colors) else None
        if color is not None:
            return color
        v = float(self.values[i]) if i < len(self.values) else 0.0
        return blend(base, HOT, tint(v, self.peak)) if v > 0 else base

    def paintEvent(self, e: QPaintEvent) -> None:
        p = QPainter(self)
        rects = self._layout(self.width())
        plain = self.palette().text().color()
        for i, (t, r) in enumerate(zip(self.tokens, rects, strict=True)):
            if not r.intersects(e.rect()):
                continue
            bg = self.background(i)
            coloured = bg != self.palette().base().color()
            if coloured:
                p.fillRect(r, bg)
            p.setPen(readable_text(bg) if coloured else plain)
            shown = t if t.strip() else t.replace(" ", "·") or "·"
            p.drawText(r.adjusted(PAD_X, PAD_Y, 0, 0), Qt.AlignmentFlag.AlignLeft, shown)
            if i == self.marked:  # underlined, so the token stays readable
                p.setPen(QPen(plain, 3))
                p.drawLine(r.left() + 1, r.bottom() - 1, r.right() - 1, r.bottom() - 1)
        p.end()

    def index_at(self, pos: QPoint) -> int:
        for i, r in enumerate(self._layout(self.width())):
            if r.contains(pos):
                return i
        return -1

    def mouseMoveEvent(self, e: QMouseEvent) -> None:
        i = self.index_at(e.position().toPoint())
        if i < 0:
            QToolTip.hideText()
            return
        tip = self.tooltip(i) if self.tooltip else f"{self.tokens[i]!r}: {self.values[i]:.3f}"
        QToolTip.showText(e.globalPosition().toPoint(), tip, self)

    def mousePressEvent(self, e: QMouseEvent) -> None:
        i = self.index_at(e.position().toPoint())
        if i >= 0:
            self.tokenClicked.emit(i)


def scrolled(widget: QWidget) -> QScrollArea:
    """``widget`` at the top of a scroll area (long generations and pasted texts scroll)."""
    holder = QWidget()
    box = QVBoxLayout(holder)
    box.setContentsMargins(2, 2, 2, 2)
    box.addWidget(widget)
    box.addStretch(1)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(holder)
    return area
