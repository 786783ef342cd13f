"""Training panel: a configuration form with presets, and the live dashboard of the running job
(:mod:`mistudio.gui.dashboard`). Past runs are re-plotted from their ``metrics.jsonl``, with
their held-out figures from the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
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

from mistudio.core.activations.massive import ev_phrase
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.sae import architecture_names
from mistudio.core.sae.checkpoints import read_metrics
from mistudio.core.sae.train_config import TrainConfig
from mistudio.core.store.manifests import SAESummary
from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import name_combo, refill_combo, show_error
from mistudio.gui.dashboard import Dashboard
from mistudio.gui.jobs import AppJobs

PRESETS = {
    "Quick demo": {"steps": 200, "batch_size": 1024, "expansion": 4, "k": 32},
    "Standard": {"steps": 1000, "batch_size": 2048, "expansion": 8, "k": 32},
    "Wide": {"steps": 2000, "batch_size": 4096, "expansion": 16, "k": 64},
}


class TrainingPanel(QWidget):
    analyseRequested = Signal(str)
    """An SAE to analyse in the Features tab (after a run)."""
    runFinished = Signal(object)
    """A run's manifest, once it is trained and evaluated inside its model."""
    extractRequested = Signal()
    """No activation set to train on yet: open the Models tab, where they are extracted."""

    def __init__(self, ws: Workspace, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.device = "auto"
        """Set from the window's settings."""
        self.runner = (jobs or AppJobs(ws.root, self)).runner("training", self)
        split = QSplitter()
        QHBoxLayout(self).addWidget(split)
        left = QWidget()
        form_box = QVBoxLayout(left)
        form_box.addWidget(self._basic_form())
        form_box.addWidget(self._advanced_form())
        self._actions(form_box)
        split.addWidget(left)
        self.dashboard = Dashboard()
        split.addWidget(self.dashboard)
        split.setStretchFactor(1, 3)
        self.runner.partial.connect(self.dashboard.add_rows)
        self.runner.finished.connect(self._job_done)
        self.runner.failed.connect(self._job_failed)
        self.runner.cancelled.connect(lambda: self.result.setText(
            "Cancelled. The last checkpoint is kept: Start again with the same settings to resume."))
        self.runner.running_changed.connect(self._running)
        self.steps.valueChanged.connect(self.dashboard.plan)
        self.apply_preset("Standard")
        self.refresh()

    def _basic_form(self) -> QGroupBox:
        basic = QGroupBox("Train a sparse autoencoder")
        form = QFormLayout(basic)
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentText("Standard")
        self.preset.currentTextChanged.connect(self.apply_preset)
        self.activations = name_combo()
        self.arch = QComboBox()
        self.arch.addItems(architecture_names())
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
        return basic

    def _advanced_form(self) -> QGroupBox:
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
        return adv

    def _actions(self, form_box: QVBoxLayout) -> None:
        """Start and Cancel, the run's result, Analyse, and the past runs."""
        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self.cancel_btn.setEnabled(False)
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.cancel_btn)
        form_box.addLayout(buttons)
        self.next_step = QPushButton("Extract activations first (Models tab)")
        self.next_step.setToolTip("Training reads an activation set; the Models tab makes one "
                                  "from a model and a tokenized dataset")
        self.next_step.clicked.connect(self.extractRequested.emit)
        self.next_step.hide()
        form_box.addWidget(self.next_step)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        form_box.addWidget(self.result)
        self.analyse_btn = QPushButton("Analyse its features")
        self.analyse_btn.setToolTip("Top examples, logit lens and labels of every feature, in "
                                    "the Features tab")
        self.analyse_btn.clicked.connect(lambda: self.analyseRequested.emit(self.last_run))
        self.analyse_btn.hide()
        self.last_run = ""
        form_box.addWidget(self.analyse_btn)
        form_box.addWidget(QLabel("Past runs (click to plot, Ctrl-click to compare):"))
        self.runs = QListWidget()
        self.runs.setMinimumHeight(48)  # a few rows; it scrolls
        self.runs.itemClicked.connect(self.plot_run)
        form_box.addWidget(self.runs)

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
        sets = [a.name for a in self.ws.catalog.list("activations") if a.status == "complete"]
        refill_combo(self.activations, sets)
        self.next_step.setVisible(not sets)  # Start could only say there is nothing to train on
        self.start_btn.setEnabled(bool(sets) and not self.runner.running)
        self.runs.clear()
        self.runs.addItems([a.name for a in self.ws.catalog.list("sae")])
        if self.dashboard.summary.text().startswith("No run plotted yet"):  # only past runs
            self.dashboard.summary.setText(  # that exist can be clicked
                "No run plotted yet: start one" + (", or click a past run." if self.runs.count()
                                                   else "."))

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
            show_error(self, err)
            return
        if not self._fits(cfg):
            return
        name = self.name.text().strip() or f"{cfg.activations}.{cfg.architecture}"
        self.dashboard.reset(cfg.steps, name)
        self.result.setText("")
        self.runner.start("train", cfg, name, title=f"Training {name}")

    def _job_done(self, result: Any) -> None:
        """After training: the SAE evaluated inside its model (in the model's service), then
        the run's figures shown."""
        if self.runner.kind == "train":
            self._trained = result
            self.runner.start("evaluate_in_model", result.name, 16, self.device,
                              title=f"Evaluating {result.name} inside the model")
            return
        self._trained.summary = result
        self.done(self._trained)

    def _job_failed(self, message: str, details: str) -> None:
        if self.runner.kind == "evaluate_in_model":  # the SAE is trained: show it anyway
            self._trained.summary.in_model_error = message
            self.done(self._trained)
            return
        show_error(self, message, details)

    def _fits(self, cfg: Any) -> bool:
        """Shapes and memory checked before anything starts (the core checks again)."""
        from mistudio.core.models.devices import available_memory, resolve_device
        from mistudio.core.sae.train_config import training_bytes
        from mistudio.core.store.files import human_bytes

        art = self.ws.catalog.find("activations", cfg.activations)
        d_in = art.summary.d_model if art is not None else 0
        if not d_in:
            return True  # the core will say what is wrong with the set
        need = training_bytes(cfg, d_in)
        try:
            have = available_memory(resolve_device(cfg.device))
        except MiStudioError as err:
            show_error(self, err)
            return False
        if need > have:
            show_error(self, f"This SAE ({cfg.expansion * d_in:,} latents, batches of "
                       f"{cfg.batch_size:,} tokens) needs about {human_bytes(need)}, but only "
                       f"{human_bytes(have)} is free. Lower the expansion or the batch size.")
            return False
        return True

    def done(self, manifest: Any) -> None:
        self.result.setText(run_summary(manifest.name, manifest.summary))
        self.last_run = manifest.name
        self.runFinished.emit(manifest)
        self.analyse_btn.show()
        self.refresh()

    def _running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running and bool(self.activations.count()))
        self.cancel_btn.setEnabled(running)

    def plot_run(self, item: Any) -> None:
        from PySide6.QtWidgets import QApplication

        name = item.text()
        art = self.ws.catalog.find("sae", name)
        path = Path(art.path) / "metrics.jsonl" if art else None
        if art is None or path is None or not path.is_file():
            self.result.setText(f"{name} has no training curves (imported, or its folder is "
                                "missing).")
            return
        rows = read_metrics(path)
        from PySide6.QtCore import Qt

        if QApplication.keyboardModifiers() & Qt.KeyboardModifier.ControlModifier:
            self.dashboard.show_compare(rows, name)
            return
        if self.runner.running:  # the live run keeps the dashboard; compare instead
            self.dashboard.show_compare(rows, name)
            return
        self.dashboard.reset(name=name)
        self.dashboard.add_rows(rows)
        self.dashboard.summary.setText(run_summary(name, art.summary))
        self.result.setText(run_summary(name, art.summary))
        self.last_run = name
        self.analyse_btn.show()
        hist = self._final_density(art.path)
        if hist is not None:
            self.dashboard.show_density(hist)

    @staticmethod
    def _final_density(folder: str) -> dict[str, list[float]] | None:
        """The held-out per-token density histogram stored with a finished run."""
        import json

        try:
            manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged manifest: the curves are still worth showing
        hist = manifest.get("density_histogram") if isinstance(manifest, dict) else None
        return hist if isinstance(hist, dict) and "edges" in hist else None


def run_summary(name: str, s: SAESummary) -> str:
    """One line of a finished run's held-out and in-model figures."""
    if s.l0 is None or s.dead_fraction is None:
        return f"{name}: no held-out figures recorded."
    text = f"{name}: held-out {ev_phrase(s)}, L0 {s.l0:.1f}, dead {s.dead_fraction:.1%}"
    if s.steps:
        text += f" ({s.steps:,} steps, {s.tokens:,} tokens)"
    if s.ce_loss_score is not None and s.kl_div is not None:
        text += f"; in the model: CE loss score {s.ce_loss_score:.3f}, KL {s.kl_div:.3f}"
    elif s.in_model_error:
        text += f"; not evaluated in the model: {s.in_model_error}"
    return text
