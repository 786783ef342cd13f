"""The Features tab: the table of an analysis's features, one feature in detail, the map, a
correlation heatmap and "Analyze this text".

The table and the detail read the analysis folder directly (numpy, memory maps: milliseconds).
Everything that loads a model or runs a long computation (describing features, ablation, the
map, probing a text) runs as one job at a time through the panel's runner of the window's job
center; reading the token texts has its own small runner so that switching analyses never
waits on a long job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.features.carry import stale_reason
from mistudio.core.features.examples import FeatureReader, TokenText
from mistudio.core.features.store import FeatureStore, human_label
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError, MiStudioError
from mistudio.core.store.workspace import Workspace
from mistudio.gui.analyse_bar import AnalyseBar, EmptyFeatures
from mistudio.gui.common import name_combo, show_error
from mistudio.gui.feature_detail import FeatureDetail
from mistudio.gui.feature_table import COLUMNS, FeatureTableModel, FilterBar
from mistudio.gui.feature_views import CorrelationView, MapView, TextProbeView
from mistudio.gui.jobs import AppJobs
from mistudio.gui.words import app_text

LABEL_MIN_PX = 240
"""The Label column's least width: narrower, labels read as "t..." on a projector."""

class FeaturesPanel(QWidget):
    steerRequested = Signal(str, int)
    """(analysis, feature): the user wants to steer with this feature."""
    quickStartRequested = Signal()
    trainRequested = Signal()

    def __init__(self, ws: Workspace, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.device = "auto"
        self.jobs = jobs or AppJobs(ws.root, self)
        self.runner = self.jobs.runner("features", self)
        self.runner.finished.connect(self._job_done)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.loader = self.jobs.runner("token texts", self)
        self.loader.finished.connect(self._tokenizer_ready)
        self.loader.failed.connect(lambda m, d: show_error(self, m, d))
        self.loader.running_changed.connect(self._loader_running)
        self._reopen = ""
        self.analysis = ""
        self._job_analysis = ""
        """The analysis the running job is about (its result is shown only if still open)."""
        self._stamp: Any = None
        self.store: FeatureStore | None = None
        self.reader: FeatureReader | None = None
        self.text: TokenText | None = None
        self._pending_feature = -1

        v = QVBoxLayout(self)
        self._header(v)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._table_side())
        split.addWidget(self._views())
        split.setSizes([620, 660])  # the table: room for labels beside three numbers
        split.splitterMoved.connect(lambda *_: QTimer.singleShot(0, self, self._room_for_labels))
        v.addWidget(split, 1)
        self.split = split
        self.refresh()

    def _header(self, v: QVBoxLayout) -> None:
        """The analysis chooser and summary, the analyse bar, the empty-state guide."""
        top = QHBoxLayout()
        self.choice = name_combo()
        self.choice.setMinimumContentsLength(24)
        self.choice.currentTextChanged.connect(self.open_analysis)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        top.addWidget(QLabel("Analysis"))
        top.addWidget(self.choice)
        top.addWidget(self.summary, 1)
        v.addLayout(top)
        self.analyse_bar = AnalyseBar(self.ws)
        self.analyse_bar.analyseRequested.connect(self.analyse_sae)
        v.addWidget(self.analyse_bar)
        self.empty = EmptyFeatures()
        self.empty.quickStartRequested.connect(self.quickStartRequested)
        self.empty.trainRequested.connect(self.trainRequested)
        v.addWidget(self.empty)

    def _table_side(self) -> QWidget:
        """The filter bar over the feature table."""
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        self.model = FeatureTableModel(self)
        self.filters = FilterBar(self.model)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        # best-labelled first: opening on the densest feature showed a class an unlabelled
        # feature that fires on every space
        self.table.horizontalHeader().setSortIndicator(
            [k for k, _ in COLUMNS].index("score"), Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setWordWrap(False)
        self.fit_columns()
        self.table.selectionModel().currentRowChanged.connect(
            lambda cur, _prev: cur.isValid() and self.show_feature(self.model.feature_at(
                cur.row())))
        self.filters.changed.connect(self._filters_changed)
        self.model.sortShown.connect(self._show_sort)
        lv.addWidget(self.filters)
        lv.addWidget(self.table, 1)
        return left

    def _views(self) -> QTabWidget:
        """The feature, map, correlation and text views, wired to the panel."""
        self.views = QTabWidget()
        self.detail = FeatureDetail()
        self.map = MapView()
        self.correlation = CorrelationView()
        self.probe = TextProbeView()
        for w, title in ((self.detail, "Feature"), (self.map, "Map"),
                         (self.correlation, "Correlations"), (self.probe, "Analyze text")):
            self.views.addTab(w, title)
        self.detail.featureRequested.connect(self.select_feature)
        self.detail.steerRequested.connect(lambda f: self.steerRequested.emit(self.analysis, f))
        self.detail.labelEdited.connect(self.save_label)
        self.detail.describeRequested.connect(self.describe)
        self.detail.ablateRequested.connect(self.ablate)
        self.detail.evidenceRequested.connect(self.label_evidence)
        self.map.featureClicked.connect(self.select_feature)
        self.map.computeRequested.connect(lambda: self.compute_map(force=True))
        self.views.currentChanged.connect(self._view_changed)
        self.correlation.computeRequested.connect(self.correlate)
        self.probe.analyzeRequested.connect(self.analyze_text)
        self.probe.featureClicked.connect(self.select_feature)
        return self.views

    def fit_columns(self) -> None:
        """Column widths from the font (measuring 100k rows' contents would stall the UI)."""
        header = self.table.horizontalHeader()
        width = self.table.fontMetrics().horizontalAdvance
        for col, sample in ((0, "0000000"), (3, "Detection0")):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, width(sample) + 16)
        for col in range(2, self.model.columnCount()):
            if col != 3:
                header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self._room_for_labels()

    def _room_for_labels(self) -> None:
        """Hide the optional columns (plugins', mean, max, fuzzing, frequency, family: in that
        order) while the Label column would be narrower than LABEL_MIN_PX: a label is what
        people read, and the detail pane shows the hidden figures. Shown again when the table
        widens. Feature and detection always show."""
        header = self.table.horizontalHeader()
        width = self.table.fontMetrics().horizontalAdvance
        room = self.table.viewport().width()
        fixed = sum(header.sectionSize(c) for c in (0, 3))
        optional = [2, 5, 4, 6, 7, *range(8, self.model.columnCount())]
        need = {c: width(str(self.model.headerData(c, Qt.Orientation.Horizontal)) + "00") + 16
                for c in optional}
        need[2] = width("function words") + 16  # a family's name (longer ones are elided)
        shown = list(optional)
        while shown and room - fixed - sum(need[c] for c in shown) < LABEL_MIN_PX:
            shown.pop()
        for c in optional:
            header.setSectionHidden(c, c not in shown)
            if c in shown:
                header.resizeSection(c, need[c])

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        QTimer.singleShot(0, self, self._room_for_labels)  # once the table has its new width

    def changeEvent(self, e: QEvent) -> None:
        if e.type() == QEvent.Type.FontChange:  # presentation mode: wider columns, taller rows
            self.fit_columns()
        super().changeEvent(e)

    # -- analyses -------------------------------------------------------------------------------
    def refresh(self) -> None:
        names = [a.name for a in self.ws.catalog.list("features") if a.status == "complete"]
        current = self.choice.currentText()
        self.choice.blockSignals(True)
        self.choice.clear()
        self.choice.addItems(names)
        if current in names:
            self.choice.setCurrentText(current)
        self.choice.blockSignals(False)
        self.analyse_bar.refresh()
        self.empty.show_state(self.analyse_bar.isEnabled())
        self.empty.setVisible(not names)
        self.split.setVisible(bool(names))
        if names:
            self.open_analysis(self.choice.currentText())

    def open_analysis(self, name: str, feature: int = -1) -> None:
        """Show ``name`` (again only if it was rebuilt), then optionally one of its features."""
        if not name:
            return
        art = self.ws.catalog.find("features", name)
        if art is None or art.status != "complete":
            return
        stamp = (name, art.path, art.provenance.created)
        if feature >= 0:
            self._pending_feature = feature
        if stamp == self._stamp:
            if feature >= 0 and self.text is not None:
                self.select_feature(feature)
            return
        self._stamp, self.analysis = stamp, name
        if self.choice.currentText() != name:
            self.choice.blockSignals(True)
            self.choice.setCurrentText(name)
            self.choice.blockSignals(False)
        folder = Path(art.path)
        self.store, self.reader, self.text = FeatureStore(folder), FeatureReader(folder), None
        s = art.summary
        stale = stale_reason(self.ws, name)
        self.summary.setText(f"{s.alive:,} live features of {self.store.n:,}, "
                             f"{s.n_tokens:,} tokens analysed, hook "
                             f"{art.provenance.hook or '?'}" + (
                                 f". Out of date: {stale}; analyse again to describe the SAE "
                                 "as it is now." if stale else ""))
        try:
            self.model.set_store(self.store)
            self.filters.suggest(self.store)
            self.filters.apply()
        except CorruptedError as err:  # a damaged labels file: offer to recover it
            self._stamp = None
            self._offer_recovery(err, folder, name)
            return
        self.map.clear()
        self.detail.set_source(None, None, None)
        self._loading = name
        if not self.loader.start("token_texts", str(folder),
                                 title=f"Reading the token texts of {name}"):
            self._stamp = None  # opened again when the running load ends
            self._reopen = name

    def _offer_recovery(self, err: CorruptedError, folder: Path, name: str) -> None:
        from PySide6.QtWidgets import QMessageBox

        from mistudio.core.features.label_db import recover_labels

        if "recover_labels" not in err.actions:
            show_error(self, err)
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "miStudio", app_text(err), parent=self)
        recover = box.addButton("Recover labels", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() is not recover:
            return
        try:
            r = recover_labels(folder)  # a small file: moved aside, its rows copied
        except MiStudioError as failure:
            show_error(self, failure)
            return
        QMessageBox.information(self, "miStudio", f"Recovered {r.saved:,} labels "
                                f"({r.human:,} written by hand); the damaged file is kept "
                                f"as {r.kept_as.name}.")
        self.open_analysis(name)

    def _loader_running(self, running: bool) -> None:
        if not running and self._reopen:
            name, self._reopen = self._reopen, ""
            QTimer.singleShot(0, lambda: self.open_analysis(name))

    def _tokenizer_ready(self, text: TokenText | None) -> None:
        """The analysis's stored token texts; for an analysis made before they were stored,
        they are stored first (the tokenizer loads once, in a child process)."""
        if self._loading != self.analysis or self.reader is None:
            return
        if text is None and self.loader.kind == "token_texts":
            self.loader.start("store_token_texts", str(self.reader.folder),
                              self.reader.manifest.provenance.model,
                              title=f"Storing the token texts of {self.analysis}")
            return
        if text is None:
            return
        self.text = text
        self.detail.set_source(self.store, self.reader, self.text)
        first = self._pending_feature if self._pending_feature >= 0 else (
            self.model.feature_at(0) if self.model.rowCount() else -1)
        self._pending_feature = -1
        if first >= 0:
            self.select_feature(first)
        if self.views.currentWidget() is self.map:
            self.compute_map()

    # -- selection ------------------------------------------------------------------------------
    def select_feature(self, f: int) -> None:
        """Select ``f`` in the table (clearing filters that hide it) and show it everywhere."""
        if self.store is None:
            return
        self.store.check_index(f)
        row = self.model.row_of(f)
        if row < 0:
            self.filters.search.clear()
            self.filters.min_score.setValue(0)
            self.filters.min_freq.setValue(0)
            self.filters.max_freq.setValue(100)
            self.filters.alive.setChecked(False)
            self.filters.apply()
            row = self.model.row_of(f)
        index = self.model.index(row, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)
        self.show_feature(f)

    def show_feature(self, f: int) -> None:
        if self.text is None:
            self._pending_feature = f
            return
        if f != self.detail.feature:
            self.detail.show_feature(f)
        self.map.highlight(f)
        if self.views.currentWidget() is self.map:
            return
        if self.views.currentWidget() is not self.probe:
            self.views.setCurrentWidget(self.detail)

    def _filters_changed(self) -> None:
        if self.model.rowCount() and not self.table.selectionModel().hasSelection():
            self.table.selectRow(0)
        elif not self.model.rowCount():  # nothing matches: no stale feature beside the table
            self.detail.clear("No feature matches the search and filters.")

    def _show_sort(self, column: int, descending: bool) -> None:
        header = self.table.horizontalHeader()
        header.blockSignals(True)
        header.setSortIndicator(column, Qt.SortOrder.DescendingOrder if descending
                                else Qt.SortOrder.AscendingOrder)
        header.blockSignals(False)

    def _view_changed(self, _index: int) -> None:
        if self.views.currentWidget() is self.map and not len(self.map.xy):
            self.compute_map()

    # -- jobs -----------------------------------------------------------------------------------
    def _start(self, kind: str, *args: Any, title: str = "", **kwargs: Any) -> None:
        self._job_analysis = self.analysis
        if not self.runner.start(kind, *args, title=title, **kwargs):
            show_error(self, f"The Features panel is busy ({self.runner.title}). Wait for it, "
                       "or cancel it in the status bar.")

    def analyse_sae(self, sae: str, activations: str = "", tokens: int = 100_000) -> None:
        """Analyse ``sae`` (again: labels written by hand are carried over) in a child
        process; the new analysis opens when it is done."""
        from mistudio.core.features.analysis import AnalyzeConfig

        if not sae:
            return
        self.analyse_bar.select(sae)
        try:
            cfg = AnalyzeConfig(sae, activations=activations or None, tokens=tokens,
                                device=self.device if self.device != "auto" else "cpu")
        except MiStudioError as err:
            show_error(self, err)
            return
        again = self.ws.catalog.find("features", sae) is not None
        self._start("analyze", cfg, overwrite=again, title=f"Analysing {sae}")

    def _job_done(self, value: Any) -> None:
        kind = self.runner.kind
        if kind == "analyze":
            self.refresh()
            self.choice.setCurrentText(value.name)
            self.open_analysis(value.name)
            return
        if self._job_analysis != self.analysis or self.store is None:
            return
        if kind == "read_feature_map" and value is None:  # not computed yet
            self._start("feature_map", self.analysis,
                        title="Computing the feature map (UMAP)")
        elif kind in ("read_feature_map", "feature_map"):
            self.map.set_map(value.xy, value.method, self.store)
            self.map.highlight(self.detail.feature)
        elif kind == "label":
            self._labelled(value)
        elif kind == "ablate":
            self.detail.show_ablation(value)
        elif kind == "label_evidence":
            if value.feature == self.detail.feature and self.detail.text is not None:
                peak = float(self.store.column("max_activation")[value.feature]) or 1.0
                self.detail.evidence.show_evidence(value, self.detail.text, peak)
        elif kind == "correlate":
            self.correlation.show_matrix(*value)
        elif kind == "probe_text":
            self._probed(*value)

    def _labelled(self, run: Any) -> None:
        assert self.store is not None
        self.store.forget_labels()  # written by the job's process
        self.model.labels_changed()
        if self.detail.feature >= 0:
            self.detail.show_label(self.store.label(self.detail.feature))
        self.filters.set_families(self.store)
        mean = "n/a" if run.mean_score is None else f"{run.mean_score:.2f}"
        left = f" {run.left:,} left for the next run (out of time)." if run.left else ""
        note = f"{run.note} " if run.note else ""
        self.summary.setText(f"{note}Described {run.labelled_now:,} features with "
                             f"{run.explainer}: {run.score_ge_0_7:,} of {run.scored:,} labels "
                             f"reach 0.7 held-out detection ({run.concept_ge_0_7:,} naming a "
                             f"concept; mean {mean}).{left}")

    def compute_map(self, force: bool = False) -> None:
        """The feature map: read when it was computed before, else computed (UMAP, a child
        process)."""
        if not self.analysis or self.store is None:
            return
        if force:
            self._start("feature_map", self.analysis, recompute=True,
                        title="Computing the feature map (UMAP)")
        else:
            self._start("read_feature_map", self.analysis)

    def save_label(self, f: int, text: str) -> None:
        if self.store is None:
            return
        try:
            label = human_label(f, text)
        except InvalidInputError as err:
            show_error(self, app_text(err), "")
            return
        self.store.set_labels([label])
        self.model.labels_changed()
        self.detail.show_label(self.store.label(f))

    def describe(self, features: Any, explainer: str, endpoint: str) -> None:
        from mistudio.core.features.labels import LabelConfig

        try:
            if isinstance(features, list):
                cfg = LabelConfig(features=tuple(features), explainer=explainer,
                                  endpoint=endpoint, overwrite=True)
            else:
                cfg = LabelConfig(top=int(features) or None, explainer=explainer,
                                  endpoint=endpoint)
        except MiStudioError as err:
            show_error(self, err)
            return
        what = f"feature {features[0]}" if isinstance(features, list) else \
            f"the top {features}" if features else "every live feature"
        self._start("label", self.analysis, cfg, title=f"Describing {what}")

    def label_evidence(self, f: int) -> None:
        if self.store is not None and f >= 0:
            self._start("label_evidence", self.analysis, f,
                        title=f"Reading the held-out windows of feature {f}")

    def ablate(self, f: int) -> None:
        if self.store is None:
            return
        self._start("ablate", str(self.store.folder), self._stamp, f, self.device,
                    title=f"Ablating feature {f}")

    def correlate(self, feats: list[int]) -> None:
        if self.store is None:
            return
        if not feats:
            picked = sorted({self.model.feature_at(i.row())
                             for i in self.table.selectionModel().selectedRows()})
            feats = picked if len(picked) > 1 else self._with_partners(self.detail.feature)
        if len(feats) < 2:
            show_error(self, "Pick at least two features: type their indices, or select rows "
                       "in the table.")
            return
        try:
            for f in feats:
                self.store.check_index(f)
        except MiStudioError as err:  # the core's message names the bad index
            show_error(self, err)
            return
        self._start("correlate", str(self.store.folder), feats)

    def _with_partners(self, f: int) -> list[int]:
        if f < 0 or self.store is None:
            return []
        partners = [int(g) for g in self.store.column("cooccur_ids")[f] if g >= 0]
        return [f, *partners[:11]]

    def analyze_text(self, text: str) -> None:
        """The analysis's features on a text (in the model's service)."""
        if self.store is None:
            return
        feature = self.detail.feature
        self._probe_feature = feature
        self._start("probe_text", self.analysis, str(self.store.folder), self._stamp, text,
                    (feature,) if feature >= 0 else (), self.device)

    def _probed(self, acts: Any, rows: list[dict[str, Any]]) -> None:
        """Rows with the labels of the features they name (read here: labels change)."""
        assert self.store is not None
        feats = {int(f) for f in acts.top_features_TK.ravel() if f >= 0}
        labels = {f: lb.label for f, lb in self.store.labels_for(sorted(feats)).items()}
        for r in rows:
            r["label"] = labels.get(r["feature"], "")
        self.probe.show_result(acts, rows, labels, self._probe_feature)
