"""Small shared widgets: a table model over rows, the error dialog, theme palettes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
)
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFrame,
    QLabel,
    QMessageBox,
    QScrollArea,
    QStyle,
    QTableView,
    QWidget,
)

Index = QModelIndex | QPersistentModelIndex


class RowsModel(QAbstractTableModel):
    """A read-only table of a few hundred rows (artifact lists). The feature browser, with
    100k rows, uses numpy permutations instead (next issue)."""

    def __init__(self, headers: Sequence[str], parent: Any = None) -> None:
        super().__init__(parent)
        self.headers = list(headers)
        self.rows: list[list[Any]] = []
        self.tips: list[list[str]] | None = None
        """Optional tooltips, one per cell."""

    def set_rows(self, rows: list[list[Any]]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.headers)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and index.isValid():
            v = self.rows[index.row()][index.column()]
            if isinstance(v, float):
                return f"{v:.4g}"
            return "" if v is None else str(v)
        if role == Qt.ItemDataRole.ToolTipRole and index.isValid() and self.tips:
            return self.tips[index.row()][index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.isValid():
            v = self.rows[index.row()][index.column()]
            if isinstance(v, int | float):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None


class FittedTable(QTableView):
    """A table whose columns fit their contents, again whenever its rows or its font change
    (presentation mode enlarges every font: columns fitted to the old one cut each word).
    Wider than its view, it scrolls sideways rather than cut a cell."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHorizontalScrollMode(QTableView.ScrollMode.ScrollPerPixel)
        # a selected row draws every header in bold, wider than the widths fitted to them
        self.horizontalHeader().setHighlightSections(False)
        # a table on a hidden tab gets a new app font only when shown again: refit then
        self._header = self.horizontalHeader()
        self._header.installEventFilter(self)

    def fit(self) -> None:
        if self.model() is not None and self.model().rowCount():
            self.resizeColumnsToContents()

    def changeEvent(self, e: Any) -> None:
        super().changeEvent(e)
        if e.type() == QEvent.Type.FontChange:
            self.fit()

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if obj is self._header and e.type() in (QEvent.Type.FontChange, QEvent.Type.Polish):
            QTimer.singleShot(0, self, self.fit)  # dropped if the table is gone by then
        return False


class PanelScroll(QScrollArea):
    """A panel that fills the tab, and scrolls only when the tab is smaller than the panel's
    minimum size (large text in presentation mode, a small screen). QScrollArea's own resizing
    gives height-for-width widgets (anything with a word-wrapping label) their preferred height,
    which would make every panel scroll."""

    def __init__(self, panel: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidget(panel)
        panel.installEventFilter(self)

    def _fit(self) -> None:
        """The panel at the area's size, or its minimum where that is larger. The room is
        measured without the scroll bars the result needs: sized to the whole viewport, a panel
        taller than the tab would get a vertical bar, lose its width and scroll sideways."""
        panel = self.widget()
        need = panel.minimumSizeHint().expandedTo(panel.minimumSize())
        room = self.contentsRect().size()
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        width, height = room.width(), room.height()
        for _ in range(2):  # one bar can make the other necessary
            width = room.width() - (bar if need.height() > height else 0)
            height = room.height() - (bar if need.width() > width else 0)
        panel.resize(max(width, need.width()), max(height, need.height()))

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        self._fit()

    @staticmethod
    def refit_around(widget: QWidget) -> None:
        """Fit the panel holding ``widget`` again, once the event loop turns: a minimum set
        deep inside (behind a splitter) does not always reach the panel as a layout request."""
        parent = widget.parentWidget()
        while parent is not None and not isinstance(parent, PanelScroll):
            parent = parent.parentWidget()
        if parent is not None:
            QTimer.singleShot(0, parent, parent._fit)

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if e.type() == QEvent.Type.LayoutRequest:  # the panel's minimum may have changed
            self._fit()
        return False


class _WrappedHeight(QObject):
    """Keeps a word-wrapped label's minimum height at what its lines need at its width."""

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        # widths under 200 px are a widget's default geometry before its first layout: a
        # minimum taken from them is dozens of lines and pushed a dialog off the screen
        if e.type() == QEvent.Type.Resize and isinstance(obj, QLabel) and obj.width() >= 200:
            need = obj.heightForWidth(obj.width())
            if need > 0 and need != obj.minimumHeight():
                obj.setMinimumHeight(need)
        return False


def wrapped(label: QLabel) -> QLabel:
    """``label`` word-wrapped, its layout told how tall its lines are: a layout counts a
    wrapped label as one line, so the widgets around it were squeezed and drawn over it."""
    label.setWordWrap(True)
    guard = _WrappedHeight(label)
    label.installEventFilter(guard)
    return label


def show_error(parent: QWidget | None, message: str | BaseException,
               details: str = "") -> QMessageBox:
    """The core's message in plain words, its fixes naming the app's controls (an error is
    rendered with :mod:`mistudio.gui.words`); the traceback only under "Show Details"."""
    from mistudio.gui.words import app_text

    box = QMessageBox(QMessageBox.Icon.Warning, "miStudio", app_text(message), parent=parent)
    if details:
        box.setDetailedText(details)
    box.setModal(False)
    box.show()
    return box


THEMES = {
    # window, text, base, highlight, plot background, plot foreground
    "dark": ((45, 48, 54), (230, 230, 230), (30, 32, 36), (200, 60, 60), "#1e2024", "#dcdcdc"),
    "contrast": ((0, 0, 0), (255, 255, 255), (0, 0, 0), (255, 210, 0), "#000000", "#ffffff"),
}
"""Palettes besides the light default; "contrast" (white on black, yellow selection) is the
presentation mode's, for projectors that wash out greys."""


CONTRAST_STYLE = """
QWidget { font-size: %.1fpt; }
QWidget:disabled { color: #8a8a8a; }
QCheckBox::indicator, QGroupBox::indicator { width: 0.9em; height: 0.9em;
    border: 2px solid white; background: black; }
QCheckBox::indicator:checked, QGroupBox::indicator:checked { background: #ffd200; }
QCheckBox::indicator:disabled, QGroupBox::indicator:disabled { border-color: #6a6a6a; }
QLineEdit, QPlainTextEdit, QTextEdit, QAbstractSpinBox, QComboBox { border: 1px solid #d0d0d0; }
QLineEdit:disabled, QAbstractSpinBox:disabled, QComboBox:disabled { border-color: #5a5a5a; }
QAbstractSpinBox::up-arrow { width: 0; height: 0; border-left: 0.3em solid black;
    border-right: 0.3em solid black; border-bottom: 0.35em solid white; }
QAbstractSpinBox::down-arrow, QComboBox::down-arrow { width: 0; height: 0;
    border-left: 0.3em solid black; border-right: 0.3em solid black;
    border-top: 0.35em solid white; }
QAbstractSpinBox::up-button, QAbstractSpinBox::down-button, QComboBox::drop-down {
    border: none; width: 1.1em; }
QPushButton { border: 2px solid white; padding: 0.15em 0.6em; }
QPushButton:disabled { border: 1px dashed #6a6a6a; }
QSlider::groove:horizontal { height: 0.3em; background: #8a8a8a; }
QSlider::handle:horizontal { width: 0.8em; margin: -0.4em 0; background: #ffd200; }
"""
"""Fusion draws check boxes, frames, slider tracks and disabled controls in shades of the
window colour, invisible on pure black, so the contrast theme draws them with a style sheet;
widgets under a style sheet no longer follow the application font, so it carries the text
size too."""
DISABLED_TEXT = {"dark": (128, 128, 128), "contrast": (138, 138, 138)}
"""Text of disabled controls: visibly dimmer than enabled text (Fusion's default on a custom
palette is the same colour as enabled text)."""


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion with a light, dark or high-contrast palette; plots already drawn follow."""
    import pyqtgraph as pg

    app.setStyle("Fusion")
    colors = THEMES.get(theme)
    pg.setConfigOptions(background=colors[4] if colors else "w",
                        foreground=colors[5] if colors else "#202020", antialias=False)
    if colors is None:
        app.setPalette(app.style().standardPalette())
    else:
        window, text, base, highlight = (QColor(*c) for c in colors[:4])
        selected_text = QColor(0, 0, 0) if theme == "contrast" else QColor(255, 255, 255)
        p = QPalette()
        for role, color in ((QPalette.ColorRole.Window, window),
                            (QPalette.ColorRole.WindowText, text),
                            (QPalette.ColorRole.Base, base),
                            (QPalette.ColorRole.AlternateBase, window),
                            (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, window),
                            (QPalette.ColorRole.ButtonText, text),
                            (QPalette.ColorRole.ToolTipBase, base),
                            (QPalette.ColorRole.ToolTipText, text),
                            (QPalette.ColorRole.Highlight, highlight),
                            (QPalette.ColorRole.HighlightedText, selected_text),
                            (QPalette.ColorRole.PlaceholderText, QColor(150, 150, 150))):
            p.setColor(role, color)
        dim = QColor(*DISABLED_TEXT.get(theme, (128, 128, 128)))
        for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                     QPalette.ColorRole.ButtonText):
            p.setColor(QPalette.ColorGroup.Disabled, role, dim)
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Base, window)
        app.setPalette(p)
    app.setStyleSheet(CONTRAST_STYLE % app.font().pointSizeF() if theme == "contrast" else "")
    for top in app.topLevelWidgets():
        restyle_plots(top)


def restyle_plots(root: QWidget, line_scale: float | None = None) -> None:
    """Plots under ``root`` take the current plot colours and the application font (their axes
    do not follow either by themselves); ``line_scale`` multiplies curve widths."""
    import pyqtgraph as pg

    background = pg.getConfigOption("background")
    foreground = pg.getConfigOption("foreground")
    font = QApplication.font()
    for view in root.findChildren(pg.GraphicsView):
        view.setBackground(background)
        for item in view.items():
            if isinstance(item, pg.AxisItem):
                item.setPen(foreground)
                item.setTextPen(foreground)
                item.setStyle(tickFont=font)
            elif isinstance(item, pg.PlotDataItem) and line_scale:
                pen = pg.mkPen(item.opts["pen"])
                pen.setWidthF(max(pen.widthF(), 1.0) * line_scale)
                item.setPen(pen)
            elif isinstance(item, pg.LabelItem):
                item.setText(item.text, color=foreground, size=f"{font.pointSizeF():.0f}pt")


def name_combo(min_chars: int = 14) -> QComboBox:
    """A combo box of artifact names, which can be long ("lecture-notes-week-12-...",
    "wide-batchtopk-x16-run-2 (layers.1.resid_post)"): sized for ``min_chars`` characters rather
    than its longest item (which pushed panels wider than a projector), the whole name in the
    drop-down list and in its tooltip."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(min_chars)
    combo.currentTextChanged.connect(combo.setToolTip)
    return combo


def refill_combo(combo: Any, items: Sequence[str]) -> None:
    """Replace a combo box's items, keeping the user's choice when it is still there: the
    panels refresh on every focus and catalog change, and clearing the box would silently put
    a form back to its first item."""
    current = combo.currentText()
    if [combo.itemText(i) for i in range(combo.count())] == list(items):
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(items))
    if current in items:
        combo.setCurrentText(current)
    combo.blockSignals(False)
    if combo.currentText() != current:
        combo.currentTextChanged.emit(combo.currentText())
