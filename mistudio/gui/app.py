"""Starting the desktop app."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from mistudio.gui.common import apply_theme
from mistudio.gui.main_window import MainWindow, settings


def can_show_window() -> bool:
    """A display exists (or Qt was told to draw offscreen)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def resources_dir() -> Path:
    """``resources/`` of a checkout, or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(bundle) / "resources" if bundle else Path(__file__).resolve().parents[2] / \
        "resources"


def run_app(workspace: str | None = None, quit_after_ms: int | None = None,
            report_startup: bool = False) -> int:
    """Open the main window and run until it closes (``quit_after_ms``: for smoke tests;
    ``report_startup``: print the seconds from process start to the window drawn, then quit)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("miStudio")
    app.setOrganizationName("miStudio")
    app.setDesktopFileName("mistudio")  # matches the .desktop entry: docks group the windows
    icon = resources_dir() / "icons" / "mistudio.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    apply_theme(app, str(settings().value("theme") or "light"))
    window = MainWindow(workspace)
    window.show()
    if report_startup:
        def shown() -> None:
            import psutil

            app.processEvents()
            seconds = time.time() - psutil.Process().create_time()
            print(f"window shown {seconds:.2f} s after the process started", flush=True)
            window.close()
        QTimer.singleShot(0, shown)
    if quit_after_ms is not None:
        QTimer.singleShot(quit_after_ms, window.close)
    return int(app.exec())


def smoke_window() -> dict[str, object]:
    """Build the main window on an empty temporary workspace, draw every tab, close it (the
    self-test's check that the Qt parts of an installation or bundle are complete)."""
    import tempfile

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="mistudio-window-") as tmp:
        window = MainWindow(tmp)
        window.resize(1280, 720)
        window.show()
        for i in range(window.tabs.count()):
            window.tabs.setCurrentIndex(i)
            app.processEvents()
        size = window.grab().size()
        window.close()
        app.processEvents()
    return {"tabs": window.tabs.count(), "size": f"{size.width()}x{size.height()}"}
