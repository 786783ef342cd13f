"""The Steering tab: features with coefficient sliders, a prompt and sampling settings; the plain
and the steered continuation stream side by side, diverging tokens highlighted, with the
comparison's metrics below (KL per position, perplexities, similarity, feature activations).

The model and SAEs stay loaded between runs (a core :class:`Steerer`, built in the worker), so
moving a slider and pressing Regenerate costs only the generation. The seed is part of the
settings, so a rerun differs only by what was changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.steering.generate import GenerationConfig
from mistudio.core.steering.interventions import Intervention
from mistudio.core.steering.session import SteeringSpec
from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import name_combo, show_error
from mistudio.gui.jobs import AppJobs
from mistudio.gui.steer_eval_view import SteerEvalView
from mistudio.gui.token_view import TokenHeatmap, scrolled

PLAIN_DIFF, STEERED_DIFF = QColor(110, 160, 230), QColor(240, 150, 40)
"""Backgrounds of tokens after the two sides diverge."""
SLIDER_STEPS = 10
"""Slider positions per unit of coefficient."""


class RowsArea(QScrollArea):
    """The steered features' rows, scrolling down when there are many, never sideways: its
    minimum width is its rows' (a splitter squeezed it to a stub that scrolled sideways)."""

    def __init__(self, holder: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setWidget(holder)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        holder.installEventFilter(self)

    def minimumSizeHint(self) -> QSize:
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(self.widget().minimumSizeHint().width() + bar + 2 * self.frameWidth(), 60)

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if e.type() == QEvent.Type.LayoutRequest:  # rows added or removed, fonts changed
            self.updateGeometry()
        return False


class FeatureRow(QWidget):
    """One steered feature: method, a slider and a box for its coefficient, a remove button."""

    changed = Signal()
    released = Signal()
    removed = Signal(object)

    def __init__(self, sae: str, feature: int, label: str, coefficient: float,
                 method: str = "add", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sae, self.feature = sae, feature
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        name = QLabel(f"<b>{feature}</b> {label[:28]}")
        name.setToolTip(f"{sae}, feature {feature}: {label}")
        name.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Preferred)  # whole
        self.method = QComboBox()
        self.method.addItems(["add", "clamp", "ablate"])
        self.method.setCurrentText(method)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimumWidth(120)  # a slider squeezed to a stub looks like a checkbox
        self.slider.setRange(-20 * SLIDER_STEPS, 20 * SLIDER_STEPS)
        self.box = QDoubleSpinBox(decimals=2, minimum=-1000.0, maximum=1000.0, singleStep=0.5)
        self.box.setValue(coefficient)
        self.slider.setValue(round(coefficient * SLIDER_STEPS))
        self.slider.valueChanged.connect(lambda v: self.box.setValue(v / SLIDER_STEPS))
        self.box.valueChanged.connect(self._box_changed)
        self.slider.sliderReleased.connect(self.released.emit)
        self.method.currentTextChanged.connect(self._method_changed)
        remove = QToolButton()  # as wide as its text in any font (a fixed width lost the "x")
        remove.setText("×")
        remove.setToolTip("Stop steering this feature")
        remove.clicked.connect(lambda: self.removed.emit(self))
        for w, stretch in ((name, 0), (self.method, 0), (self.slider, 1), (self.box, 0),
                           (remove, 0)):
            row.addWidget(w, stretch)
        self._method_changed(method)

    def _box_changed(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(v * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self.changed.emit()

    def _method_changed(self, method: str) -> None:
        for w in (self.slider, self.box):
            w.setEnabled(method != "ablate")
        self.changed.emit()

    def intervention(self) -> Intervention:
        return Intervention(self.feature, self.box.value(), self.method.currentText(),  # type: ignore[arg-type]
                            self.sae)


class SteeringPanel(QWidget):
    def __init__(self, ws: Workspace, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.device = "auto"
        self.jobs = jobs or AppJobs(ws.root, self)
        self.runner = self.jobs.runner("steering", self)
        self.runner.partial.connect(self._streamed)
        self.runner.finished.connect(self._done)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.runner.running_changed.connect(self._running)
        self._rerun = False
        self.loaded_saes: tuple[str, ...] | None = None
        """The SAEs the model's service has loaded (None: nothing loaded yet)."""
        self.result: Any = None
        self.last_spec: SteeringSpec | None = None
        self.rows: list[FeatureRow] = []
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._controls())
        self.views = QTabWidget()
        self.views.addTab(self._outputs(), "Compare")
        self.evaluate_view = SteerEvalView(ws, self.spec, self.preset.currentText,
                                           lambda: self.device, self.jobs)
        self.views.addTab(self.evaluate_view, "Evaluate over prompts")
        split.addWidget(self.views)
        split.setSizes([470, 810])
        QVBoxLayout(self).addWidget(split)
        self.auto_timer = QTimer(self)  # auto-regenerate after the last change settles
        self.auto_timer.setSingleShot(True)
        self.auto_timer.setInterval(400)
        self.auto_timer.timeout.connect(self.generate)
        self.refresh()

    # -- controls -------------------------------------------------------------------------------
    def _controls(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        pick = self._feature_picker()
        v.addWidget(pick, 1)
        self.prompt = QPlainTextEdit("The most important thing about Python is")
        self.prompt.setMaximumHeight(64)
        self.prompt.setToolTip("Both sides continue this text")
        v.addWidget(QLabel("Prompt (both sides continue it)"))
        v.addWidget(self.prompt)
        sampling = self._sampling()
        v.addWidget(sampling)
        buttons = QHBoxLayout()
        self.go = QPushButton("Generate")
        self.go.setShortcut("Ctrl+Return")
        self.go.setToolTip("Generate both sides (Ctrl+Enter); same seed, so a rerun shows "
                           "only the effect of what you changed")
        self.go.clicked.connect(self.generate)
        self.go.setEnabled(False)  # nothing to steer with until a feature is added
        self.auto = QCheckBox("Auto-regenerate")
        self.auto.setToolTip("Generate again whenever a coefficient or method changes")
        buttons.addWidget(self.go)
        buttons.addWidget(self.auto)
        v.addLayout(buttons)
        presets = QGroupBox("Presets")
        ph = QHBoxLayout(presets)
        self.preset = name_combo()
        self.preset.setMinimumContentsLength(10)
        ph.addWidget(self.preset, 1)
        for text, fn in (("Load", self.load_preset), ("Save...", lambda: self.save_preset()),
                         ("Delete", self.delete_preset)):
            b = QPushButton(text)
            b.clicked.connect(fn)
            ph.addWidget(b)
        v.addWidget(presets)
        return w

    def _feature_picker(self) -> QGroupBox:
        """The steered features: add one by index, the units of their coefficients, the list."""
        pick = QGroupBox("Features")
        pv = QVBoxLayout(pick)
        add_row = QHBoxLayout()
        self.sae = name_combo()
        self.sae.setToolTip("SAE (and so the layer) the feature belongs to")
        self.new_feature = QSpinBox(minimum=0, maximum=10_000_000)
        add = QPushButton("Add feature")
        add.clicked.connect(lambda: self.add_feature(self.sae.currentData(),
                                                     self.new_feature.value()))
        add_row.addWidget(self.sae, 1)
        add_row.addWidget(self.new_feature)
        add_row.addWidget(add)
        pv.addLayout(add_row)
        self.units = QComboBox()
        self.units.addItem("x max activation", "max")
        self.units.addItem("activation units", "activation")
        self.units.setToolTip("Coefficients in multiples of each feature's largest activation "
                              "in its analysis (as Neuronpedia), or in raw activation units")
        units = QHBoxLayout()
        units.addWidget(QLabel("Coefficients in"))
        units.addWidget(self.units, 1)
        pv.addLayout(units)
        self.feature_box = QVBoxLayout()
        holder = QWidget()
        holder.setLayout(self.feature_box)
        self.feature_box.addStretch(1)
        scroll = RowsArea(holder)
        pv.addWidget(scroll, 1)
        self.hint = QLabel("Pick a feature in the Features tab and press \"Steer with this "
                           "feature\", or add one by index.")
        self.hint.setWordWrap(True)
        pv.addWidget(self.hint)
        return pick

    def _sampling(self) -> QGroupBox:
        """Temperature, top-p, length and seed (both sides share them)."""
        sampling = QGroupBox("Sampling")
        grid = QGridLayout(sampling)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.1)
        self.temperature.setToolTip("0 = greedy (the same text every time)")
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=1.0, value=1.0,
                                    singleStep=0.05)
        self.max_tokens = QSpinBox(minimum=1, maximum=512, value=40)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        for i, (label, box) in enumerate((("Temperature", self.temperature),
                                          ("Top-p", self.top_p), ("Max tokens", self.max_tokens),
                                          ("Seed", self.seed))):
            grid.addWidget(QLabel(label), i // 2, 2 * (i % 2))
            grid.addWidget(box, i // 2, 2 * (i % 2) + 1)
        return sampling

    def _outputs(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        sides = QHBoxLayout()
        self.plain, self.steered = TokenHeatmap(), TokenHeatmap()
        self.steered.tooltip = self._steered_tip
        for title, view in (("Unsteered", self.plain), ("Steered", self.steered)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(scrolled(view))
            sides.addWidget(box, 1)
        v.addLayout(sides, 3)
        # the question above its answers: side by side, a wrapped question and three buttons
        # made the panel wider than a 1280-pixel projector in presentation mode
        self.rate_label = QLabel("Which side does what you intended?")
        self.rate_label.setWordWrap(True)
        v.addWidget(self.rate_label)
        rating = QHBoxLayout()
        self.rate_buttons = []
        for text, better in (("A: unsteered", "plain"), ("B: steered", "steered"),
                             ("Tie", "tie")):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, better=better: self.rate(better))
            b.setEnabled(False)
            rating.addWidget(b)
            self.rate_buttons.append(b)
        rating.addStretch(1)
        v.addLayout(rating)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        self.metrics.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.metrics)
        self.kl_plot = pg.PlotWidget(title="KL(steered || unsteered) per generated token")
        self.kl_plot.setMinimumHeight(90)
        self.kl_plot.getAxis("left").setWidth(48)
        self.kl_bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush="#f0962a")
        self.kl_plot.addItem(self.kl_bars)
        v.addWidget(self.kl_plot, 2)
        return w

    # -- state ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        from mistudio.core.steering.presets import list_presets

        current = self.sae.currentData()
        self.sae.clear()
        for art in self.ws.catalog.list("sae"):
            if art.status == "complete" and not art.config.get("transcoder") and \
                    art.summary.hook:
                self.sae.addItem(f"{art.name} ({art.summary.hook})", art.name)
        if current is not None and self.sae.findData(current) >= 0:
            self.sae.setCurrentIndex(self.sae.findData(current))
        chosen = self.preset.currentText()
        self.preset.clear()
        self.preset.addItems([p["name"] for p in list_presets(self.ws) if "error" not in p])
        self.preset.setCurrentText(chosen)

    def add_feature(self, sae: str | None, feature: int, coefficient: float | None = None,
                    method: str = "add") -> None:
        if not sae:
            show_error(self, "There is no SAE to steer with yet. Train one in the Training tab "
                       "(or run Help > Quick start).")
            return
        label = ""
        try:
            from mistudio.core.features.store import open_features

            store = open_features(self.ws, sae)
            store.check_index(feature)
            lb = store.label(feature)
            label = lb.label if lb else ""
        except MiStudioError as err:
            if "out of range" in str(err):
                show_error(self, err)
                return
            self.units.setCurrentIndex(self.units.findData("activation"))  # no analysis: no max
        if coefficient is None:
            coefficient = 3.0 if self.units.currentData() == "max" else 10.0
        row = FeatureRow(sae, feature, label, coefficient, method)
        row.changed.connect(self._changed)
        row.removed.connect(self.remove_feature)
        self.feature_box.insertWidget(self.feature_box.count() - 1, row)
        self.rows.append(row)
        self.hint.setVisible(False)
        self.go.setEnabled(True)

    def remove_feature(self, row: FeatureRow) -> None:
        self.rows.remove(row)
        row.hide()
        row.deleteLater()
        self.hint.setVisible(not self.rows)
        self.go.setEnabled(bool(self.rows))

    def clear_features(self) -> None:
        for row in list(self.rows):
            self.remove_feature(row)

    def _changed(self) -> None:
        if self.auto.isChecked():
            self.auto_timer.start()

    def spec(self) -> SteeringSpec:
        if not self.rows:
            raise MiStudioError("No feature to steer.", "Add a feature first.")
        interventions = tuple(r.intervention() for r in self.rows)
        saes = tuple(dict.fromkeys(r.sae for r in self.rows))
        return SteeringSpec(saes, interventions, units=self.units.currentData(),
                            generation=GenerationConfig(
                                max_tokens=self.max_tokens.value(),
                                temperature=self.temperature.value(), top_p=self.top_p.value(),
                                seed=self.seed.value()))

    def set_spec(self, spec: SteeringSpec) -> None:
        self.clear_features()
        self.units.setCurrentIndex(max(self.units.findData(spec.units), 0))
        g = spec.generation
        self.max_tokens.setValue(g.max_tokens)
        self.temperature.setValue(g.temperature)
        self.top_p.setValue(g.top_p)
        self.seed.setValue(g.seed)
        for iv in spec.interventions:
            self.add_feature(iv.sae or spec.saes[0], iv.feature, iv.coefficient * spec.strength,
                             iv.method)

    # -- generation -----------------------------------------------------------------------------
    def generate(self) -> None:
        if self.runner.running:
            self._rerun = True  # a newer setting replaces the running generation
            self.runner.cancel()
            return
        try:
            spec = self.spec()
        except MiStudioError as err:
            show_error(self, err)
            return
        prompt = self.prompt.toPlainText()
        if not prompt.strip():  # the last result stays on screen
            self.metrics.setText("Type a prompt in the Prompt box first; both sides continue it.")
            self.prompt.setFocus()
            return
        warm = self.loaded_saes == spec.saes and bool(self.jobs.center.services.alive())
        for view in (self.plain, self.steered):
            view.set_tokens([])
        self.kl_bars.setOpts(x=[], height=[])
        self.metrics.setText("Generating..." if warm else "Loading the model and SAEs, then "
                             "generating...")
        self.last_spec = spec
        self.runner.start("steer", spec, prompt, self.device)

    def _running(self, running: bool) -> None:
        self.go.setText("Generating..." if running else "Generate")
        if not running and self._rerun:
            self._rerun = False
            QTimer.singleShot(0, self.generate)

    def _streamed(self, items: list[dict[str, Any]]) -> None:
        for it in items:
            view = self.plain if it["side"] == "plain" else self.steered
            view.append(it["text"])
        self._mark_divergence()

    def _mark_divergence(self, diverges_at: int | None = None) -> None:
        p, s = self.plain.tokens, self.steered.tokens
        if diverges_at is None:
            n = min(len(p), len(s))
            diverges_at = next((i for i in range(n) if p[i] != s[i]), None)
        for view, color in ((self.plain, PLAIN_DIFF), (self.steered, STEERED_DIFF)):
            for i in range(len(view.tokens)):
                view.set_color(i, color if diverges_at is not None and i >= diverges_at else None)

    def _done(self, result: Any) -> None:
        r, plain_texts, steered_texts = result
        self.result = r
        self.loaded_saes = self.last_spec.saes if self.last_spec is not None else None
        self.plain.set_tokens(plain_texts)
        self.steered.set_tokens(steered_texts)
        self._mark_divergence(r.diverges_at)
        kl = np.asarray(r.kl_per_position, dtype=float)
        self.kl_bars.setOpts(x=np.arange(len(kl)), height=kl, width=0.8)
        acts = "; ".join(f"{k.split('#')[-1]} {v['plain']:.2f} -> {v['steered']:.2f}"
                         for k, v in list(r.feature_activations.items())[:6])
        where = "never" if r.diverges_at is None else f"at token {r.diverges_at}"
        errors = " ".join(e for e in (r.plain.error, r.steered.error) if e)
        self.metrics.setText(
            f"Diverges {where}. Mean KL {r.kl_mean:.3f}. Perplexity unsteered "
            f"{r.perplexity_plain:.2f}, steered {r.perplexity_steered:.2f}. Similarity of the "
            f"continuations (final hidden state) {r.similarity:.3f}.\nFeature activations, "
            f"unsteered -> steered: {acts or 'n/a'}. {errors}")
        for b in self.rate_buttons:
            b.setEnabled(bool(self.preset.currentText()))
        self.rate_label.setText("Which side does what you intended? (saved with the preset "
                                f"{self.preset.currentText()!r})" if self.preset.currentText()
                                else "Save a preset to rate its results.")

    def _steered_tip(self, i: int) -> str:
        r = self.result
        if r is None or i >= len(r.gained):
            return repr(self.steered.tokens[i]) if i < len(self.steered.tokens) else ""
        up = ", ".join(f"{t!r} {v:+.3f}" for t, v in r.gained[i])
        down = ", ".join(f"{t!r} {v:+.3f}" for t, v in r.lost[i])
        kl = r.kl_per_position[i] if i < len(r.kl_per_position) else float("nan")
        return (f"{self.steered.tokens[i]!r}  KL {kl:.3f}\ngained probability: {up}\n"
                f"lost probability: {down}")

    # -- presets --------------------------------------------------------------------------------
    def save_preset(self, name: str | None = None) -> None:
        from mistudio.core.steering.presets import save_preset

        if not name:
            name, ok = QInputDialog.getText(self, "Save steering preset", "Name")
            if not ok or not name.strip():
                return
        try:
            save_preset(self.ws, name.strip(), self.spec(), overwrite=True)
        except MiStudioError as err:
            show_error(self, err)
            return
        self.refresh()
        self.preset.setCurrentText(name.strip())

    def load_preset(self) -> None:
        from mistudio.core.steering.presets import load_preset

        if self.preset.currentText():
            try:
                self.set_spec(load_preset(self.ws, self.preset.currentText()))
            except MiStudioError as err:
                show_error(self, err)

    def delete_preset(self) -> None:
        from mistudio.core.steering.presets import delete_preset

        if self.preset.currentText():
            delete_preset(self.ws, self.preset.currentText())
            self.refresh()

    def rate(self, better: str) -> None:
        from mistudio.core.steering.presets import rate

        if self.result is None or not self.preset.currentText():
            return
        r = self.result
        result: dict[str, Any] = {"prompt": r.prompt, "plain": r.plain._asdict(),
                                  "steered": r.steered._asdict()}
        if self.last_spec is not None:  # what produced this result, sliders may have moved
            result["spec"] = self.last_spec.to_dict()
        n = rate(self.ws, self.preset.currentText(), result, better)  # type: ignore[arg-type]
        self.rate_label.setText(f"Rated {better} ({n} ratings on this preset).")
