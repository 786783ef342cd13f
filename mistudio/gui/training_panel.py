"""Training panel: a configuration form with presets, and a live dashboard of the running job.

Metric rows arrive in batches from the worker and are appended to numpy buffers; a 30 Hz timer
pushes them into existing pyqtgraph curves with ``setData`` (downsampled, clipped to view), so a
run of 100k steps stays smooth. Past runs are re-plotted from their ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.errors import MiStudioError
from mistudio.core.massive import ev_phrase
from mistudio.core.sae.trainer import TrainConfig, read_metrics, train_sae
from mistudio.core.workspace import Workspace
from mistudio.gui.common import refill_combo, show_error
from mistudio.gui.worker import JobRunner

PRESETS = {
    "Quick demo": {"steps": 200, "batch_size": 1024, "expansion": 4, "k": 32},
    "Standard": {"steps": 1000, "batch_size": 2048, "expansion": 8, "k": 32},
    "Wide": {"steps": 2000, "batch_size": 4096, "expansion": 16, "k": 64},
}
CURVES = (("mse", "Loss terms"), ("explained_variance", "Explained variance"), ("l0", "L0"),
          ("dead_fraction", "Dead fraction"), ("lr", "Learning rate"))
EXTRA_LOSSES = (("aux", "aux (dead latents)", "#e5c07b"), ("l1", "L1", "#c678dd"),
                ("l0_penalty", "L0 penalty", "#c678dd"))
"""Loss terms drawn with the MSE, when the architecture has them."""


class MetricBuffers:
    """Growing numpy columns of the logged metric rows (amortised appends)."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, np.ndarray] = {}

    def append(self, rows: list[dict[str, Any]]) -> None:
        rows = [r for r in rows if "step" in r and "mse" in r]
        if not rows:
            return
        need = self.n + len(rows)
        for key in ("step", *(k for k, _ in CURVES), *(k for k, _, _ in EXTRA_LOSSES)):
            col = self.cols.get(key)
            if col is None or len(col) < need:
                grown = np.full(max(need, 2 * (len(col) if col is not None else 256)), np.nan)
                if col is not None:
                    grown[: self.n] = col[: self.n]
                self.cols[key] = col = grown
            # a missing or null value is a gap; 0.0 is a value (not `or nan`: that dropped it)
            col[self.n: need] = [np.nan if r.get(key) is None else float(r[key]) for r in rows]
        self.n = need

    def get(self, key: str) -> np.ndarray:
        return self.cols[key][: self.n] if key in self.cols else np.zeros(0)


class Dashboard(QWidget):
    """Curves of the metrics over steps and the latest feature-density histogram."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.summary = QLabel("No run yet.")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        grid = pg.GraphicsLayoutWidget()
        self.plots: dict[str, Any] = {}
        self.curves: dict[str, Any] = {}
        self.compare: dict[str, Any] = {}
        for i, (key, title) in enumerate(CURVES):
            plot = grid.addPlot(row=i // 3, col=i % 3, title=title)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            # No grid: pyqtgraph redraws grid lines across the whole plot at every frame, which
            # cost 40 of the 43 ms of a dashboard paint here (software rendering).
            plot.getAxis("left").setWidth(52)  # tick labels of new widths never re-lay out
            self.plots[key] = plot
            if key == "mse":
                plot.addLegend(offset=(-5, 5))
            self.curves[key] = plot.plot(pen=pg.mkPen("#e06c75", width=2),
                                         name="MSE" if key == "mse" else None)
            self.compare[key] = plot.plot(pen=pg.mkPen("#61afef", width=1))
        self.extra = {k: self.plots["mse"].plot(pen=pg.mkPen(color, width=1.5), name=label)
                      for k, label, color in EXTRA_LOSSES}
        self.hist_plot = grid.addPlot(row=1, col=2, title="Feature density (log10)")
        self.hist_plot.getAxis("left").setWidth(52)
        self.hist_plot.setXRange(-5, 0, padding=0.02)
        self.hist = pg.BarGraphItem(x=[], height=[], width=0.15, brush="#98c379")
        self.hist_plot.addItem(self.hist)
        layout.addWidget(grid)
        self.buffers = MetricBuffers()
        self.other = MetricBuffers()
        self._dirty = False
        self._planned = 0
        self.timer = QTimer(self)
        self.timer.setInterval(33)  # ~30 Hz redraw
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def plan(self, total_steps: int) -> None:
        """Fixed x ranges (the run's length, shown as soon as it is set in the form) and y
        ranges where the scale is known, so the axes are not laid out again at every frame:
        painting is most of the UI's time, and a new axis layout is its dearest part."""
        if total_steps == self._planned:
            return
        self._planned = total_steps
        for key, plot in self.plots.items():
            plot.setXRange(0, total_steps, padding=0.02)
            if key in ("explained_variance", "dead_fraction"):
                plot.setYRange(0, 1, padding=0.02)

    def reset(self, total_steps: int | None = None) -> None:
        """A new run (``total_steps``: its length; None: a past run, ranged to its data)."""
        self.buffers = MetricBuffers()
        if total_steps:
            self.plan(total_steps)
        else:
            self._planned = 0
            for plot in self.plots.values():
                plot.enableAutoRange(x=True)
        self._dirty = True

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.buffers.append(rows)
        for r in rows:
            if "density_histogram" in r:
                h = r["density_histogram"]
                edges = np.array(h["edges"])
                self.hist.setOpts(x=(edges[:-1] + edges[1:]) / 2, height=h["counts"],
                                  width=float(edges[1] - edges[0]) * 0.9)
            if "tokens_per_s" in r and r.get("tokens_per_s"):
                eta = ""
                if self._planned and r["step"] < self._planned:
                    per_step = r["tokens"] / max(r["step"], 1)
                    left = (self._planned - r["step"]) * per_step / r["tokens_per_s"]
                    eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}"
                ev = r.get("explained_variance")
                ev_text = "n/a" if ev is None else f"{ev:.3f}"
                self.summary.setText(f"step {r['step']:,}  EV {ev_text}  "
                                     f"L0 {r['l0']:.1f}  dead {r['dead_fraction']:.1%}  "
                                     f"{r['tokens_per_s']:,.0f} tokens/s{eta}")
        self._dirty = True

    def show_compare(self, rows: list[dict[str, Any]]) -> None:
        self.other = MetricBuffers()
        self.other.append(rows)
        self._dirty = True

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        steps = self.buffers.get("step")
        for key, _ in CURVES:
            self.curves[key].setData(steps, self.buffers.get(key))
            self.compare[key].setData(self.other.get("step"), self.other.get(key))
        for key, curve in self.extra.items():
            values = self.buffers.get(key)
            seen = ~np.isnan(values)
            curve.setData(steps[seen], values[seen])


class TrainingPanel(QWidget):
    def __init__(self, ws: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.device = "auto"
        """Set from the window's settings."""
        self.runner = JobRunner(self)
        outer = QHBoxLayout(self)
        split = QSplitter()
        outer.addWidget(split)
        left = QWidget()
        form_box = QVBoxLayout(left)
        basic = QGroupBox("Train a sparse autoencoder")
        form = QFormLayout(basic)
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentText("Standard")
        self.preset.currentTextChanged.connect(self.apply_preset)
        self.activations = QComboBox()
        self.arch = QComboBox()
        self.arch.addItems(["topk", "batchtopk", "jumprelu", "relu"])
        self.expansion = QSpinBox(minimum=1, maximum=128)
        self.k = QSpinBox(minimum=1, maximum=4096)
        self.steps = QSpinBox(minimum=1, maximum=10_000_000)
        self.name = QLineEdit()
        self.name.setPlaceholderText("name of the SAE")
        for label, w in (("Preset", self.preset), ("Activations", self.activations),
                         ("Architecture", self.arch), ("Expansion", self.expansion),
                         ("k (active latents)", self.k), ("Steps", self.steps),
                         ("Name", self.name)):
            form.addRow(label, w)
        form_box.addWidget(basic)
        adv = QGroupBox("Advanced")
        adv.setCheckable(True)
        adv.setChecked(False)
        aform = QFormLayout(adv)
        self.batch = QSpinBox(minimum=64, maximum=65536, singleStep=256)
        self.lr = QDoubleSpinBox(decimals=5, minimum=0.0, maximum=1.0, singleStep=0.0005)
        self.lr.setSpecialValueText("auto")
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "signum"])
        for label, w in (("Batch (tokens)", self.batch), ("Learning rate", self.lr),
                         ("Optimiser", self.optimizer)):
            aform.addRow(label, w)
        form_box.addWidget(adv)
        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self.cancel_btn.setEnabled(False)
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.cancel_btn)
        form_box.addLayout(buttons)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        form_box.addWidget(self.result)
        form_box.addWidget(QLabel("Past runs (click to plot, Ctrl-click to compare):"))
        self.runs = QListWidget()
        self.runs.setMinimumHeight(48)  # a few rows; it scrolls
        self.runs.itemClicked.connect(self.plot_run)
        form_box.addWidget(self.runs)
        split.addWidget(left)
        self.dashboard = Dashboard()
        split.addWidget(self.dashboard)
        split.setStretchFactor(1, 3)
        self.runner.partial.connect(self.dashboard.add_rows)
        self.runner.finished.connect(self.done)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.runner.cancelled.connect(lambda: self.result.setText(
            "Cancelled. The last checkpoint is kept: Start again with the same settings to resume."))
        self.runner.running_changed.connect(self._running)
        self.steps.valueChanged.connect(self.dashboard.plan)
        self.apply_preset("Standard")
        self.refresh()

    def remember(self, settings: Any) -> None:
        """The last selections, for the next start."""
        settings.setValue("training/preset", self.preset.currentText())
        settings.setValue("training/activations", self.activations.currentText())
        settings.setValue("training/architecture", self.arch.currentText())

    def restore(self, settings: Any) -> None:
        preset = settings.value("training/preset")
        if preset in PRESETS:
            self.preset.setCurrentText(str(preset))
        for key, box in (("activations", self.activations), ("architecture", self.arch)):
            value = settings.value(f"training/{key}")
            if value and box.findText(str(value)) >= 0:
                box.setCurrentText(str(value))

    def apply_preset(self, name: str) -> None:
        p = PRESETS[name]
        self.steps.setValue(p["steps"])
        self.batch.setValue(p["batch_size"])
        self.expansion.setValue(p["expansion"])
        self.k.setValue(p["k"])

    def refresh(self) -> None:
        refill_combo(self.activations, [a.name for a in self.ws.catalog.list("activations")
                                        if a.status == "complete"])
        self.runs.clear()
        self.runs.addItems([a.name for a in self.ws.catalog.list("sae")])

    def config(self) -> Any:
        return TrainConfig(self.activations.currentText(), architecture=self.arch.currentText(),
                           device=self.device,
                           expansion=self.expansion.value(), k=self.k.value(),
                           steps=self.steps.value(), batch_size=self.batch.value(),
                           lr=self.lr.value() or None, optimizer=self.optimizer.currentText(),
                           log_every=max(1, min(10, self.steps.value() // 20)))

    def start(self) -> None:
        if not self.activations.currentText():
            show_error(self, "There is no activation set to train on. Extract one in the Models "
                       "panel first.")
            return
        try:
            cfg = self.config()
        except MiStudioError as err:  # validated before anything starts
            show_error(self, str(err))
            return
        if not self._fits(cfg):
            return
        name = self.name.text().strip() or f"{cfg.activations}.{cfg.architecture}"
        ws_root = self.ws.root
        self.dashboard.reset(cfg.steps)
        self.result.setText("")

        device = self.device

        def job(task: Any) -> Any:
            from mistudio.core.jobs import SubTask
            from mistudio.core.sae.evaluation import evaluate_in_child

            ws = Workspace(ws_root)  # SQLite connections stay on their own thread
            try:
                manifest = train_sae(ws, cfg, name, SubTask(task, 0.0, 0.9))
            finally:
                ws.close()
            task.set_status(f"Evaluating {name} inside the model")
            try:  # CE loss score and KL with the SAE spliced in; a child process loads the
                # model, so its interpreter-heavy loading cannot stall the UI thread
                manifest["summary"].update(evaluate_in_child(str(ws_root), name, 16, device,
                                                             task=SubTask(task, 0.9, 1.0)))
            except MiStudioError as err:  # e.g. the tokenized set is gone
                manifest["summary"]["in_model_error"] = str(err)
            task.set_progress(1.0)
            return manifest

        self.runner.start(f"Training {name}", job)

    def _fits(self, cfg: Any) -> bool:
        """Shapes and memory checked before anything starts (the core checks again)."""
        from mistudio.core.devices import available_memory, resolve_device
        from mistudio.core.sae.train_config import training_bytes
        from mistudio.core.workspace import human_bytes

        art = self.ws.catalog.find("activations", cfg.activations)
        d_in = int((art.summary if art else {}).get("d_model") or 0)
        if not d_in:
            return True  # the core will say what is wrong with the set
        need = training_bytes(cfg, d_in)
        try:
            have = available_memory(resolve_device(cfg.device))
        except MiStudioError as err:
            show_error(self, str(err))
            return False
        if need > have:
            show_error(self, f"This SAE ({cfg.expansion * d_in:,} latents, batches of "
                       f"{cfg.batch_size:,} tokens) needs about {human_bytes(need)}, but only "
                       f"{human_bytes(have)} is free. Lower the expansion or the batch size.")
            return False
        return True

    def done(self, manifest: dict[str, Any]) -> None:
        s = manifest["summary"]
        text = (f"{manifest['name']}: {ev_phrase(s)}, "
                f"L0 {s['l0']:.1f}, dead {s['dead_fraction']:.1%} "
                f"({s['steps']:,} steps, {s['tokens']:,} tokens)")
        if "ce_loss_score" in s:
            text += f"; in the model: CE loss score {s['ce_loss_score']:.3f}, KL {s['kl_div']:.3f}"
        elif "in_model_error" in s:
            text += f"; not evaluated in the model: {s['in_model_error']}"
        self.result.setText(text)
        self.refresh()

    def _running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def plot_run(self, item: Any) -> None:
        from PySide6.QtWidgets import QApplication

        art = self.ws.catalog.find("sae", item.text())
        path = Path(art.path) / "metrics.jsonl" if art else None
        if path is None or not path.is_file():
            return
        rows = read_metrics(path)
        from PySide6.QtCore import Qt

        if QApplication.keyboardModifiers() & Qt.KeyboardModifier.ControlModifier:
            self.dashboard.show_compare(rows)
        else:
            self.dashboard.reset()
            self.dashboard.add_rows(rows)
