"""What a projector audience would see go wrong, measured on live widgets (offscreen Qt).

``layout_problems(root)`` lists, for the widgets visible under ``root``: views that scroll
sideways, label and button text cut by its widget, table headers narrower than their text,
and plot tick labels that overlap. Fonts are measured with the widget's own font metrics.
"""

from __future__ import annotations

from PySide6.QtGui import QFontMetrics, QImage, QPainter
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QCheckBox,
    QHeaderView,
    QLabel,
    QTableView,
    QWidget,
)

SLACK_PX = 2
"""Rounding between font metrics and layout."""


def _name(w: QWidget) -> str:
    chain, p = [], w
    while p is not None and len(chain) < 3:
        chain.append(p.objectName() or type(p).__name__)
        p = p.parentWidget()
    return "/".join(reversed(chain))


def _visible(w: QWidget) -> bool:
    return w.isVisible() and w.width() > 0 and w.height() > 0 and not w.visibleRegion().isEmpty()


def sideways_scrolling(root: QWidget) -> list[str]:
    out = []
    for area in root.findChildren(QAbstractScrollArea):
        if isinstance(area, QTableView):
            continue  # wide tables scroll by design; their headers are checked instead
        if _visible(area) and area.horizontalScrollBar().isVisible():
            out.append(f"scrolls sideways: {_name(area)}")
    return out


def clipped_text(root: QWidget) -> list[str]:
    out = []
    for label in root.findChildren(QLabel):
        text = label.text()
        if not _visible(label) or not text or label.wordWrap() or "<" in text or "\n" in text:
            continue
        need = QFontMetrics(label.font()).horizontalAdvance(text)
        if need > label.contentsRect().width() + SLACK_PX:
            out.append(f"label cut ({need} > {label.contentsRect().width()} px): {text!r}")
    for button in root.findChildren(QAbstractButton):
        text = button.text().replace("&", "")
        if not _visible(button) or not text:
            continue
        extra = 24 if isinstance(button, QCheckBox) else 8  # the box / the bevel
        need = QFontMetrics(button.font()).horizontalAdvance(text) + extra
        if need > button.width() + SLACK_PX:
            out.append(f"button text cut ({need} > {button.width()} px): {text!r}")
    for header in root.findChildren(QHeaderView):
        if not _visible(header) or header.orientation().name != "Horizontal":
            continue
        model = header.model()
        if model is None:
            continue
        metrics = QFontMetrics(header.font())
        for i in range(header.count()):
            if header.isSectionHidden(i):
                continue
            text = str(model.headerData(i, header.orientation()) or "")
            need = metrics.horizontalAdvance(text) + 8
            if text and header.sectionSize(i) + SLACK_PX < need:
                out.append(f"header cut ({header.sectionSize(i)} < {need} px): {text!r}")
    return out


def overlapping_ticks(root: QWidget) -> list[str]:
    import pyqtgraph as pg

    out = []
    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    for view in root.findChildren(pg.GraphicsView):
        if not _visible(view):
            continue
        for item in view.items():
            if not isinstance(item, pg.AxisItem) or not item.isVisible():
                continue
            painter = QPainter(image)
            try:
                specs = item.generateDrawSpecs(painter)
            finally:
                painter.end()
            if specs is None:
                continue
            rects = [(r, t) for r, _, t in specs[2]]
            for i, (a, ta) in enumerate(rects):
                for b, tb in rects[i + 1:]:
                    if a.intersects(b):
                        out.append(f"tick labels overlap on a {item.orientation} axis: "
                                   f"{ta!r} / {tb!r}")
    return out


def cut_plots(root: QWidget) -> list[str]:
    """Plot grids whose minimum width exceeds their view (cut at the right)."""
    import pyqtgraph as pg
    from PySide6.QtCore import Qt

    out = []
    for view in root.findChildren(pg.GraphicsLayoutWidget):
        if not _visible(view):
            continue
        need = view.ci.effectiveSizeHint(Qt.SizeHint.MinimumSize).width()
        if need > view.viewport().width() + SLACK_PX:
            out.append(f"plots cut ({need:.0f} > {view.viewport().width()} px): {_name(view)}")
    return out


def layout_problems(root: QWidget) -> list[str]:
    return [*sideways_scrolling(root), *clipped_text(root), *overlapping_ticks(root),
            *cut_plots(root)]
