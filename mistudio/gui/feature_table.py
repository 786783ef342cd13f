"""The feature table: a Qt model over an analysis's numpy columns, and the filter bar above it.

The model holds one permutation (``order``: the feature indices shown, in display order) and
answers ``data()`` from the store's columns, so 100,000 features cost one int64 array, not
100,000 Python rows. Filtering and sorting compute a new permutation with numpy (the store's
``select`` and ``order``) and reset the model once. Label texts are fetched per page of rows
from SQLite when a row is first drawn: loading all of them takes longer than a filter step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.features.store import FeatureStore, Label

Index = QModelIndex | QPersistentModelIndex
PAGE = 256
"""Rows whose labels are fetched together when one of them is first drawn."""
COLUMNS = (("feature", "Feature"), ("label", "Label"), ("family", "Family"),
           ("score", "Detection"), ("fuzzing", "Fuzzing"), ("frequency", "Frequency"),
           ("max_activation", "Max act."), ("mean_activation", "Mean act."))
TIPS = {"score": "Held-out detection: does the label tell windows where the feature fires from "
                 "windows where it is silent (balanced accuracy; 0.5 = chance)",
        "fuzzing": "Held-out fuzzing: does the label tell the tokens the feature fires on from "
                   "decoy tokens of the same windows (balanced accuracy)",
        "family": "The family of concepts the label belongs to (names, quotes, negation, ...)"}


ASCENDING_FIRST = ("feature", "label", "family")
PER_PAGE = ("label", "family", "fuzzing")
"""Columns read from the labels a page of rows at a time (loading them all takes ~200 ms at
100k features; sorting by one of them loads it whole, once)."""
"""Columns whose first click sorts ascending (index, A to Z); a number's first click puts the
largest first (the most frequent, best-scored features: the informative rows)."""
_PLAIN = {"tokens", "token", "after", "before", "with", "varied", "promotes", "newline",
          "the", "and", "for", "from", "that", "this", "then", "than", "also", "except",
          "words", "inside", "text"}


def common_label_words(labels: np.ndarray, n: int = 2) -> list[str]:
    """The ``n`` words (4 letters or more) most labels of this analysis hold: examples that
    the search will find."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for text in labels[labels != ""][:20_000]:
        words = {w.lower() for w in "".join(c if c.isalpha() else " " for c in str(text)).split()}
        counts.update(w for w in words if len(w) >= 4 and w not in _PLAIN)
    return [w for w, _ in counts.most_common(n)]


class FeatureTableModel(QAbstractTableModel):
    """Rows are features of one analysis, in the order of a numpy permutation."""

    sortShown = Signal(int, bool)
    """The column sorted by and whether descending (the header shows it)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.store: FeatureStore | None = None
        self.order = np.zeros(0, np.int64)
        self.sort_key, self.descending = "frequency", True
        self.ranges: dict[str, tuple[float | None, float | None]] = {}
        self.search = ""
        self.family = ""
        self.alive_only = True
        self._labels: dict[int, Label | None] = {}
        self._pages: set[int] = set()
        self._cols: dict[str, np.ndarray] = {}
        self.columns: list[tuple[str, str]] = list(COLUMNS)
        """The built-in columns, then those installed plugins' analyses added."""

    # -- content --------------------------------------------------------------------------------
    def set_store(self, store: FeatureStore | None) -> None:
        self.store = store
        self._cols = {}
        self.columns = list(COLUMNS)
        if store is not None:
            self.columns += [(c, c.replace("_", " ").capitalize()) for c in store.plugin_columns]
            for key, _ in self.columns:
                if key not in PER_PAGE:
                    self._cols[key] = store.column(key)
        self.refilter()

    def labels_changed(self) -> None:
        """Labels were written (describe, edit): re-read texts and scores."""
        if self.store is None:
            return
        self._cols["score"] = self.store.column("score")
        self._labels, self._pages = {}, set()
        self.dataChanged.emit(self.index(0, 1), self.index(self.rowCount() - 1, 4))

    def refilter(self) -> None:
        """Apply the ranges, search and sort: one new permutation, one model reset."""
        self.beginResetModel()
        if self.store is None:
            self.order = np.zeros(0, np.int64)
        else:
            idx = self.store.select(self.ranges, self.search or None, self.alive_only,
                                    family=self.family or None)
            self.order = self.store.order(idx, self.sort_key, self.descending)
        self._labels, self._pages = {}, set()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        key = self.columns[column][0]
        descending = order == Qt.SortOrder.DescendingOrder
        if key != self.sort_key:  # a newly chosen column: its informative end first
            descending = key not in ASCENDING_FIRST
        if (key, descending) != (self.sort_key, self.descending):
            self.sort_key, self.descending = key, descending
            self.refilter()
        self.sortShown.emit(column, descending)

    def feature_at(self, row: int) -> int:
        return int(self.order[row])

    def row_of(self, feature: int) -> int:
        """The row showing ``feature``, or -1 when the filter hides it."""
        hits = np.flatnonzero(self.order == feature)
        return int(hits[0]) if len(hits) else -1

    # -- Qt model ---------------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def _label(self, row: int) -> Label | None:
        """The label shown on ``row``, fetched with its page of rows when first drawn."""
        f = int(self.order[row])
        if f not in self._labels:
            page = row // PAGE
            if page not in self._pages and self.store is not None:
                self._pages.add(page)
                feats = self.order[page * PAGE:(page + 1) * PAGE]
                found = self.store.labels_for(feats)
                for g in feats.tolist():
                    self._labels[g] = found.get(g)
        return self._labels.get(f)

    def _per_page(self, row: int, key: str) -> str:
        lb = self._label(row)
        if lb is None:
            return ""
        if key == "fuzzing":
            return "" if lb.fuzzing is None else f"{lb.fuzzing:.2f}"
        return (lb.label if key == "label" else lb.family) or ""

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        key = self.columns[index.column()][0]
        if role == Qt.ItemDataRole.DisplayRole:
            f = int(self.order[index.row()])
            if key == "feature":
                return str(f)
            if key in PER_PAGE:
                return self._per_page(index.row(), key)
            v = float(self._cols[key][f])
            if np.isnan(v):
                return ""
            if key == "frequency":
                return f"{v:.3%}" if v >= 1e-3 else f"{v:.1e}"
            return f"{v:.2f}" if key == "score" else f"{v:.3g}"
        if role == Qt.ItemDataRole.TextAlignmentRole and key not in ("label", "family"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and key == "label":
            return self._per_page(index.row(), "label") or None
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return TIPS.get(self.columns[section][0])
        return None


class FilterBar(QWidget):
    """Search as you type, frequency and score ranges, live-only: feeds the table model."""

    changed = Signal()

    def __init__(self, model: FeatureTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        rows = QVBoxLayout(self)
        rows.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search labels as you type (e.g. newline, import)")
        self.search.setClearButtonEnabled(True)
        self.min_freq = self._spin("Fires on at least this % of tokens", 100.0, 4)
        self.max_freq = self._spin("Fires on at most this % of tokens", 100.0, 4, 100.0)
        self.min_score = self._spin("Held-out detection at least (0: any, scored or not)", 1.0, 2)
        self.family = QComboBox()
        self.family.setToolTip("Show one family of labels (all negation features, all quotes, "
                               "...); the count of features in each is beside its name")
        self.family.addItem("All families", "")
        # wide enough for "adjectives and adverbs (1,234)" before any analysis is open
        self.family.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.family.setMinimumContentsLength(16)
        self.alive = QCheckBox("Live only")
        self.alive.setChecked(True)
        self.count = QLabel("")
        first = QHBoxLayout()
        first.addWidget(self.search, 1)
        first.addWidget(self.count)
        rows.addLayout(first)
        rows.addLayout(row)
        second = QHBoxLayout()  # two short rows: one long row widened the pane at large type
        rows.addLayout(second)
        for line, text, w in ((row, "Freq %", self.min_freq), (row, "to", self.max_freq),
                              (second, "Detection >=", self.min_score)):
            line.addWidget(QLabel(text))
            line.addWidget(w)
        second.addWidget(self.family)
        second.addWidget(self.alive)
        row.addStretch(1)
        second.addStretch(1)
        # Typing coalesces: one filter step per pause of 60 ms, not one per key.
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(60)
        self.timer.timeout.connect(self.apply)
        self.search.textChanged.connect(lambda _: self.timer.start())
        for spin in (self.min_freq, self.max_freq, self.min_score):
            spin.valueChanged.connect(lambda _: self.timer.start())
        self.alive.toggled.connect(lambda _: self.apply())
        self.family.currentIndexChanged.connect(lambda _: self.apply())

    def _spin(self, tip: str, top: float, decimals: int, value: float = 0.0) -> QDoubleSpinBox:
        spin = QDoubleSpinBox(decimals=decimals, minimum=0.0, maximum=top, value=value)
        spin.setToolTip(tip)
        spin.setSingleStep(10 ** -(decimals - 1) if decimals > 1 else 0.1)
        return spin

    def suggest(self, store: FeatureStore | None) -> None:
        """A placeholder naming words that are in this analysis's labels, and its families."""
        self.set_families(store)
        words = common_label_words(store.column("label")) if store is not None else []
        example = f" (e.g. {', '.join(words)})" if words else ""
        self.search.setPlaceholderText(f"Search labels as you type{example}")

    def set_families(self, store: FeatureStore | None) -> None:
        """The family choices of this analysis, with their counts (the choice kept if it is
        still there)."""
        keep = self.family.currentData() or ""
        self.family.blockSignals(True)
        self.family.clear()
        self.family.addItem("All families", "")
        for name, count in (store.family_counts() if store is not None else {}).items():
            self.family.addItem(f"{name} ({count:,})", name)
        found = self.family.findData(keep)
        self.family.setCurrentIndex(max(found, 0))
        self.family.blockSignals(False)

    def apply(self) -> None:
        m = self.model
        m.family = str(self.family.currentData() or "")
        lo, hi = self.min_freq.value() / 100, self.max_freq.value() / 100
        m.ranges = {"frequency": (lo or None, hi if hi < 1 else None)}
        if self.min_score.value() > 0:
            m.ranges["score"] = (self.min_score.value(), None)
        m.search = self.search.text().strip()
        m.alive_only = self.alive.isChecked()
        m.refilter()
        total = m.store.n if m.store is not None else 0
        if m.rowCount() == 0 and total:
            why = (f"no label contains \u201c{m.search}\u201d" if m.search
                   else "no feature passes these filters")
            self.count.setText(f"0 of {total:,}: {why}")
        else:
            self.count.setText(f"{m.rowCount():,} of {total:,}")
        self.changed.emit()
