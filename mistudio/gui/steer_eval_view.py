"""The Steering tab's Evaluate view: the current features over a prompt set, with a strength
sweep, each scorer's change with its 95% interval, and the trade-off curve (concept score
against perplexity). Runs :func:`mistudio.core.steering.evaluate.evaluate_steering`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.runtime.plugins import installed_names
from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import RowsModel, show_error
from mistudio.gui.jobs import AppJobs

FILE = "A file..."


class SteerEvalView(QWidget):
    def __init__(self, ws: Workspace, spec: Callable[[], Any], preset: Callable[[], str],
                 device: Callable[[], str], jobs: AppJobs,
                 parent: QWidget | None = None) -> None:
        """``spec``, ``preset``, ``device``: the steering panel's current spec, chosen preset
        and device (read when a run starts)."""
        from mistudio.core.steering.scorers import BUILTIN_PROMPTS

        super().__init__(parent)
        self.ws, self.spec, self.preset, self.device = ws, spec, preset, device
        self.result: dict[str, Any] | None = None
        v = QVBoxLayout(self)
        intro = QLabel("Does the concept appear over many prompts, and what does it cost? Each "
                       "prompt is continued several times with and without the steering (same "
                       "seeds); the steered features' activations in the text, and optionally a "
                       "word list, are compared, with perplexity under the unsteered model as "
                       "the cost.")
        intro.setWordWrap(True)
        v.addWidget(intro)
        form = QFormLayout()
        self.prompts = QComboBox()
        self.prompts.addItems([*BUILTIN_PROMPTS, FILE])
        self.prompts.activated.connect(self._pick_file)
        self.samples = QSpinBox(minimum=1, maximum=20, value=2)
        self.tokens = QSpinBox(minimum=4, maximum=256, value=24)
        self.strengths = QLineEdit("0.5, 1, 2")
        self.words = QLineEdit()
        self.words.setPlaceholderText("optional: words whose share to score, e.g. data, list")
        for label, w in (("Prompts", self.prompts), ("Samples per prompt", self.samples),
                         ("Tokens per sample", self.tokens), ("Strengths (sweep)", self.strengths),
                         ("Word list", self.words)):
            form.addRow(label, w)
        self.plugin_scorers = [QCheckBox(name) for name in installed_names(
            "mistudio.steering_scorers")]
        if self.plugin_scorers:  # installed plugins' text scorers, each one a column
            row = QHBoxLayout()
            for box in self.plugin_scorers:
                row.addWidget(box)
            row.addStretch(1)
            form.addRow("Plugin scorers", row)
        v.addLayout(form)
        buttons = QHBoxLayout()
        self.run_btn = QPushButton("Evaluate")
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.keep_btn = QPushButton("Keep with the preset")
        self.keep_btn.setEnabled(False)
        self.keep_btn.clicked.connect(self.keep)
        for b in (self.run_btn, self.cancel_btn, self.keep_btn):
            buttons.addWidget(b)
        v.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        v.addWidget(self.status)
        self.model = RowsModel(("Strength", "Scorer", "Unsteered", "Steered", "Change",
                                "95% interval", "Perplexity"))
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().setVisible(False)
        v.addWidget(self.table, 2)
        self.plot = pg.PlotWidget(title="Trade-off: concept score against perplexity")
        self.plot.setLabel("bottom", "perplexity of the steered text (unsteered model)")
        self.plot.setLabel("left", "concept score change")
        self.plot.setMinimumHeight(160)
        self.curve = pg.PlotDataItem([], [], symbol="o", pen=pg.mkPen("#f0962a", width=2))
        self.plot.addItem(self.curve)
        self.labels: list[Any] = []
        v.addWidget(self.plot, 3)
        self.runner = jobs.runner("steering evaluation", self)
        self.runner.status.connect(self.status.setText)
        self.runner.finished.connect(self._done)
        self.runner.failed.connect(lambda m, d: (self.status.setText(m), show_error(self, m, d)))
        self.runner.cancelled.connect(self._cancelled)
        self.runner.partial.connect(self._partial)
        self.points: list[Any] = []
        """The strengths evaluated so far (shown as each one finishes, kept on cancel)."""
        self.runner.running_changed.connect(self._running)
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self._file = ""

    def _pick_file(self, _index: int) -> None:
        if self.prompts.currentText() != FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Prompts (one per line, or .jsonl)", "",
                                              "Prompts (*.txt *.jsonl)")
        if path:
            self._file = path
            self.prompts.setItemText(self.prompts.currentIndex(), path)

    def config(self) -> Any:
        from mistudio.core.steering.evaluate import SteerEvalConfig
        from mistudio.core.steering.scorers import load_prompts

        try:
            strengths = tuple(float(x) for x in self.strengths.text().replace(",", " ").split())
        except ValueError:
            raise MiStudioError("Write the strengths as numbers, e.g. 0.5, 1, 2.") from None
        return SteerEvalConfig(tuple(load_prompts(self.prompts.currentText())),
                               self.samples.value(), self.tokens.value(),
                               strengths=strengths or (1.0,),
                               words=self.words.text().strip() or None, bootstrap=500,
                               text_scorers=tuple(b.text() for b in self.plugin_scorers
                                                  if b.isChecked()))

    def run(self) -> None:
        try:
            spec, cfg = self.spec(), self.config()
        except MiStudioError as err:
            show_error(self, err)
            return
        self.keep_btn.setEnabled(False)
        self.points = []
        self._show([])
        self.runner.start("evaluate_steering", spec, cfg, self.device())

    def _partial(self, items: list[Any]) -> None:
        self.points += [p for p in items if hasattr(p, "scores")]
        self._show(self.points)

    def _cancelled(self) -> None:
        n = len(self.points)
        self.status.setText(f"Cancelled. The {n} strength{'s' if n != 1 else ''} finished "
                            "before it are shown." if n else "Cancelled before the first "
                            "strength finished.")

    def _running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def _done(self, evaluation: Any) -> None:
        """Show a :class:`~mistudio.core.steering.evaluate.SteerEvalResult`."""
        self.result = evaluation.to_dict()  # what a preset keeps
        self.points = list(evaluation.points)
        self._show(self.points)
        self.status.setText(
            f"{evaluation.tokens_generated:,} tokens in {evaluation.seconds:.0f} s. The first "
            "scorer's change is plotted against perplexity. A feature's score is its activation "
            "in the generated text read by the unsteered model (does the text carry the "
            "concept?); the Compare view reads the steered text with the steering applied, so "
            "the added feature shows there even when the words do not change.")
        self.keep_btn.setEnabled(bool(self.preset()))

    def _show(self, points: list[Any]) -> None:
        rows, xs, ys, shown = [], [], [], []
        for p in points:
            for s in p.scores:
                rows.append([f"{p.strength:g}x", s.scorer, s.plain, s.steered, s.change,
                             f"[{s.ci_low:+.3g}, {s.ci_high:+.3g}]",
                             f"{p.perplexity_plain:.1f} -> {p.perplexity_steered:.1f}"])
            if p.scores:
                xs.append(p.perplexity_steered)
                ys.append(p.scores[0].change)
                shown.append(p.strength)
        self.model.set_rows(rows)
        self.table.resizeColumnsToContents()
        self.curve.setData(xs, ys)
        for item in self.labels:
            self.plot.removeItem(item)
        self.labels = []
        for strength, x, y in zip(shown, xs, ys, strict=True):
            label = pg.TextItem(f"{strength:g}x", anchor=(0, 1))
            label.setPos(x, y)
            self.plot.addItem(label)
            self.labels.append(label)
        _readable_range(self.plot, xs, ys)

    def keep(self) -> None:
        from mistudio.core.steering.presets import add_evaluation

        name = self.preset()
        if not name or self.result is None:
            show_error(self, "Choose a preset in the Presets row first (or save one).")
            return
        n = add_evaluation(self.ws, name, self.result)
        self.status.setText(f"Kept with preset {name} ({n} evaluations).")


def _readable_range(plot: Any, xs: list[float], ys: list[float]) -> None:
    """Axes around the points with room to read them: all-zero changes had put the y axis at
    -5e-106 ... -1.5e-105 (pyqtgraph zooms into a range of width zero)."""
    for values, axis in ((xs, "x"), (ys, "y")):
        if not values:
            continue
        low, high = min(values), max(values)
        pad = max(abs(high - low) * 0.15, abs(high) * 0.1, 1.0 if axis == "y" else 0.5)
        if axis == "x":
            plot.setXRange(low - pad, high + pad, padding=0)
        else:
            plot.setYRange(min(low, 0.0) - pad, max(high, 0.0) + pad, padding=0)
