"""Quick start: the whole discovery workflow on the embedded model and the built-in corpus, with
the defaults, from one button: each stage's progress, the live training curves, then the
Feature browser on the result and a steering experiment ready to run.

The work is the core's ``run_quickstart`` in a child process, as from the command line; the dialog
only shows it. Opened on the first launch (no workspace yet) and from Help > Quick start.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.quickstart import STAGES
from mistudio.core.workflows.results import QuickstartResult
from mistudio.gui.common import PanelScroll, show_error, wrapped
from mistudio.gui.dashboard import Dashboard
from mistudio.gui.jobs import AppJobs

INTRO = ("Quick start runs the whole workflow on this computer, with nothing to set up: the "
         "built-in corpus (Python's own documentation) is tokenized for the embedded model "
         "(SmolLM2-135M), a middle layer's activations are extracted, a sparse autoencoder is "
         "trained on them and evaluated inside the model, its features are analysed and the "
         "most frequent ones labelled, and one of them is used to steer the model. About five "
         "minutes on a 2-core laptop; faster with a GPU. Steps already done are reused.")


class QuickStartDialog(QDialog):
    finishedRun = Signal(object)
    """The quick start's result (as ``mistudio quickstart --json`` prints it)."""

    def __init__(self, ws: Workspace, device: str = "auto", options: dict[str, Any] | None = None,
                 jobs: AppJobs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("miStudio quick start")
        self.ws, self.device = ws, device
        self.options = options or {}
        """Overrides of run_quickstart's defaults (tests use a tiny model and corpus)."""
        self.runner = (jobs or AppJobs(ws.root, self)).runner("quick start", self)
        self.runner.progress.connect(self._progress)
        self.runner.status.connect(lambda text: self.status.setText(text))
        self.runner.partial.connect(self._partial)
        self.runner.finished.connect(self._done)
        self.runner.failed.connect(self._failed)
        self.runner.cancelled.connect(lambda: self._ended("Cancelled. Start again to resume: "
                                                          "finished steps are reused."))
        self.result: QuickstartResult | None = None
        self.started_at = 0.0
        v = QVBoxLayout(self)
        v.addWidget(wrapped(QLabel(INTRO)))
        body = QHBoxLayout()
        stages = QVBoxLayout()
        self.stage_labels = []
        for title, _ in STAGES:
            label = QLabel(f"    {title}")
            stages.addWidget(label)
            self.stage_labels.append(label)
        stages.addStretch(1)
        body.addLayout(stages)
        self.dashboard = Dashboard()
        # the note on held-out figures as a tooltip: under the plots it outgrew the dialog
        self.dashboard.note.hide()
        self.dashboard.setToolTip(self.dashboard.note.text())
        body.addWidget(PanelScroll(self.dashboard), 1)  # large type: the plots scroll
        v.addLayout(body, 1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.status = QLabel("Press Start.")
        self.status.setWordWrap(True)
        v.addWidget(self.bar)
        v.addWidget(self.status)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.cancel_button.setEnabled(False)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, close):
            buttons.addWidget(b)
        v.addLayout(buttons)
        self.resize(1040, 640)

    def start(self) -> None:
        from mistudio.core.workflows.quickstart import QuickstartConfig

        cfg = QuickstartConfig(**{"device": self.device, **self.options})
        self.dashboard.reset(cfg.train_steps)
        if self.runner.start("quickstart", cfg):
            self.started_at = time.perf_counter()
            self.start_button.setEnabled(False)
            self.cancel_button.setEnabled(True)
            self._progress(0.0)

    def stage_at(self, fraction: float) -> int:
        return max(i for i, (_, start) in enumerate(STAGES) if fraction >= start - 1e-9)

    def _progress(self, fraction: float) -> None:
        self.bar.setValue(int(fraction * 1000))
        current = self.stage_at(fraction) if fraction < 1.0 else len(STAGES)  # all done
        for i, ((title, _), label) in enumerate(zip(STAGES, self.stage_labels, strict=True)):
            mark = "\u2713" if i < current else ("\u25b6" if i == current else "\u00b7")
            label.setText(f"{mark}  {title}")
            font = label.font()
            font.setBold(i == current)
            label.setFont(font)

    def _partial(self, items: list[Any]) -> None:
        rows = [r for r in items if isinstance(r, dict) and "step" in r]
        if rows:
            self.dashboard.add_rows(rows)

    def _ended(self, text: str) -> None:
        self.status.setText(text)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _failed(self, message: str, details: str) -> None:
        self._ended(f"Stopped: {message}")
        show_error(self, message, details)

    def _done(self, result: QuickstartResult) -> None:
        self.result = result
        self._progress(1.0)
        f, sae = result.features, result.sae
        seconds = time.perf_counter() - self.started_at
        took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        sinks = (" (the few attention-sink tokens, with norms tens of times larger, left out)"
                 if sae.massive_excluded else "")
        text = (f"Done in {took}. The SAE explains {sae.explained_variance or 0:.1%} of "
                f"the layer's variance{sinks} with {sae.l0 or 0:.0f} features per token; "
                f"{f.score_ge_0_7} of {f.labelled} labelled features score >= 0.7 on "
                "held-out text. The Features tab now shows them.")
        steer = result.steering
        if steer:
            text += (f"\nTry steering: feature {steer.feature} ({steer.label}) is ready in "
                     "the Steering tab; press Generate, then move its slider.")
        self._ended(text)
        self.start_button.setText("Run again")
        self.finishedRun.emit(result)

    def closeEvent(self, e: Any) -> None:
        if self.runner.running:  # keeps running; the main window's status bar shows it
            self.hide()
            e.ignore()
            return
        super().closeEvent(e)

    def keyPressEvent(self, e: Any) -> None:
        if e.key() == Qt.Key.Key_Escape and self.runner.running:
            self.hide()
            return
        super().keyPressEvent(e)
