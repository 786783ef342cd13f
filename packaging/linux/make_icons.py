"""Render resources/icons/mistudio.svg to the PNG sizes desktops look for (hicolor theme).

    QT_QPA_PLATFORM=offscreen python packaging/linux/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 32, 48, 64, 128, 256, 512)
ICONS = Path(__file__).resolve().parents[2] / "resources" / "icons"


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 - painting needs one
    svg = QSvgRenderer(str(ICONS / "mistudio.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        svg.render(painter)
        painter.end()
        out = ICONS / "hicolor" / f"{size}x{size}" / "apps" / "mistudio.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(str(out))
        print(out)


if __name__ == "__main__":
    main()
