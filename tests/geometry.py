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
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QHeaderView,
    QLabel,
    QSlider,
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
        header.ensurePolished()  # a hidden tab's header takes a new app font when painted
        font = header.font()
        if header.highlightSections():  # a selected row draws every section's text in bold
            font.setBold(True)
        metrics = QFontMetrics(font)
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


def flat_plots(root: QWidget, least_px: int = 40) -> list[str]:
    """Plots whose drawing area (the view box) is squeezed below ``least_px`` in height."""
    import pyqtgraph as pg

    out = []
    for view in root.findChildren(pg.GraphicsView):
        if not _visible(view):
            continue
        for item in view.items():
            if isinstance(item, pg.PlotItem) and item.isVisible():
                height = item.getViewBox().size().height()
                if height < least_px:
                    title = item.titleLabel.text if item.titleLabel.isVisible() else ""
                    out.append(f"plot with no room to draw ({height:.0f} px high): {title!r}")
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


ELIDE_OK_PX = 240
"""A column at least this wide may elide a long cell (a label, a path): the start is readable.
Narrower, a cut cell is a cut word ("lame" for "name")."""


def cut_cells(root: QWidget, rows: int = 25) -> list[str]:
    """Cells of the first ``rows`` rows whose text does not fit a column narrower than
    ``ELIDE_OK_PX``."""
    from PySide6.QtCore import Qt

    out = []
    for table in root.findChildren(QTableView):
        model = table.model()
        if not _visible(table) or model is None:
            continue
        table.ensurePolished()
        metrics = QFontMetrics(table.font())
        header = table.horizontalHeader()
        for col in range(model.columnCount()):
            width = header.sectionSize(col)
            if header.isSectionHidden(col) or width >= ELIDE_OK_PX:
                continue
            for row in range(min(rows, model.rowCount())):
                text = str(model.data(model.index(row, col),
                                      Qt.ItemDataRole.DisplayRole) or "")
                need = metrics.horizontalAdvance(text) + 8  # the cell's margins (Fusion: 3 + 1 a side)
                if text and need > width + SLACK_PX:
                    name = model.headerData(col, Qt.Orientation.Horizontal)
                    out.append(f"cell cut in column {name!r} ({need} > {width} px): {text!r}")
                    break
    return out


def squeezed_controls(root: QWidget) -> list[str]:
    """Controls shown smaller than Qt says they need: a slider squeezed to a stub, a checkbox
    or a button with no height left, a combo box or spin box that cannot show its value."""
    out = []
    kinds = (QSlider, QAbstractButton, QComboBox, QAbstractSpinBox)
    for w in root.findChildren(QWidget):
        if not isinstance(w, kinds) or not w.isVisible() or w.window() is not root.window():
            continue
        hint = w.minimumSizeHint()
        if isinstance(w, QSlider):
            need_w = 60 if w.orientation().name == "Horizontal" else hint.width()
        else:
            need_w = hint.width() if isinstance(w, (QAbstractButton, QComboBox)) else 24
        if w.width() + SLACK_PX < need_w or w.height() + SLACK_PX < min(hint.height(), 16):
            out.append(f"{type(w).__name__} squeezed to {w.width()}x{w.height()} "
                       f"(needs {need_w}x{hint.height()}): {_name(w)} "
                       f"{getattr(w, 'text', lambda: '')()!r}")
    return out


def squeezed_layouts(root: QWidget) -> list[str]:
    """Widgets smaller than their layout's minimum: their children overlap (a note drawn over
    the axes of the plots above it)."""
    out = []
    for w in root.findChildren(QWidget):
        layout = w.layout()
        if layout is None or not _visible(w) or w.window() is not root.window():
            continue
        need = layout.minimumSize()
        if w.height() + SLACK_PX < need.height() or w.width() + SLACK_PX < need.width():
            out.append(f"{_name(w)} squeezed to {w.width()}x{w.height()} "
                       f"(its layout needs {need.width()}x{need.height()})")
    return out


def overlapping_children(root: QWidget) -> list[str]:
    """Widgets of one layout drawn over each other (a layout given less than its children's
    real heights: a word-wrapped note over the plots above it)."""
    out = []
    for w in root.findChildren(QWidget):
        layout = w.layout()
        if layout is None or not _visible(w) or w.window() is not root.window():
            continue
        kids = [k for k in (layout.itemAt(i).widget() for i in range(layout.count()))
                if k is not None and k.isVisible() and not k.size().isEmpty()]
        for i, a in enumerate(kids):
            for b in kids[i + 1:]:
                overlap = a.geometry().intersected(b.geometry())
                if overlap.height() > SLACK_PX and overlap.width() > SLACK_PX:
                    out.append(f"{_name(a)} and {_name(b)} overlap by {overlap.height()} px")
    return out


def layout_problems(root: QWidget) -> list[str]:
    return [*sideways_scrolling(root), *clipped_text(root), *overlapping_ticks(root),
            *cut_plots(root), *flat_plots(root), *cut_cells(root),
            *squeezed_controls(root), *squeezed_layouts(root), *overlapping_children(root)]
