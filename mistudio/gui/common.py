"""Small shared widgets: a table model over rows, the error dialog, theme palettes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

Index = QModelIndex | QPersistentModelIndex


class RowsModel(QAbstractTableModel):
    """A read-only table of a few hundred rows (artifact lists). The feature browser, with
    100k rows, uses numpy permutations instead (next issue)."""

    def __init__(self, headers: Sequence[str], parent: Any = None) -> None:
        super().__init__(parent)
        self.headers = list(headers)
        self.rows: list[list[Any]] = []

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


def show_error(parent: QWidget | None, message: str, details: str = "") -> QMessageBox:
    """The core's message in plain words; the traceback only under "Show Details"."""
    box = QMessageBox(QMessageBox.Icon.Warning, "miStudio", message, parent=parent)
    if details:
        box.setDetailedText(details)
    box.setModal(False)
    box.show()
    return box


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion with a dark or light palette (readable when projected)."""
    import pyqtgraph as pg

    app.setStyle("Fusion")
    dark = theme == "dark"
    pg.setConfigOptions(background="#1e2024" if dark else "w", foreground="#dcdcdc" if dark
                        else "#202020", antialias=False)
    if not dark:
        app.setPalette(app.style().standardPalette())
        return
    p = QPalette()
    base, text, mid = QColor(30, 32, 36), QColor(230, 230, 230), QColor(45, 48, 54)
    for role, color in ((QPalette.ColorRole.Window, mid), (QPalette.ColorRole.WindowText, text),
                        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, mid),
                        (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, mid),
                        (QPalette.ColorRole.ButtonText, text),
                        (QPalette.ColorRole.ToolTipBase, base),
                        (QPalette.ColorRole.ToolTipText, text),
                        (QPalette.ColorRole.Highlight, QColor(200, 60, 60)),
                        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
                        (QPalette.ColorRole.PlaceholderText, QColor(150, 150, 150))):
        p.setColor(role, color)
    app.setPalette(p)
