"""The training dashboard: metric curves over steps and the per-token feature density.

Metric rows arrive in batches from the worker and are appended to numpy buffers; a 30 Hz timer
pushes them into existing pyqtgraph curves with ``setData`` (downsampled, clipped to view), so
a run of 100k steps stays smooth. Legends are coloured words in the plot titles (they never
cover a curve or get clipped), listing only the loss terms the run has; axes carry labels and
ticks spaced for their labels' width (:class:`mistudio.gui.common.SpacedAxis`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from mistudio.gui.common import PanelScroll, wrapped
from mistudio.gui.plots import spaced_axes

THIS_RUN, COMPARED = "#e06c75", "#61afef"
CURVES = (("mse", "Loss terms", "loss (normalised units)"),
          ("explained_variance", "EV (training batches)", "explained variance"),
          ("l0", "L0", "active latents per token"),
          ("dead_fraction", "Dead latents (recent)", "fraction of latents"),
          ("lr", "Learning rate", "learning rate"))
EXTRA_LOSSES = (("aux", "aux", "#e5c07b"), ("l1", "L1", "#c678dd"),
                ("l0_penalty", "L0 penalty", "#c678dd"))
"""Loss terms drawn with the MSE, when the architecture has them."""
EV_NOTE = ("The curves show each training batch as it trains. The held-out figures are "
           "measured once at the end on the last 10% of the set, never trained on: those are "
           "the ones to quote.")


def _swatch(color: str, text: str) -> str:
    return f'<span style="color:{color}">&#9473; {text}</span>'


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
        for key in ("step", *(k for k, _, _ in CURVES), *(k for k, _, _ in EXTRA_LOSSES)):
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

    def has(self, key: str) -> bool:
        return bool(np.isfinite(self.get(key)).any())


class Dashboard(QWidget):
    """Curves of the metrics over steps and the latest feature-density histogram."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.summary = QLabel("No run plotted yet: start one, or click a past run.")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        row.addWidget(self.legend, 1)
        self.log_losses = QCheckBox("Log scale for losses")
        self.log_losses.setChecked(True)  # one outlier batch must not flatten the rest
        self.log_losses.toggled.connect(self._log_changed)
        row.addWidget(self.log_losses)
        layout.addLayout(row)
        grid = pg.GraphicsLayoutWidget()
        self.plots: dict[str, Any] = {}
        self.curves: dict[str, Any] = {}
        self.compare: dict[str, Any] = {}
        self.grid = grid
        for key, title, unit in CURVES:
            plot = grid.addPlot(title=title, axisItems=spaced_axes())
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            # No grid: pyqtgraph redraws grid lines across the whole plot at every frame, which
            # cost 40 of the 43 ms of a dashboard paint here (software rendering).
            plot.getAxis("left").setWidth(58)  # tick labels of new widths never re-lay out
            plot.setLabel("bottom", "step")
            plot.setLabel("left", unit)
            self.plots[key] = plot
            self.curves[key] = plot.plot(pen=pg.mkPen(THIS_RUN, width=2))
            self.compare[key] = plot.plot(pen=pg.mkPen(COMPARED, width=1))
        self.plots["mse"].setLogMode(y=True)
        self.extra = {k: self.plots["mse"].plot(pen=pg.mkPen(color, width=1.5))
                      for k, _, color in EXTRA_LOSSES}
        self.hist_plot = grid.addPlot(title="Feature density", axisItems=spaced_axes())
        self.hist_plot.getAxis("left").setWidth(58)
        self.hist_plot.setLabel("bottom", "log10 density (share of tokens)")
        self.hist_plot.setLabel("left", "latents")
        self.hist_plot.setXRange(-7, 0, padding=0.02)
        self.hist = pg.BarGraphItem(x=[], height=[], width=0.15, brush="#98c379")
        self.hist_plot.addItem(self.hist)
        layout.addWidget(grid, 1)
        self.columns = 0
        self.arrange()
        self.note = wrapped(QLabel(EV_NOTE))
        layout.addWidget(self.note)
        self.buffers = MetricBuffers()
        self.other = MetricBuffers()
        self.run_name, self.other_name = "", ""
        self._terms: tuple[str, ...] = ()
        self._dirty = False
        self._planned = 0
        self.timer = QTimer(self)
        self.timer.setInterval(33)  # ~30 Hz redraw
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def _ordered(self) -> list[Any]:
        return [*self.plots.values(), self.hist_plot]

    def columns_that_fit(self) -> int:
        """The most columns (3, 2 or 1) whose plots' minimum widths fit the view: large type
        (presentation mode) makes titles and tick labels wider, and a grid wider than its
        view is cut at the right."""
        from PySide6.QtCore import Qt

        mins = [p.effectiveSizeHint(Qt.SizeHint.MinimumSize).width() for p in self._ordered()]
        room = self.grid.viewport().width() - 12  # the layout's margins and spacing
        for cols in (3, 2):
            need = sum(max(mins[c::cols]) for c in range(cols)) + 6 * cols
            if need <= room:
                return cols
        return 1

    def arrange(self, columns: int | None = None) -> None:
        """Lay the six plots out in ``columns`` columns (default: as many as fit)."""
        try:
            columns = columns or self.columns_that_fit()
        except RuntimeError:  # resized or re-fonted while the window is torn down
            return
        if columns != self.columns:
            self.columns = columns
            for item in self._ordered():
                self.grid.ci.removeItem(item)
            for i, item in enumerate(self._ordered()):
                self.grid.ci.addItem(item, row=i // columns, col=i % columns)
        self._keep_plot_height()

    def _keep_plot_height(self) -> None:
        """Each plot keeps room to draw: in large type with one column, six plots shared a
        720-pixel window and their curves had no height left (the tab scrolls down instead)."""
        from PySide6.QtGui import QFontMetrics
        from PySide6.QtWidgets import QApplication

        # the application's font: a hidden tab's widgets take a new one only when shown
        line = QFontMetrics(QApplication.font()).height()
        per_plot = 5 * line + 70  # title, bottom ticks and label, spacing, 70 px of curve
        rows = -(-len(self._ordered()) // self.columns)
        if self.grid.minimumHeight() != rows * per_plot:
            self.grid.setMinimumHeight(rows * per_plot)
            PanelScroll.refit_around(self)

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        self.arrange()

    def changeEvent(self, e: Any) -> None:
        from PySide6.QtCore import QEvent

        super().changeEvent(e)
        if e.type() == QEvent.Type.FontChange:
            QTimer.singleShot(0, self, self.arrange)  # after the axes took the new font

    def plan(self, total_steps: int) -> None:
        """Fixed x ranges (the run's length, shown as soon as it is set in the form) and y
        ranges where the scale is known, so the axes are not laid out again at every frame:
        painting is most of the UI's time, and a new axis layout is its dearest part."""
        if total_steps == self._planned:
            return
        self._planned = total_steps
        self._fit_x()
        for key in ("explained_variance", "dead_fraction"):
            self.plots[key].setYRange(0, 1, padding=0.02)

    def _fit_x(self) -> None:
        """The planned run's length, or the compared run's if it is longer (drawn in full)."""
        other = self.other.get("step")
        end = max(self._planned, float(other[-1]) if len(other) else 0)
        for plot in self.plots.values():
            if end:
                plot.setXRange(0, end, padding=0.02)
            else:
                plot.enableAutoRange(x=True)

    def reset(self, total_steps: int | None = None, name: str = "") -> None:
        """A new run (``total_steps``: its length; None: a past run, ranged to its data)."""
        self.buffers = MetricBuffers()
        self.run_name = name
        self.hist.setOpts(x=[], height=[])
        self._planned = 0
        if total_steps:
            self.plan(total_steps)
        else:
            self._fit_x()
        self._dirty = True

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.buffers.append(rows)
        for r in rows:
            if "density_histogram" in r:
                self.show_density(r["density_histogram"])
            if "tokens_per_s" in r and r.get("tokens_per_s"):
                eta = ""
                if self._planned and r["step"] < self._planned:
                    per_step = r["tokens"] / max(r["step"], 1)
                    left = (self._planned - r["step"]) * per_step / r["tokens_per_s"]
                    eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}"
                ev = r.get("explained_variance")
                ev_text = "n/a" if ev is None else f"{ev:.3f}"
                self.summary.setText(f"step {r['step']:,}  EV (this batch) {ev_text}  "
                                     f"L0 {r['l0']:.1f}  dead (recent) {r['dead_fraction']:.1%}  "
                                     f"{r['tokens_per_s']:,.0f} tokens/s{eta}")
        self._dirty = True

    def show_density(self, histogram: dict[str, list[float]]) -> None:
        edges = np.array(histogram["edges"])
        self.hist.setOpts(x=(edges[:-1] + edges[1:]) / 2, height=histogram["counts"],
                          width=float(edges[1] - edges[0]) * 0.9)

    def show_compare(self, rows: list[dict[str, Any]], name: str = "") -> None:
        self.other = MetricBuffers()
        self.other.append(rows)
        self.other_name = name
        self._fit_x()
        self._dirty = True

    def _log_changed(self, on: bool) -> None:
        self.plots["mse"].setLogMode(y=on)
        self._dirty = True

    def _update_legends(self) -> None:
        terms = tuple(k for k, _, _ in EXTRA_LOSSES if self.buffers.has(k) or self.other.has(k))
        if terms != self._terms:
            self._terms = terms
            names = {k: (label, color) for k, label, color in EXTRA_LOSSES}
            self.plots["mse"].setTitle("Loss: " + " ".join(
                [_swatch(THIS_RUN, "MSE"), *(_swatch(*names[k][::-1]) for k in terms)]))
        runs = [_swatch(THIS_RUN, self.run_name or "this run")] if self.buffers.n else []
        if self.other.n:
            runs.append(_swatch(COMPARED, f"{self.other_name or 'compared run'} (compared, "
                                          "thin)"))
        self.legend.setText("  ".join(runs))

    def _positive(self, values: np.ndarray) -> np.ndarray:
        """On a log axis, zeros and negatives are gaps, not -inf."""
        if not self.log_losses.isChecked():
            return values
        return np.where(values > 0, values, np.nan)

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._update_legends()
        steps, other_steps = self.buffers.get("step"), self.other.get("step")
        for key, _, _ in CURVES:
            mine, theirs = self.buffers.get(key), self.other.get(key)
            if key == "mse":
                mine, theirs = self._positive(mine), self._positive(theirs)
            self.curves[key].setData(steps, mine)
            self.compare[key].setData(other_steps, theirs)
        for key, curve in self.extra.items():
            values = self._positive(self.buffers.get(key))
            seen = ~np.isnan(values)
            curve.setData(steps[seen], values[seen])
