"""Views over many features at once: the map (UMAP of decoder directions), a correlation
heatmap of chosen features, and "Analyze this text" (which features fire on which token).

Each view only draws; what takes time (computing the map, probing a text through the model)
is asked of the Features panel's worker through a signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from mistudio.gui.token_view import TokenHeatmap, scrolled

COLOR_STEPS = 32
"""Map colours are quantised: 32 shared brushes draw as fast as one."""


def parse_features(text: str) -> list[int]:
    """'3, 17 42' -> [3, 17, 42] (anything not a number separates)."""
    return [int(t) for t in "".join(c if c.isdigit() else " " for c in text).split()]


class MapView(QWidget):
    featureClicked = Signal(int)
    computeRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.color_by = QComboBox()
        self.color_by.addItems(["frequency", "score"])
        self.color_by.currentTextChanged.connect(lambda _: self.recolor())
        self.compute = QPushButton("Compute the map")
        self.compute.clicked.connect(self.computeRequested.emit)
        self.info = QLabel("The map places features with similar decoder directions together.")
        self.info.setWordWrap(True)
        row.addWidget(QLabel("Colour by"))
        row.addWidget(self.color_by)
        row.addWidget(self.compute)
        row.addWidget(self.info, 1)
        v.addLayout(row)
        self.plot = pg.PlotWidget()
        self.plot.setAspectLocked(True)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.labels: Any = None
        self.points = pg.ScatterPlotItem(size=6, pen=None, hoverable=True, tip=self._tip,
                                         hoverSize=11)
        self.points.sigClicked.connect(self._clicked)
        self.mark = pg.ScatterPlotItem(size=18, pen=pg.mkPen("#ffbf00", width=3), brush=None)
        self.plot.addItem(self.points)
        self.plot.addItem(self.mark)
        v.addWidget(self.plot, 1)
        self.xy = np.zeros((0, 2), np.float32)
        self.store: Any = None
        self.cmap = pg.colormap.get("viridis")
        self.brushes = [pg.mkBrush(c) for c in self.cmap.getLookupTable(nPts=COLOR_STEPS)]
        self.gray = pg.mkBrush(150, 150, 150, 120)

    def clear(self) -> None:
        self.xy = np.zeros((0, 2), np.float32)
        self.points.clear()
        self.mark.clear()

    def set_map(self, xy: np.ndarray, method: str, store: Any) -> None:
        self.xy, self.store = xy, store
        self.info.setText(f"{len(xy):,} features ({method.upper()} of decoder directions). "
                          "Hover for a label, click to open a feature.")
        self.recolor()

    def recolor(self) -> None:
        if self.store is None or not len(self.xy):
            return
        key = self.color_by.currentText()
        values = self.store.column(key).astype(np.float64)
        if key == "frequency":
            values = np.log10(np.maximum(values, 1e-7))
        known = ~np.isnan(values)
        lo, hi = (values[known].min(), values[known].max()) if known.any() else (0.0, 1.0)
        steps = np.clip(((values - lo) / max(hi - lo, 1e-9) * (COLOR_STEPS - 1)), 0,
                        COLOR_STEPS - 1)
        brushes = [self.brushes[int(s)] if ok else self.gray
                   for s, ok in zip(np.nan_to_num(steps), known, strict=True)]
        self.points.setData(pos=self.xy, data=np.arange(len(self.xy)), brush=brushes)

    def _tip(self, x: float, y: float, data: Any) -> str:
        f = int(data)
        if self.store is None:
            return str(f)
        found = self.store.labels_for([f])
        label = found[f].label if f in found else "(unlabelled)"
        return f"feature {f}: {label}\nfires on {float(self.store.column('frequency')[f]):.3%}"

    def _clicked(self, _item: Any, points: Any, *_: Any) -> None:
        if len(points):
            self.featureClicked.emit(int(points[0].data()))

    def highlight(self, f: int) -> None:
        if 0 <= f < len(self.xy):
            self.mark.setData(pos=self.xy[f:f + 1])


class CorrelationView(QWidget):
    computeRequested = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.features = QLineEdit()
        self.features.setPlaceholderText("Features, e.g. 12, 40, 7 (or select rows in the table)")
        go = QPushButton("Correlate")
        go.clicked.connect(lambda: self.computeRequested.emit(parse_features(
            self.features.text())))
        row.addWidget(self.features, 1)
        row.addWidget(go)
        v.addLayout(row)
        self.info = QLabel("Pearson correlation of the features' activations over every "
                           "analysed token.")
        self.info.setWordWrap(True)
        v.addWidget(self.info)
        self.plot = pg.PlotWidget()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.image = pg.ImageItem()
        self.image.setColorMap(pg.colormap.get("CET-D1"))
        self.image.setLevels((-1, 1))
        self.plot.addItem(self.image)
        self.image.hoverEvent = self._hover
        v.addWidget(self.plot, 1)
        self.feats: list[int] = []
        self.matrix = np.zeros((0, 0), np.float32)

    def show_matrix(self, feats: list[int], C: np.ndarray) -> None:
        self.feats, self.matrix = feats, C
        self.image.setImage(C.T, levels=(-1, 1))  # ImageItem's first axis is x
        every = max(1, len(feats) // 8)  # labels that fit side by side under the matrix
        ticks = [(i + 0.5, str(f)) for i, f in enumerate(feats) if i % every == 0]
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).setTicks([ticks])
        self.features.setText(", ".join(map(str, feats)))
        self.info.setText(f"Correlation of {len(feats)} features (blue -1, red +1); hover a "
                          "cell for its value.")

    def _hover(self, ev: Any) -> None:
        if ev.isExit() or not len(self.feats):
            return
        i, j = int(ev.pos().y()), int(ev.pos().x())
        if 0 <= i < len(self.feats) and 0 <= j < len(self.feats):
            self.image.setToolTip(f"features {self.feats[i]} and {self.feats[j]}: "
                                  f"r = {self.matrix[i, j]:+.3f}")


class TextProbeView(QWidget):
    """Type or paste text; see the selected feature on each token and the strongest features."""

    analyzeRequested = Signal(str)
    featureClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Type or paste text, then Analyze.")
        self.input.setPlainText("def greet(name):\n    return f\"Hello, {name}!\"")
        self.input.setMaximumHeight(120)
        row = QHBoxLayout()
        go = QPushButton("Analyze")
        go.clicked.connect(lambda: self.analyzeRequested.emit(self.input.toPlainText()))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        row.addWidget(go)
        row.addWidget(self.info, 1)
        v.addWidget(self.input)
        v.addLayout(row)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.heat = TokenHeatmap()
        self.heat.tooltip = self._tip
        self.heat.tokenClicked.connect(self._token_clicked)
        self.strongest = QListWidget()
        self.strongest.itemClicked.connect(lambda item: self.featureClicked.emit(
            int(item.data(Qt.ItemDataRole.UserRole))))
        split.addWidget(scrolled(self.heat))
        split.addWidget(self.strongest)
        split.setSizes([700, 300])
        v.addWidget(split, 1)
        self.acts: Any = None
        self.labels: dict[int, str] = {}
        self.feature = -1

    def show_result(self, acts: Any, rows: list[dict[str, Any]], labels: dict[int, str],
                    feature: int) -> None:
        self.acts, self.labels, self.feature = acts, labels, feature
        watched = acts.watched_TW[:, 0] if acts.watched_TW.shape[1] else None
        self.heat.set_tokens(acts.tokens, watched)
        fired = int((watched > 0).sum()) if watched is not None else 0
        self.info.setText(f"{len(acts.tokens)} tokens. Coloured by feature {feature} (fires on "
                          f"{fired}); hover a token for its strongest features."
                          if feature >= 0 else f"{len(acts.tokens)} tokens; pick a feature to "
                          "colour them by it. Hover a token for its strongest features.")
        self.strongest.clear()
        for r in rows:
            item = QListWidgetItem(f"{r['activation']:.2f}  {r['feature']}: "
                                   f"{r['label'][:40] or '(unlabelled)'}  on {r['token']!r}")
            item.setData(Qt.ItemDataRole.UserRole, r["feature"])
            self.strongest.addItem(item)

    def _tip(self, i: int) -> str:
        if self.acts is None:
            return ""
        lines = [f"{self.acts.tokens[i]!r}"]
        for f, v in zip(self.acts.top_features_TK[i], self.acts.top_values_TK[i], strict=True):
            if f >= 0:
                lines.append(f"  {v:6.2f}  {int(f)}: {self.labels.get(int(f), '')[:40]}")
        return "\n".join(lines) if len(lines) > 1 else f"{lines[0]}: no feature fires"

    def _token_clicked(self, i: int) -> None:
        if self.acts is not None and self.acts.top_features_TK[i, 0] >= 0:
            self.featureClicked.emit(int(self.acts.top_features_TK[i, 0]))
