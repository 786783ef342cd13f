"""The Features tab: the table of an analysis's features, one feature in detail, the map, a
correlation heatmap and "Analyze this text".

The table and the detail read the analysis folder directly (numpy, memory maps: milliseconds).
Everything that loads a model or runs a long computation (describing features, ablation, the
map, probing a text) runs as one job at a time in the panel's worker; loading a tokenizer for
the token texts has its own small worker so that switching analyses never waits on a long job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.features.examples import FeatureReader, TokenText
from mistudio.core.features.store import FeatureStore, Label
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.runtime.processes import ChildService
from mistudio.core.store.workspace import Workspace
from mistudio.gui.analyse_bar import AnalyseBar, EmptyFeatures
from mistudio.gui.common import show_error
from mistudio.gui.feature_detail import FeatureDetail
from mistudio.gui.feature_table import COLUMNS, FeatureTableModel, FilterBar
from mistudio.gui.feature_views import CorrelationView, MapView, TextProbeView
from mistudio.gui.worker import JobRunner, in_worker


class FeaturesPanel(QWidget):
    steerRequested = Signal(str, int)
    """(analysis, feature): the user wants to steer with this feature."""
    quickStartRequested = Signal()
    trainRequested = Signal()

    def __init__(self, ws: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.device = "auto"
        self.runner = JobRunner(self)
        self.runner.finished.connect(self._job_done)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.loader = JobRunner(self)
        self.loader.finished.connect(self._tokenizer_ready)
        self.loader.failed.connect(lambda m, d: show_error(self, m, d))
        self.loader.running_changed.connect(self._loader_running)
        self._reopen = ""
        self.analysis = ""
        self._stamp: Any = None
        self.store: FeatureStore | None = None
        self.reader: FeatureReader | None = None
        self.text: TokenText | None = None
        self.service = ChildService()
        """Ablation and text probes run in this child process, which keeps the model loaded
        (:mod:`mistudio.core.features.service`)."""
        self._pending_feature = -1

        v = QVBoxLayout(self)
        top = QHBoxLayout()
        self.choice = QComboBox()
        self.choice.setMinimumContentsLength(24)
        self.choice.currentTextChanged.connect(self.open_analysis)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        top.addWidget(QLabel("Analysis"))
        top.addWidget(self.choice)
        top.addWidget(self.summary, 1)
        v.addLayout(top)
        self.analyse_bar = AnalyseBar(ws)
        self.analyse_bar.analyseRequested.connect(self.analyse_sae)
        v.addWidget(self.analyse_bar)
        self.empty = EmptyFeatures()
        self.empty.quickStartRequested.connect(self.quickStartRequested)
        self.empty.trainRequested.connect(self.trainRequested)
        v.addWidget(self.empty)

        split = QSplitter(Qt.Orientation.Horizontal)
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
        lv.addWidget(self.filters)
        lv.addWidget(self.table, 1)
        split.addWidget(left)

        self.views = QTabWidget()
        self.detail = FeatureDetail()
        self.map = MapView()
        self.correlation = CorrelationView()
        self.probe = TextProbeView()
        for w, title in ((self.detail, "Feature"), (self.map, "Map"),
                         (self.correlation, "Correlations"), (self.probe, "Analyze text")):
            self.views.addTab(w, title)
        split.addWidget(self.views)
        split.setSizes([560, 720])
        v.addWidget(split, 1)
        self.split = split

        self.detail.featureRequested.connect(self.select_feature)
        self.detail.steerRequested.connect(lambda f: self.steerRequested.emit(self.analysis, f))
        self.detail.labelEdited.connect(self.save_label)
        self.detail.describeRequested.connect(self.describe)
        self.detail.ablateRequested.connect(self.ablate)
        self.map.featureClicked.connect(self.select_feature)
        self.map.computeRequested.connect(lambda: self.compute_map(force=True))
        self.views.currentChanged.connect(self._view_changed)
        self.correlation.computeRequested.connect(self.correlate)
        self.probe.analyzeRequested.connect(self.analyze_text)
        self.probe.featureClicked.connect(self.select_feature)
        self.refresh()

    def fit_columns(self) -> None:
        """Column widths from the font (measuring 100k rows' contents would stall the UI)."""
        header = self.table.horizontalHeader()
        width = self.table.fontMetrics().horizontalAdvance
        for col, sample in enumerate(("0000000", "", "Score0", "Frequency0", "Max act.0",
                                      "Mean act.0")):
            if sample:
                header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
                header.resizeSection(col, width(sample) + 16)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)

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
        self.summary.setText(f"{s.alive:,} live features of {self.store.n:,}, "
                             f"{s.n_tokens:,} tokens analysed, hook "
                             f"{art.provenance.hook or '?'}")
        self.model.set_store(self.store)
        self.filters.apply()
        self.map.clear()
        self.detail.set_source(None, None, None)
        model = self.reader.manifest.provenance.model
        root = self.ws.root

        def load(task: Any) -> tuple[str, TokenText]:
            """The analysis's stored token texts; for an analysis made before they were stored,
            the tokenizer once (it holds the interpreter for seconds), then stored."""
            from mistudio.core.features.examples import stored_token_text, write_token_texts
            from mistudio.core.models.registry import load_tokenizer

            text = stored_token_text(folder)
            if text is None:
                ws = Workspace(root)
                try:
                    tokenizer = load_tokenizer(ws, model)
                finally:
                    ws.close()
                store = FeatureStore(folder)
                write_token_texts(folder, tokenizer, np.concatenate(
                    [store.column("logit_pos_ids").ravel(), store.column("logit_neg_ids").ravel()]))
                text = stored_token_text(folder) or TokenText(tokenizer)
            return name, text

        if not self.loader.start(f"Reading the token texts of {name}", load):
            self._stamp = None  # opened again when the running load ends
            self._reopen = name

    def _loader_running(self, running: bool) -> None:
        if not running and self._reopen:
            name, self._reopen = self._reopen, ""
            QTimer.singleShot(0, lambda: self.open_analysis(name))

    def _tokenizer_ready(self, result: tuple[str, Any]) -> None:
        name, text = result
        if name != self.analysis:
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

    def _view_changed(self, _index: int) -> None:
        if self.views.currentWidget() is self.map and not len(self.map.xy):
            self.compute_map()

    # -- jobs -----------------------------------------------------------------------------------
    def _start(self, title: str, kind: str, fn: Any) -> None:
        analysis = self.analysis
        job = in_worker(self.ws, lambda ws, task: (kind, analysis, fn(ws, task)))
        if not self.runner.start(title, job):
            show_error(self, f"The Features panel is busy ({self.runner.title}). Wait for it, "
                       "or cancel it in the status bar.")

    def analyse_sae(self, sae: str, activations: str = "", tokens: int = 100_000) -> None:
        """Analyse ``sae`` (again: labels written by hand are carried over) in a child
        process; the new analysis opens when it is done."""
        from mistudio.core.features.analysis import AnalyzeConfig, analyze_in_child

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
        root = str(self.ws.root)
        self._start(f"Analysing {sae}", "analysis",
                    lambda ws, task: analyze_in_child(root, cfg, overwrite=again, task=task))

    def _job_done(self, result: tuple[str, str, Any]) -> None:
        kind, analysis, value = result
        if kind == "analysis":
            self.refresh()
            self.choice.setCurrentText(value.name)
            self.open_analysis(value.name)
            return
        if analysis != self.analysis or self.store is None:
            return
        if kind == "map":
            self.map.set_map(value.xy, value.method, self.store)
            self.map.highlight(self.detail.feature)
        elif kind == "labels":
            self.model.labels_changed()
            if self.detail.feature >= 0:
                self.detail.show_label(self.store.label(self.detail.feature))
            mean = "n/a" if value.mean_score is None else f"{value.mean_score:.2f}"
            self.summary.setText(f"Described {value.labelled_now:,} features with "
                                 f"{value.explainer}: {value.score_ge_0_7:,} of "
                                 f"{value.scored:,} scored labels reach 0.7 (mean {mean}).")
        elif kind == "ablation":
            self.detail.show_ablation(value)
        elif kind == "correlation":
            self.correlation.show_matrix(*value)
        elif kind == "probe":
            self.probe.show_result(*value)

    def compute_map(self, force: bool = False) -> None:
        from mistudio.core.features.feature_map import MAP_FILE, feature_map, feature_map_in_child

        analysis, root = self.analysis, str(self.ws.root)
        if not analysis or self.store is None:
            return
        if not force and (self.store.folder / MAP_FILE).is_file():  # cached: just read it
            self._start("Reading the feature map", "map",
                        lambda ws, task: feature_map(ws, analysis, task))
        else:
            self._start("Computing the feature map (UMAP)", "map",
                        lambda ws, task: feature_map_in_child(root, analysis, recompute=force,
                                                              task=task))

    def save_label(self, f: int, text: str) -> None:
        if self.store is None:
            return
        if not text:
            show_error(self, "The label is empty.", "")
            return
        self.store.set_labels([Label(f, text, "human", None, None, "ok", None)])
        self.model.labels_changed()
        self.detail.show_label(self.store.label(f))

    def describe(self, features: Any, explainer: str, endpoint: str) -> None:
        from mistudio.core.features.labels import LabelConfig, label_features

        analysis = self.analysis
        try:
            if isinstance(features, list):
                cfg = LabelConfig(features=tuple(features), explainer=explainer,
                                  endpoint=endpoint, overwrite=True)
            else:
                cfg = LabelConfig(top=int(features), explainer=explainer, endpoint=endpoint)
        except MiStudioError as err:
            show_error(self, err)
            return
        what = f"feature {features[0]}" if isinstance(features, list) else f"top {features}"
        self._start(f"Describing {what}", "labels",
                    lambda ws, task: label_features(ws, analysis, cfg, task))

    def forget_models(self) -> None:
        """Drop loaded models (the device changed): the next job loads them again."""
        self.service.close()

    def ablate(self, f: int) -> None:
        from mistudio.core.features.service import ablate_in_service

        if self.store is None:
            return
        service, root, folder = self.service, str(self.ws.root), str(self.store.folder)
        stamp, device = self._stamp, self.device
        self._start(f"Ablating feature {f}", "ablation", lambda ws, task: service.call(
            ablate_in_service, root, folder, stamp, f, device, task=task))

    def correlate(self, feats: list[int]) -> None:
        from mistudio.core.features.interpret import feature_correlation

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
        folder = self.store.folder
        self._start("Correlating features", "correlation",
                    lambda ws, task: (feats, feature_correlation(folder, feats)))

    def _with_partners(self, f: int) -> list[int]:
        if f < 0 or self.store is None:
            return []
        partners = [int(g) for g in self.store.column("cooccur_ids")[f] if g >= 0]
        return [f, *partners[:11]]

    def analyze_text(self, text: str) -> None:
        from mistudio.core.features.probe import describe
        from mistudio.core.features.service import probe_in_service

        analysis, feature, device = self.analysis, self.detail.feature, self.device
        store = self.store
        if store is None:
            return
        service, root, folder, stamp = self.service, str(self.ws.root), str(store.folder), \
            self._stamp

        def run(ws: Workspace, task: Any) -> Any:
            acts = service.call(probe_in_service, root, analysis, folder, stamp, text,
                                (feature,) if feature >= 0 else (), device, task=task)
            rows = describe(acts, None, n=15)
            feats = {int(f) for f in acts.top_features_TK.ravel() if f >= 0}
            labels = {f: lb.label for f, lb in store.labels_for(sorted(feats)).items()}
            for r in rows:
                r["label"] = labels.get(r["feature"], "")
            return acts, rows, labels, feature

        self._start("Analysing the text", "probe", run)
