"""Help > Documentation: the pages of docs/ in a window of their own, offline.

The pages are Markdown; ``QTextBrowser`` renders them (headings, tables, code, images) and
follows the links between them, so the same files serve the repository and the app. A link
to anything but a page (a web address) opens in the system's browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

HOME = "index.md"


def docs_folder() -> Path | None:
    """docs/ beside the package (a checkout), or inside the desktop bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    for candidate in ([Path(bundle) / "docs"] if bundle else []) + [
            Path(__file__).resolve().parents[2] / "docs"]:
        if (candidate / HOME).is_file():
            return candidate
    return None


class HelpWindow(QWidget):
    """A documentation browser: back, forward, home, and the page."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("miStudio documentation")
        self.resize(900, 700)
        v = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)  # pages here, web addresses in the system's browser
        self.browser.anchorClicked.connect(self._follow)
        for text, slot in (("Back", self.browser.backward), ("Forward", self.browser.forward),
                           ("Contents", self.home)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            bar.addWidget(button)
        bar.addStretch(1)
        v.addLayout(bar)
        v.addWidget(self.browser, 1)
        self.folder = docs_folder()
        self.home()

    def home(self) -> None:
        self.open_page(HOME)

    def open_page(self, name: str) -> None:
        if self.folder is None:
            self.browser.setMarkdown("# Documentation\n\nThe documentation pages are not "
                                     "installed with this copy of miStudio.")
            return
        self.browser.setSource(QUrl.fromLocalFile(str(self.folder / name)))

    def _follow(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)
            return
        self.browser.setSource(self.browser.source().resolved(url))
