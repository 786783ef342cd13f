"""One feature in detail: its label (editable), examples as token heatmaps, activation
histogram, logit lens, nearest and co-occurring features, ablation and "Describe".

Everything shown is read from the analysis folder (memory-mapped, a few milliseconds per
feature); what needs the model (ablation, describing with an explainer) is asked of the panel,
which runs it in its worker, through signals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.features.examples import Example, FeatureReader, TokenText
from mistudio.core.features.store import FeatureStore, Label, describe_columns
from mistudio.core.runtime.plugins import installed_names
from mistudio.gui.token_view import TokenHeatmap

EXPLAINERS = (("concept", "Concepts", "Words a person reads: parts of speech, names, quotes, "
                "negation, code, layout (and single tokens where that is what fires), chosen on "
                "half the text and scored on the other half"),
              ("pattern", "Tokens only", "Which tokens (after which tokens) it fires on"),
              ("llm", "Local LLM (1B+)", "A workspace model of at least 1B parameters as "
               "explainer and judge (smaller ones label at chance and are not used)"),
              ("endpoint", "Local server", "An OpenAI-compatible server on this machine "
               "(Ollama, llama.cpp, vLLM); nothing leaves the machine"))


class ExampleList(QWidget):
    """Contexts of a feature, one heatmap per line, the activation on the left."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QVBoxLayout(self)
        self.box.setSpacing(2)
        self.heatmaps: list[TokenHeatmap] = []

    def set_examples(self, examples: list[Example], text: TokenText, peak: float) -> None:
        while self.box.count():
            item = self.box.takeAt(0)
            if item.widget() is not None:  # hidden now, deleted when the loop next runs
                item.widget().hide()
                item.widget().deleteLater()
        self.heatmaps = []
        for e in examples:
            row = QWidget()
            line = QHBoxLayout(row)
            line.setContentsMargins(0, 0, 0, 0)
            value = QLabel(f"{e.activation:.2f}")
            value.setFixedWidth(value.fontMetrics().horizontalAdvance("00000.00"))
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            value.setToolTip(f"{e.kind}: activation on the underlined token, sequence "
                             f"{e.sequence}")
            heat = TokenHeatmap()
            heat.set_tokens(text.many(e.token_ids), e.activations, e.marked, peak)
            heat.tooltip = lambda i, e=e, heat=heat: (
                f"{heat.tokens[i]!r}  activation {e.activations[i]:.3f}  "
                f"(sequence {e.sequence}, position {int(e.positions[i])})")
            line.addWidget(value)
            line.addWidget(heat, 1)
            self.box.addWidget(row)
            self.heatmaps.append(heat)
        if not examples:
            self.box.addWidget(QLabel("No examples: this feature never fired on the analysed "
                                      "tokens."))
        self.box.addStretch(1)


def as_piece(token: str) -> str:
    """A token as a reader takes it: a word start as the word (its leading space dropped), a
    piece that continues a word marked with \u2026 ("\u2026rotsky"), anything else as it is."""
    if token.startswith(" ") and token.strip():
        return token[1:]
    if token[:1].isalnum():
        return "\u2026" + token
    return token


class FeatureDetail(QWidget):
    featureRequested = Signal(int)
    """A linked feature (neighbour, co-occurring) was clicked."""
    steerRequested = Signal(int)
    describeRequested = Signal(object, str, str)
    """Features to describe (a list, or N for the top N), the explainer as the core names it
    (concept, pattern, llm:MODEL, endpoint:MODEL), the endpoint URL."""
    ablateRequested = Signal(int)
    labelEdited = Signal(int, str)
    evidenceRequested = Signal(int)
    """The held-out windows behind a feature's label were asked for."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store: FeatureStore | None = None
        self.reader: FeatureReader | None = None
        self.text: TokenText | None = None
        self.feature = -1
        v = QVBoxLayout(self)
        self.title = QLabel("Pick a feature in the table or on the map.")
        font = QFont(self.title.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.title.setFont(font)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        heading = QHBoxLayout()  # the label's family, source and scores beside the title
        heading.addWidget(self.title)
        self._label_row(v)
        heading.addWidget(self.label_info, 1)
        v.insertLayout(0, heading)
        v.insertWidget(1, self.stats)
        self._actions(v)
        self.ablation = QLabel("")
        self.ablation.setWordWrap(True)
        v.addWidget(self.ablation)
        self.tabs = QTabWidget()
        self.top_examples, self.quantiles = ExampleList(), ExampleList()
        examples = QWidget()
        ev = QVBoxLayout(examples)
        for title, w in (("Max-activating contexts", self.top_examples),
                         ("Contexts across the activation range (lowest band first)",
                          self.quantiles)):
            group = QGroupBox(title)
            QVBoxLayout(group).addWidget(w)
            ev.addWidget(group)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(examples)
        self.tabs.addTab(scroll, "Examples")
        self.tabs.addTab(self._effects(), "Logit lens and neighbours")
        from mistudio.gui.label_evidence import EvidenceView

        self.evidence = EvidenceView()
        self.evidence.showRequested.connect(lambda: self.evidenceRequested.emit(self.feature))
        self.tabs.addTab(self.evidence, "Label evidence")
        v.addWidget(self.tabs, 1)
        for w in (self.describe_button, self.ablate_button, self.steer_button):
            w.setEnabled(False)

    def _effects(self) -> QWidget:
        w = QWidget()
        grid = QGridLayout(w)
        self.promoted, self.suppressed = QListWidget(), QListWidget()
        self.nearest, self.cooccurring = QListWidget(), QListWidget()
        rows = self.fontMetrics().height() * 5  # five entries visible, at any font size
        for lst in (self.promoted, self.suppressed, self.nearest, self.cooccurring):
            lst.setMinimumHeight(rows)
        for lst in (self.promoted, self.suppressed):
            lst.setToolTip("Tokens this feature makes more (or less) likely next. \u2026 before a "
                           "token: a piece that continues a word (\u2026rotsky ends Trotsky).")
        for lst in (self.nearest, self.cooccurring):
            lst.itemClicked.connect(lambda item: self.featureRequested.emit(
                int(item.data(Qt.ItemDataRole.UserRole))))
            lst.setToolTip("Click to open that feature")
        self.hist = pg.PlotWidget(title="Activations when firing (count per bin)")
        self.hist.setMinimumHeight(90)
        self.hist_bars = pg.BarGraphItem(x=[], height=[], width=1.0, brush="#d62728")
        self.hist.addItem(self.hist_bars)
        self.hist.getAxis("left").setWidth(48)
        for col, (title, lst) in enumerate((("Promotes (logit lens)", self.promoted),
                                            ("Suppresses", self.suppressed),
                                            ("Nearest (decoder cosine)", self.nearest),
                                            ("Fires together with", self.cooccurring))):
            label = QLabel(title)
            label.setWordWrap(True)  # four titles side by side must not widen the pane
            grid.addWidget(label, 0, col)
            grid.addWidget(lst, 1, col)
            grid.setRowStretch(1, 1)
        grid.addWidget(self.hist, 2, 0, 1, 4)
        return w

    def _label_row(self, v: QVBoxLayout) -> None:
        """The label, editable, with its source and score."""
        row = QHBoxLayout()
        self.label_edit = QLineEdit()
        self.label_edit.setPlaceholderText("No label yet: type one, or Describe")
        save = QPushButton("Save label")
        save.clicked.connect(self._save_label)
        self.label_edit.returnPressed.connect(self._save_label)
        self.label_info = QLabel("")
        self.label_info.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.label_info.setWordWrap(True)  # never wider than the pane
        row.addWidget(self.label_edit, 1)
        row.addWidget(save)
        v.addLayout(row)

    def _actions(self, v: QVBoxLayout) -> None:
        """Describe (with the explainer to use), ablate, steer."""
        actions = QHBoxLayout()
        self.explainer = QComboBox()
        for i, (key, text, tip) in enumerate(EXPLAINERS):
            self.explainer.addItem(text, key)
            self.explainer.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        for name in installed_names("mistudio.explainers"):  # installed plugins' explainers
            self.explainer.addItem(f"Plugin: {name}", f"plugin:{name}")
        self.endpoint = QLineEdit("http://localhost:11434/v1")
        self.endpoint.setToolTip("Only localhost servers are used (nothing leaves the machine).")
        self.endpoint_model = QLineEdit()
        self.endpoint_model.setPlaceholderText("served model, e.g. llama3.1")
        self.endpoint.setVisible(False)
        self.endpoint_model.setVisible(False)
        self.explainer.currentIndexChanged.connect(self._explainer_changed)
        self.describe_button = QPushButton("Describe this")
        self.describe_button.clicked.connect(lambda: self._describe([self.feature]))
        self.top_n = QSpinBox(minimum=0, maximum=100_000, value=0)
        self.top_n.setSpecialValueText("all")
        self.top_n.setToolTip("How many of the most frequent live features to describe (all: "
                              "every live feature, within ten minutes; a second run goes on "
                              "where the first stopped)")
        top = QPushButton("Describe")
        top.clicked.connect(lambda: self._describe(None))
        self.ablate_button = QPushButton("Ablation effect")
        self.ablate_button.setToolTip("Remove this feature in the model on its top contexts "
                                      "and measure the change in next-token loss")
        self.ablate_button.clicked.connect(lambda: self.ablateRequested.emit(self.feature))
        self.steer_button = QPushButton("Steer with this feature")
        self.steer_button.clicked.connect(lambda: self.steerRequested.emit(self.feature))
        for w in (self.explainer, self.endpoint, self.endpoint_model, self.describe_button, top,
                  self.top_n):
            actions.addWidget(w)
        actions.addStretch(1)
        v.addLayout(actions)
        more = QHBoxLayout()
        for w in (self.ablate_button, self.steer_button):
            more.addWidget(w)
        more.addStretch(1)
        v.addLayout(more)

    def _explainer_changed(self, _index: int) -> None:
        kind = self.explainer.currentData()
        self.endpoint.setVisible(kind == "endpoint")
        self.endpoint_model.setVisible(kind in ("endpoint", "llm"))
        self.endpoint_model.setPlaceholderText("served model, e.g. llama3.1" if kind == "endpoint"
                                               else "workspace model (1B+ parameters)")

    # -- content --------------------------------------------------------------------------------
    def set_source(self, store: FeatureStore | None, reader: FeatureReader | None,
                   text: TokenText | None) -> None:
        self.store, self.reader, self.text = store, reader, text
        self.feature = -1
        for w in (self.describe_button, self.ablate_button, self.steer_button):
            w.setEnabled(False)

    def clear(self, why: str) -> None:
        """Show no feature (a search that matched none): nothing stale beside the table."""
        self.feature = -1
        self.title.setText(why)
        for w in (self.stats, self.ablation, self.label_info):
            w.setText("")
        self.label_edit.clear()
        self.evidence.clear_evidence()
        self.top_examples.set_examples([], self.text, 1.0)
        self.quantiles.set_examples([], self.text, 1.0)
        for lst in (self.promoted, self.suppressed, self.nearest, self.cooccurring):
            lst.clear()
        self.hist_bars.setOpts(x=[], height=[], width=1.0)
        for w in (self.describe_button, self.ablate_button, self.steer_button):
            w.setEnabled(False)

    def show_feature(self, f: int) -> None:
        if self.store is None or self.reader is None or self.text is None:
            return
        self.feature = f
        info = describe_columns(self.store, f)
        text = self.text
        self.title.setText(f"Feature {f}")
        flags = (" - dead" if info["dead"] else "") + (" - dense" if info["dense"] else "")
        self.stats.setText(f"Fires on {info['frequency']:.3%} of analysed tokens; max "
                           f"activation {info['max_activation']:.3f}, mean when firing "
                           f"{info['mean_activation']:.3f}{flags}{_plugin_text(self.store, info)}")
        self.show_label(self.store.label(f))
        self.ablation.setText("")
        peak = float(info["max_activation"]) or 1.0
        self.top_examples.set_examples(self.reader.top_examples(f, 12), text, peak)
        self.quantiles.set_examples(self.reader.quantile_examples(f, n_bins=5, per_bin=1),
                                    text, peak)
        self._fill(self.promoted, [(as_piece(text(i)), f"{v:+.2f}", None) for i, v in zip(
            info.get("logit_pos_ids", []), info.get("logit_pos_values", []), strict=True)])
        self._fill(self.suppressed, [(as_piece(text(i)), f"{v:+.2f}", None) for i, v in zip(
            info.get("logit_neg_ids", []), info.get("logit_neg_values", []), strict=True)])
        labels = self.store.labels_for([*info.get("neighbour_ids", []),
                                        *info.get("cooccur_ids", [])])
        self._fill(self.nearest, [(self._named(i, labels), f"{c:.2f}", i) for i, c in zip(
            info.get("neighbour_ids", []), info.get("neighbour_cos", []), strict=True)])
        self._fill(self.cooccurring, [(self._named(i, labels), f"{c:.2f}", i) for i, c in zip(
            info.get("cooccur_ids", []), info.get("cooccur_score", []), strict=True) if i >= 0])
        counts = np.asarray(self.reader.histograms[f], dtype=float)
        width = peak / len(counts)
        self.hist_bars.setOpts(x=(np.arange(len(counts)) + 0.5) * width, height=counts,
                               width=width * 0.9)
        self.hist.setLabel("bottom", "activation")
        for w in (self.describe_button, self.ablate_button, self.steer_button):
            w.setEnabled(not info["dead"])

    @staticmethod
    def _named(i: int, labels: dict[int, Label]) -> str:
        lb = labels.get(int(i))
        return f"{i}: {lb.label[:40]}" if lb else f"{i} (no label yet)"

    @staticmethod
    def _fill(lst: QListWidget, rows: list[tuple[str, str, int | None]]) -> None:
        lst.clear()
        for name, value, feature in rows:
            item = QListWidgetItem(f"{value}  {name!r}" if feature is None else f"{value}  {name}")
            if feature is not None:
                item.setData(Qt.ItemDataRole.UserRole, int(feature))
            lst.addItem(item)

    def show_label(self, lb: Label | None) -> None:
        self.label_edit.setText(lb.label if lb else "")
        if lb is None:
            self.label_info.setText("unlabelled")
        else:
            # rounded from float32, as the table's score column is stored: 0.975 must not read
            # 0.98 in the table and 0.97 here
            score = "unscored" if lb.score is None else \
                f"detection {float(np.float32(lb.score)):.2f}"
            if lb.fuzzing is not None:
                score += f", fuzzing {lb.fuzzing:.2f}"
            family = f"{lb.family}; " if lb.family else ""
            failed = f", not labelled: {lb.detail}" if lb.status != "ok" else ""
            info = f"{family}{lb.source}, {score}{failed}"
            self.label_info.setText(info)
            self.label_info.setToolTip(f"{info}\nHeld-out scores: 0.5 is chance, 1 perfect"
                                       + (f"\n{lb.detail}" if lb.detail else ""))
        self.evidence.clear_evidence()

    def show_ablation(self, effect: Any) -> None:
        self.ablation.setText(
            f"Ablating feature {effect.feature} on {len(effect.per_context)} top contexts "
            f"({effect.tokens:,} predictions): next-token loss {effect.ce_clean:.4f} -> "
            f"{effect.ce_ablated:.4f} ({effect.delta:+.4f}).")

    def _save_label(self) -> None:
        if self.feature >= 0:
            self.labelEdited.emit(self.feature, self.label_edit.text().strip())

    def _describe(self, features: list[int] | None) -> None:
        explainer = str(self.explainer.currentData())
        model = self.endpoint_model.text().strip()
        if explainer == "endpoint" or (explainer == "llm" and model):
            explainer = f"{explainer}:{model}"
        self.describeRequested.emit(features if features is not None else self.top_n.value(),
                                    explainer, self.endpoint.text().strip())


def _plugin_text(store: FeatureStore, info: dict[str, Any]) -> str:
    """The columns installed plugins' analyses added, as a line under the statistics."""
    cols = store.plugin_columns
    return ("\n" + "; ".join(f"{c.replace('_', ' ')}: {float(info[c]):.3g}" for c in cols)
            if cols else "")
