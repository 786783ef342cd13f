"""What a class sees: every tab of a populated workspace at projector sizes, in every theme.

The workspace is shaped like a used one (tests/populated.py: 4,096 labelled features, past
runs, three models, long names). At 1280x720 and 1920x1080, in light, dark and presentation
mode, nothing may scroll sideways, no label, button, header or table cell may be cut, no
control may be squeezed under its minimum size, no plot cut, no tick labels overlap
(tests/geometry.py). Screenshots go to tests/screenshots/ for review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from mistudio.core.store.workspace import Workspace

SHOTS = Path(__file__).parent / "screenshots"  # git-ignored; look at them
SIZES = ((1280, 720), (1920, 1080))


@pytest.fixture
def populated(acts_ws: Workspace) -> tuple[Workspace, str]:
    from populated import populate

    return acts_ws, populate(acts_ws)


def _settle(qtbot: QtBot) -> None:
    for _ in range(3):  # layouts settle over a few event-loop turns
        qtbot.wait(40)


def _shot(win: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    assert win.grab().save(str(SHOTS / f"{name}.png"))


def _problems(win: Any, where: str) -> list[str]:
    from geometry import layout_problems

    return [f"{where}: {p}" for p in layout_problems(win)]


@pytest.mark.parametrize("theme", ["light", "dark", "presentation"])
def test_every_tab_of_a_populated_workspace_fits(qtbot: QtBot, populated: tuple[Workspace, str],
                                                 theme: str) -> None:
    from mistudio.gui.main_window import MainWindow

    ws, sae = populated
    win = MainWindow(str(ws.root))
    qtbot.addWidget(win)
    win.show()
    win.features.open_analysis(sae)
    qtbot.waitUntil(lambda: win.features.detail.feature >= 0, timeout=60_000)
    win.features.detail.steerRequested.emit(win.features.detail.feature)  # a steering row
    win.training.dashboard.show_run(win.training.dashboard.runs[0]) \
        if getattr(win.training.dashboard, "runs", None) else None
    if theme == "presentation":
        win.set_presentation(True)
    else:
        win.set_theme(theme)
    pal = QApplication.palette()
    for role in (QPalette.ColorRole.ButtonText, QPalette.ColorRole.Text):
        on = pal.color(QPalette.ColorGroup.Active, role)
        off = pal.color(QPalette.ColorGroup.Disabled, role)
        assert abs(on.lightness() - off.lightness()) >= 60, (role, on.name(), off.name())
    problems = []
    try:
        for size in SIZES:
            win.setWindowState(Qt.WindowState.WindowNoState)
            win.resize(*size)
            for panel in win.panels:
                win.show_panel(panel)
                _settle(qtbot)
                name = win.tabs.tabText(win.tabs.currentIndex()).replace("&", "")
                # the picture first: painting settles what layouts left pending
                _shot(win, f"populated-{theme}-{size[0]}-{name.lower()}")
                _settle(qtbot)
                problems += _problems(win, f"{size[0]}x{size[1]} {name}")
    finally:
        if theme == "presentation":
            win.set_presentation(False)
        win.set_theme("light")
    assert not problems, "\n".join(problems)


def test_the_lessons_three_steps_fit_in_every_theme(qtbot: QtBot, toy_ws: Workspace) -> None:
    """The lesson window at 1280x720 after a (tiny) lesson ran: each of its three pages in
    light, dark and presentation mode, its large type kept in all of them."""
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    lesson = win.open_lesson(dict(model="toy", dataset="pydoc", max_tokens=3000,
                                  context_length=64, batch_size=256, label_top=30,
                                  analyze_tokens=2500, seconds=2.0))
    with qtbot.waitSignal(lesson.runner.finished, timeout=300_000):
        lesson.start_button.click()
    from PySide6.QtWidgets import QListWidgetItem

    lesson.features.addItem(QListWidgetItem(  # as long as a real label line gets
        '"def" at the start of a line, before a function name or a class    (feature 4350, '
        "fires on 0.125% of tokens, score 0.97)"))
    problems = []
    try:
        for theme in ("light", "dark", "presentation"):
            if theme == "presentation":
                win.set_presentation(True)
            else:
                win.set_theme(theme)
            lesson.resize(1280, 720)
            _settle(qtbot)
            assert lesson.height() <= 720, (theme, lesson.height())  # fits a projector
            body = QApplication.font().pointSizeF()
            for page in range(3):
                lesson.pages.setCurrentIndex(page)
                _settle(qtbot)
                _shot(lesson, f"lesson-{theme}-{page + 1}")
                _settle(qtbot)
                problems += [f"{theme} step {page + 1}: {p}" for p in _problems(lesson, "")]
                title = lesson.pages.currentWidget().findChild(QLabel, "title")
                assert title.font().pointSizeF() >= 1.9 * body, (theme, page)  # large type
    finally:
        win.set_presentation(False)
        win.set_theme("light")
    assert not problems, "\n".join(problems)
    win.close()


@pytest.mark.parametrize("theme", ["light", "presentation"])
def test_every_dialog_fits_a_projector(qtbot: QtBot, populated: tuple[Workspace, str],
                                       theme: str) -> None:
    """The quick start, Add dataset, Pretrained SAEs and Help windows on a populated workspace:
    each fits 1280x720 with nothing cut, squeezed or scrolling sideways."""
    from mistudio.gui.dataset_dialog import AddDatasetDialog
    from mistudio.gui.main_window import MainWindow

    ws, _sae = populated
    win = MainWindow(str(ws.root))
    qtbot.addWidget(win)
    win.show()
    if theme == "presentation":
        win.set_presentation(True)
    problems = []
    try:
        win.show_help()
        dialogs = {"quick-start": win.quick_start(), "add-dataset": AddDatasetDialog(win.datasets,
                   win.jobs), "pretrained": win.pretrained_saes(), "help": win.help_window}
        for name, dialog in dialogs.items():
            dialog.show()
            if dialog.width() > 1280 or dialog.height() > 720:
                dialog.resize(min(dialog.width(), 1280), min(dialog.height(), 720))
            _settle(qtbot)
            _shot(dialog, f"dialog-{theme}-{name}")
            _settle(qtbot)
            assert dialog.width() <= 1280 and dialog.height() <= 720, (name, dialog.size())
            problems += _problems(dialog, f"{theme} {name}")
            dialog.close()
    finally:
        win.set_presentation(False)
    assert not problems, "\n".join(problems)
    win.close()
