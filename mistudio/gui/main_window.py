"""The main window: tabs over the workspace, the running job in the status bar, a monitor dock.

Settings (workspace, theme, geometry, recent workspaces, online mode) persist with QSettings.
The panels re-read the catalog whenever the window gains focus, so artifacts made from the CLI
appear. Closing the window cancels running jobs and joins their threads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QWidget,
)

from mistudio import __version__
from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.results import QuickstartResult
from mistudio.gui.common import PanelScroll, apply_theme, restyle_plots, show_error
from mistudio.gui.data_panels import DatasetsPanel
from mistudio.gui.features_panel import FeaturesPanel
from mistudio.gui.jobs import AppJobs, Runner
from mistudio.gui.models_panel import ModelsPanel
from mistudio.gui.monitor import SystemMonitor
from mistudio.gui.steering_panel import SteeringPanel
from mistudio.gui.training_panel import TrainingPanel

PRESENTATION_FONT = 1.6
"""Text size in presentation mode, relative to the desktop's."""
PRESENTATION_LINES = 2.0
"""Curve widths in presentation mode, relative to normal."""


def settings() -> QSettings:
    return QSettings("miStudio", "miStudio")


class MainWindow(QMainWindow):
    def __init__(self, workspace: str | None = None, monitor_interval: float = 1.0) -> None:
        super().__init__()
        # Workers run Python-heavy code (model loading, data bookkeeping) between torch calls;
        # handing the interpreter over every 2 ms instead of 5 keeps the UI thread's waits short.
        sys.setswitchinterval(0.002)
        self.settings = settings()
        self.presenting = False
        self.quickstart: Any = None
        self.lesson: Any = None
        self.help_window: Any = None
        first_launch = workspace is None and not self.settings.value("workspace")
        root = workspace or self.settings.value("workspace") or None
        self.ws = Workspace(root)
        self.jobs = AppJobs(self.ws.root, self, spare=True)
        """Every job of the window runs through this one job center."""
        self.setWindowTitle(f"miStudio {__version__} - {self.ws.root}")
        self.tabs = QTabWidget()
        self.setCentralWidget(self.tabs)
        self.datasets = DatasetsPanel(self.ws, self.jobs)
        self.models = ModelsPanel(self.ws, self.jobs)
        self.training = TrainingPanel(self.ws, self.jobs)
        self.features = FeaturesPanel(self.ws, self.jobs)
        self.steering = SteeringPanel(self.ws, self.jobs)
        self.features.steerRequested.connect(self.steer_with)
        self.features.quickStartRequested.connect(lambda: self.quick_start())
        self.features.trainRequested.connect(lambda: self.show_panel(self.training))
        self.training.analyseRequested.connect(self.analyse)
        self.training.extractRequested.connect(lambda: self.show_panel(self.models))
        self.panels = (self.datasets, self.models, self.training, self.features, self.steering)
        for panel, title in zip(self.panels, ("&Datasets", "&Models", "&Training", "&Features",
                                              "&Steering"), strict=True):
            # In a scroll area, so that large text (presentation mode, high DPI) scrolls
            # instead of forcing the window past the screen; at normal sizes it never scrolls.
            self.tabs.addTab(PanelScroll(panel), title)
        self.file_runner = self.jobs.runner("file", self)  # the File menu's jobs
        self.file_runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.file_runner.finished.connect(self._file_job_done)
        self.doctor_runner = self.jobs.runner("doctor", self)
        self.doctor_runner.finished.connect(self._doctor_show)
        self.doctor_runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.device = str(self.settings.value("device") or "auto")
        self.dtype = str(self.settings.value("dtype") or "auto")
        self.training.device = self.models.device = self.features.device = self.device
        self.steering.device = self.device
        self.models.dtype_setting = self.dtype
        self.training.restore(self.settings)
        self._status_bar()
        self.monitor = SystemMonitor(interval=monitor_interval)
        self.dock = QDockWidget("System monitor", self)
        self.dock.setObjectName("monitor")
        self.dock.setWidget(self.monitor)
        self.monitor.setMinimumHeight(70)
        self.monitor.setMaximumHeight(160)  # a strip under the tabs: the panels keep the width
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.dock)
        # the panels get the rest; the monitor keeps its legend line and a plot under it
        title = self.dock.fontMetrics().height() + 12
        self.resizeDocks([self.dock], [max(100, self.monitor.minimumSizeHint().height() + title)],
                         Qt.Orientation.Vertical)
        self._menus()
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 720)
        self._catalog_mtime = self._catalog_stamp()
        self.watch = QTimer(self)
        self.watch.setInterval(2000)
        self.watch.timeout.connect(self._catalog_changed)
        self.watch.start()
        if first_launch and not self.ws.catalog.list("sae"):  # nothing here yet: guide
            QTimer.singleShot(0, self.quick_start)
        self.settings.setValue("workspace", str(self.ws.root))
        recent = [str(self.ws.root), *[r for r in self.recent() if r != str(self.ws.root)]][:8]
        self.settings.setValue("recent", recent)

    # -- status bar: the latest running job, its progress, Cancel -------------------------------
    def _status_bar(self) -> None:
        bar = self.statusBar()
        self.job_label = QLabel("Ready")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(240)
        self.job_progress.setRange(0, 1000)
        self.job_progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        bar.addWidget(self.job_label, 1)
        bar.addPermanentWidget(self.job_progress)
        bar.addPermanentWidget(self.cancel_button)
        self.online_label = QLabel("")
        bar.addPermanentWidget(self.online_label)
        self._active: Runner | None = None
        self._last_status: dict[int, str] = {}
        self.jobs.activeChanged.connect(self._on_active)
        self.jobs.reported.connect(self._on_report)
        self.cancel_button.clicked.connect(lambda: self._active and self._active.cancel())

    def _on_active(self) -> None:
        """A job started or ended: show the latest one still running (or Ready)."""
        active = self.jobs.active[-1] if self.jobs.active else None
        ended = self._active is not None and self._active is not active
        self._active = active
        busy = active is not None
        self.job_progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if busy:
            self.job_label.setText(self._last_status.get(id(active), active.title))
        else:
            self.job_label.setText("Ready")
            self.job_progress.setValue(0)
        if ended:  # a finished job may have added artifacts
            self.refresh()

    def _on_report(self, runner: Runner, progress: float | None, status: str | None) -> None:
        if status is not None:
            self._last_status[id(runner)] = status
        if runner is not self._active or runner.job is None:
            return
        text = self._last_status.get(id(runner), runner.title)
        if progress is not None:
            self.job_progress.setValue(int(progress * 1000))
            text += eta_text(time.monotonic() - runner.job.started, progress)
        self.job_label.setText(text)

    # -- menus ----------------------------------------------------------------------------------
    def _menus(self) -> None:
        m = self.menuBar()
        file = m.addMenu("&File")
        self._action(file, "&Open workspace...", self.open_workspace, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Recent workspaces")
        for path in self.recent():
            self.recent_menu.addAction(path, lambda p=path: self.switch_workspace(p))
        file.addSeparator()
        self._action(file, "&Import SAE...", self.import_sae, "Ctrl+I")
        self._action(file, "&Pretrained SAEs...", self.pretrained_saes, "Ctrl+P")
        self._action(file, "&Export SAE...", self.export_sae, "Ctrl+E")
        file.addSeparator()
        self._action(file, "&Rebuild catalog", self.rebuild_catalog)
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        view = m.addMenu("&View")
        self._action(view, "&Dark theme", lambda: self.set_theme("dark"))
        self._action(view, "&Light theme", lambda: self.set_theme("light"))
        view.addAction(self.dock.toggleViewAction())
        self.presentation_action = view.addAction("&Presentation mode (large text)")
        self.presentation_action.setCheckable(True)
        self.presentation_action.setShortcut(QKeySequence("F11"))
        self.presentation_action.triggered.connect(self.set_presentation)
        leave = QAction(self)
        leave.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        leave.triggered.connect(lambda: self.presenting and self.set_presentation(False))
        self.addAction(leave)
        self._action(view, "&Refresh", self.refresh, QKeySequence.StandardKey.Refresh)
        settings_menu = m.addMenu("&Settings")
        self.device_group = self._choices(settings_menu.addMenu("&Device"),
                                          ("auto", "cpu", "cuda", "mps"), self.device,
                                          self.set_device)
        self.dtype_group = self._choices(settings_menu.addMenu("Model &dtype"),
                                         ("auto", "float32", "float16", "bfloat16"), self.dtype,
                                         self.set_dtype)
        self.online_action = settings_menu.addAction("Allow &online downloads (Hugging Face hub)")
        self.online_action.setCheckable(True)
        self.online_action.triggered.connect(self.set_online)
        help_ = m.addMenu("&Help")
        self._action(help_, "&Quick start...", self.quick_start, "Ctrl+Shift+Q")
        self._action(help_, "&Lesson (for a class)...", lambda: self.open_lesson(), "Ctrl+L")
        self._action(help_, "&Documentation", self.show_help, "F1")
        self._action(help_, "&About miStudio", self.about)
        self._action(help_, "&Doctor (versions, device, memory)", self.doctor)

    def _choices(self, menu: Any, values: tuple[str, ...], current: str, fn: Any) -> QActionGroup:
        group = QActionGroup(self)  # exclusive: one checked at a time
        for value in values:
            act = menu.addAction(value)
            act.setCheckable(True)
            act.setChecked(value == current)
            group.addAction(act)
            act.triggered.connect(lambda _=False, v=value: fn(v))
        return group

    def _action(self, menu: Any, text: str, fn: Any, shortcut: Any = None) -> QAction:
        act = menu.addAction(text)
        act.triggered.connect(fn)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        return act

    def recent(self) -> list[str]:
        value = self.settings.value("recent") or []
        return [value] if isinstance(value, str) else list(value)

    def open_workspace(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Workspace folder", str(self.ws.root))
        if path:
            self.switch_workspace(path)

    def switch_workspace(self, path: str) -> None:
        """Open another workspace in a fresh window (jobs of this one finish first)."""
        if self.jobs.active:
            QMessageBox.information(self, "miStudio", "Wait for the running job, or cancel it.")
            return
        self.settings.setValue("workspace", path)
        new = MainWindow(path)
        new.show()
        self.close()

    def quick_start(self, options: dict[str, Any] | None = None) -> Any:
        """The guided run of the whole workflow (one dialog per window, kept while it runs)."""
        from mistudio.gui.quickstart_dialog import QuickStartDialog

        if self.quickstart is None:
            self.quickstart = QuickStartDialog(self.ws, self.device, options, self.jobs, self)
            self.quickstart.finishedRun.connect(self._quickstart_done)
        elif options is not None:
            self.quickstart.options = options
        self.quickstart.show()
        self.quickstart.raise_()
        return self.quickstart

    def open_lesson(self, options: dict[str, Any] | None = None) -> Any:
        """Help > Lesson: train, meet the features and steer, in large type (one window)."""
        from mistudio.gui.lesson_window import LessonWindow

        if self.lesson is None:
            self.lesson = LessonWindow(self.ws, self.device, options, self.jobs)
        else:
            self.lesson.reopen()
            if options is not None:
                self.lesson.options = options
        self.lesson.show()
        self.lesson.raise_()
        return self.lesson

    def _quickstart_done(self, result: QuickstartResult) -> None:
        """Open the Feature browser on the result and set up a steering experiment."""
        self.refresh()
        features = result.features
        best = features.best[0].feature if features.best else -1
        self.features.open_analysis(features.name, best)
        self.show_panel(self.features)
        steer = result.steering
        if steer:
            self.steering.refresh()
            self.steering.clear_features()
            self.steering.units.setCurrentIndex(self.steering.units.findData("max"))
            self.steering.add_feature(result.sae.name, steer.feature, steer.coefficient_x_max)
            self.steering.prompt.setPlainText(steer.prompt)

    def analyse(self, sae: str) -> None:
        """From the Training tab: analyse a finished run in the Features tab."""
        self.features.refresh()
        self.show_panel(self.features)
        self.features.analyse_sae(sae)

    def steer_with(self, analysis: str, feature: int) -> None:
        """From the feature browser: this feature (its SAE is named like its analysis) in the
        Steering tab, ready to generate."""
        art = self.ws.catalog.find("features", analysis)
        sae = (art.provenance.sae or analysis) if art is not None else analysis
        self.steering.refresh()
        self.steering.add_feature(sae, feature)
        self.show_panel(self.steering)

    def show_panel(self, panel: QWidget) -> None:
        self.tabs.setCurrentIndex(self.panels.index(panel))

    def current_panel(self) -> QWidget:
        return self.panels[self.tabs.currentIndex()]

    def set_presentation(self, on: bool) -> None:
        """For a projector at the back of a classroom: text 1.6 times larger, curves twice as
        thick, white on black, the monitor hidden and the window full screen. F11 or Esc
        returns to what was there before."""
        app = QApplication.instance()
        self.presentation_action.setChecked(on)
        if not isinstance(app, QApplication) or on == self.presenting:
            return
        self.presenting = on
        if not hasattr(self, "_base_point_size"):
            self._base_point_size = app.font().pointSizeF()
        font = app.font()
        font.setPointSizeF(self._base_point_size * (PRESENTATION_FONT if on else 1.0))
        app.setFont(font)  # before the theme: the contrast style sheet takes its size from it
        apply_theme(app, "contrast" if on else str(self.settings.value("theme") or "light"))
        self.features.fit_columns()  # widths measured in the new font
        if on:
            self._before_presentation = (self.dock.isVisible(), self.windowState())
            self.dock.hide()
            restyle_plots(self, PRESENTATION_LINES)
            self.showFullScreen()
        else:
            dock_visible, state = self._before_presentation
            self.dock.setVisible(dock_visible)
            restyle_plots(self, 1 / PRESENTATION_LINES)
            self.setWindowState(state)
        self.settings.setValue("presentation", on)

    def set_dtype(self, dtype: str) -> None:
        """How models are loaded for extraction (auto: float32 on CPU, bfloat16/float16 on GPU)."""
        self.dtype = self.models.dtype_setting = dtype
        self.settings.setValue("dtype", dtype)
        self.models.refresh()

    def set_device(self, device: str) -> None:
        self.models.device = device
        self.device = self.training.device = self.features.device = device
        self.steering.device = device
        self.jobs.center.forget_models()
        self.settings.setValue("device", device)
        self.models.refresh()

    def set_online(self, on: bool) -> None:
        """Off by default and not remembered across starts: a clear, deliberate choice."""
        from mistudio.core.runtime.online import set_online

        set_online(on)
        self.refresh()

    def import_sae(self, folder: str | None = None) -> None:
        from PySide6.QtWidgets import QInputDialog

        folder = folder or QFileDialog.getExistingDirectory(self, "SAE folder (SAELens, "
                                                            "sparsify, Gemma Scope, ...)")
        if not folder:
            return
        from_files = "(what its files say)"
        models = [from_files, *(m.name for m in self.ws.catalog.list("model"))]
        model, ok = QInputDialog.getItem(self, "Import SAE", "Model it belongs to", models, 0,
                                         False)
        if not ok:
            return
        hook, ok = QInputDialog.getText(
            self, "Import SAE", "Hook point (layers.L.HOOK); empty: what its files say")
        if not ok:
            return
        name = Path(folder).name.replace(" ", "-")
        self.file_runner.start("import_sae", Path(folder), name,
                               None if model == from_files else model, hook.strip() or None,
                               title=f"Importing {name}")

    def rebuild_catalog(self) -> None:
        """File > Rebuild catalog: re-index the workspace from its manifests (job history kept;
        a damaged catalog file is moved aside, never deleted)."""
        self.file_runner.start("rebuild_catalog")

    def pretrained_saes(self) -> Any:
        """File > Pretrained SAEs: browse the published releases and pull one."""
        from mistudio.gui.pretrained_dialog import PretrainedDialog

        dialog = PretrainedDialog(self.ws, self, self.jobs)
        dialog.pulled.connect(lambda _name: self.refresh())
        dialog.show()
        return dialog

    def export_sae(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        saes = [a.name for a in self.ws.catalog.list("sae") if a.status == "complete"]
        if not saes:
            show_error(self, "There is no trained SAE to export yet.")
            return
        name, ok = QInputDialog.getItem(self, "Export SAE", "SAE", saes, 0, False)
        if not ok:
            return
        fmt, ok = QInputDialog.getItem(self, "Export SAE", "Format", ["saelens", "onnx"], 0,
                                       False)
        out = QFileDialog.getExistingDirectory(self, "Empty folder to export into")
        if not ok or not out:
            return

        self.file_runner.start("export_sae", name, Path(out), fmt, title=f"Exporting {name}")

    def _file_job_done(self, result: Any) -> None:
        """What an import, export or catalog rebuild did, in the status bar."""
        kind = self.file_runner.kind
        if kind == "import_sae":
            text = (f"Imported SAE {result.name} at {result.summary.hook} of "
                    f"{result.provenance.model}.")
        elif kind == "export_sae":
            text = f"Exported {result['sae']} ({result['format']}) to {result['out']}."
        else:
            self.ws.close()  # the catalog may have been replaced: open it afresh
            text = str(result)
        self.statusBar().showMessage(text, 8000)
        self.refresh()

    def set_theme(self, theme: str) -> None:
        """Light or dark (presentation mode keeps its own until it ends)."""
        app = QApplication.instance()
        if isinstance(app, QApplication) and not self.presenting:
            apply_theme(app, theme)
        self.settings.setValue("theme", theme)

    def show_help(self) -> None:
        """The documentation pages (docs/) in their own window, kept for the session."""
        from mistudio.gui.help_window import HelpWindow

        if self.help_window is None:
            self.help_window = HelpWindow()
        self.help_window.show()
        self.help_window.raise_()

    def about(self) -> None:
        from mistudio.buildinfo import version_text
        from mistudio.core.runtime.plugins import GROUPS, installed

        found = [f"{p.name} ({GROUPS[p.group]}, {p.package})" for p in installed()]
        plugins = "\nPlugins: " + ("; ".join(found) if found else "none installed")
        QMessageBox.about(self, "About miStudio", f"{version_text()}\nWorkspace: {self.ws.root}"
                          f"{plugins}\n\nA local workbench for mechanistic interpretability: "
                          "train sparse autoencoders, browse their features, steer models with "
                          "them.")

    def doctor(self) -> None:
        """The doctor report (device, memory, disk, model), gathered in a child process."""
        self.doctor_runner.start("doctor")

    def _doctor_show(self, report: dict[str, Any]) -> None:
        text = "\n".join(f"{k}: {v}" for k, v in report.items() if not isinstance(v, dict | list))
        QMessageBox(QMessageBox.Icon.Information, "Doctor", text, parent=self).show()

    # -- catalog refresh and shutdown ---------------------------------------------------------
    def refresh(self) -> None:
        self._catalog_mtime = self._catalog_stamp()  # what is shown now; the watch skips it
        for panel in (self.datasets, self.models, self.training, self.features, self.steering):
            panel.refresh()
        from mistudio.core.runtime.online import is_online

        online = is_online()
        self.online_label.setText("ONLINE: hub downloads allowed" if online else "")
        self.online_label.setStyleSheet("color: white; background: #c0392b; padding: 2px 6px;"
                                        if online else "")
        if hasattr(self, "online_action"):
            self.online_action.setChecked(online)

    def _catalog_stamp(self) -> float:
        files = [self.ws.root / "metadata" / n for n in ("catalog.sqlite", "catalog.sqlite-wal")]
        return max((f.stat().st_mtime_ns for f in files if f.exists()), default=0) / 1e9

    def _catalog_changed(self) -> None:
        """Refresh when another process (the CLI) wrote to the catalog."""
        stamp = self._catalog_stamp()
        if stamp != self._catalog_mtime and not self.jobs.active:
            self.refresh()

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.WindowActivate:  # back from the terminal: CLI changes show
            self.refresh()
        return super().event(e)

    def closeEvent(self, e: Any) -> None:
        if self.presenting:  # fonts, theme and geometry as they were, before saving them
            self.set_presentation(False)
        for window in (self.lesson, self.help_window):
            if window is not None:
                window.close()
        self.jobs.shutdown()  # every job cancelled and waited for, the model services ended
        self.monitor.shutdown()
        self.settings.setValue("geometry", self.saveGeometry())
        self.training.remember(self.settings)
        self.ws.close()
        super().closeEvent(e)


def eta_text(elapsed: float, fraction: float) -> str:
    """" - about 1:20 left", from the rate so far; nothing until there is a rate to trust."""
    if fraction <= 0.02 or fraction >= 1.0 or elapsed < 3.0:
        return ""
    left = elapsed * (1.0 - fraction) / fraction
    return f" - about {int(left // 60)}:{int(left % 60):02d} left"
