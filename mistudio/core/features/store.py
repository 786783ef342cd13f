"""The feature table as the browser reads it: numeric columns in one Arrow file, labels in SQLite.

Numbers never change after an analysis, so they live in ``features.arrow`` (Arrow IPC,
memory-mapped: opening 100,000 features reads no data until a column is touched). Labels are
edited by people and written by explainers while the table is open, so they live in
``labels.sqlite`` with an FTS5 index for search. Filtering and sorting are numpy permutations
over the columns, the form a ``QAbstractTableModel`` wants (``benchmarks/browse.py`` times them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from mistudio.core.features.label_db import LABEL_COLUMNS, LABELS_FILE, journal_human, labels_db
from mistudio.core.features.plugin_columns import PLUGIN_COLUMNS_KEY
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError, NotFoundError
from mistudio.core.store.files import atomic_write, write_npy_atomic
from mistudio.core.store.workspace import Workspace

TABLE_FILE = "features.arrow"
SCORES_FILE = "scores.npy"
"""A copy of every feature's score (NaN: none), rewritten with each change of labels: loading
100k scores from SQLite costs ~110 ms of Python row conversion, this ~1 ms."""
SORT_COLUMNS = ("feature", "frequency", "max_activation", "mean_activation", "score", "label",
                "family", "fuzzing")
SELECT_LABELS = ("SELECT feature, label, source, scorer, score, status, detail, family, "
                 "detection, fuzzing, formula FROM labels")



class Label(NamedTuple):
    """A feature's description and how good it is."""

    feature: int
    label: str
    source: str
    """concept, pattern, llm:MODEL, endpoint:MODEL, plugin:NAME or human."""
    scorer: str | None
    score: float | None
    """Balanced accuracy on held-out activating and non-activating contexts."""
    status: str
    """ok, or failed: the explainer wrote nothing usable (the label says so, nothing invented)."""
    detail: str | None
    family: str | None = None
    """The family of concepts the label belongs to (quotes, negation, names, ...)."""
    detection: float | None = None
    """Held-out detection balanced accuracy: does the label tell windows where the feature fires
    from windows where it is silent (:mod:`mistudio.core.features.contexts`)."""
    fuzzing: float | None = None
    """Held-out fuzzing balanced accuracy: does it tell the tokens the feature fires on from
    decoys in the same windows."""
    formula: str | None = None
    """A rule label's formula (JSON, :class:`mistudio.core.features.formula.Formula`)."""


def human_label(feature: int, text: str) -> Label:
    """A person's label for ``feature``: its words, stripped; an empty one is refused (it would
    read as a feature nobody has described, yet hide the one the explainer gave)."""
    words = " ".join(text.split())
    if not words:
        raise InvalidInputError(f"The label for feature {feature} is empty.",
                                "Write a few words that describe what the feature responds to.")
    return Label(int(feature), words, "human", None, None, "ok", None)


def write_table(folder: Path, columns: dict[str, np.ndarray],
                plugin_owners: dict[str, str] | None = None) -> None:
    """Write the numeric columns (1-D arrays, or 2-D ones stored as fixed-size lists);
    ``plugin_owners``: which plugin wrote which column (kept in the schema's metadata)."""
    arrays, names = [], []
    for name, col in columns.items():
        col = np.asarray(col)
        if col.ndim == 1:
            arrays.append(pa.array(col))
        else:
            flat = pa.array(np.ascontiguousarray(col).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, col.shape[1]))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(
        {PLUGIN_COLUMNS_KEY: json.dumps(plugin_owners or {})})
    with atomic_write(folder / TABLE_FILE) as fh, \
            pa.ipc.new_file(pa.PythonFile(fh, mode="w"), table.schema) as writer:
        writer.write_table(table)
    with labels_db(folder, write=True):
        pass  # create the labels database beside it


class FeatureStore:
    """An analysis's feature table: columns as numpy arrays, labels, filters and sorts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            source = pa.memory_map(str(folder / TABLE_FILE), "r")
            self._table = pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid) as err:
            raise CorruptedError(f"The feature table in {folder} cannot be read ({err}).",
                                 "«do:analyze» again.") from err
        self.n = self._table.num_rows
        self._cache: dict[str, np.ndarray] = {}
        self._labels: np.ndarray | None = None
        self._families: np.ndarray | None = None
        self._fuzzing: np.ndarray | None = None
        self._scores: np.ndarray | None = None
        self._rank: np.ndarray | None = None

    @property
    def columns(self) -> list[str]:
        return list(self._table.column_names)

    @property
    def plugin_columns(self) -> dict[str, str]:
        """Columns that installed plugins' analyses added, and the plugin of each."""
        meta = self._table.schema.metadata or {}
        return json.loads(meta.get(PLUGIN_COLUMNS_KEY, b"{}"))

    def column(self, name: str) -> np.ndarray:
        """A numeric column as numpy (zero-copy for 1-D columns); 2-D for list columns."""
        if name == "label":
            self._load_labels()
            return self._labels  # type: ignore[return-value]
        if name in ("family", "fuzzing"):
            self._load_labels()
            return self._families if name == "family" else self._fuzzing  # type: ignore[return-value]
        if name == "score":
            self._load_scores()
            return self._scores  # type: ignore[return-value]
        if name not in self._cache:
            if name not in self._table.column_names:
                raise InvalidInputError(f"The feature table has no column {name!r}.",
                                        f"It has: {', '.join(self.columns)}.")
            col = self._table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                width = col.type.list_size
                self._cache[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            else:
                self._cache[name] = col.to_numpy(zero_copy_only=False)
        return self._cache[name]

    # -- labels -----------------------------------------------------------------------------
    def _load_labels(self) -> None:
        if self._labels is not None:
            return
        labels = np.full(self.n, "", dtype=object)
        families = np.full(self.n, "", dtype=object)
        scores = np.full(self.n, np.nan, dtype=np.float32)
        fuzzing = np.full(self.n, np.nan, dtype=np.float32)
        with labels_db(self.folder) as con:
            rows = con.execute("SELECT feature, label, score, family, fuzzing FROM labels"
                               ).fetchall()
        if rows:
            feats, texts, values, fams, fuzz = zip(*rows, strict=True)  # columns, no loop
            idx = np.array(feats, dtype=np.int64)
            labels[idx] = texts
            families[idx] = [f or "" for f in fams]
            scores[idx] = np.array(values, dtype=np.float32)  # None -> nan
            fuzzing[idx] = np.array(fuzz, dtype=np.float32)
        self._labels, self._families, self._fuzzing = labels, families, fuzzing
        if self._scores is None:
            self._scores = scores

    def _load_scores(self) -> None:
        if self._scores is not None:
            return
        cached = self.folder / SCORES_FILE
        if cached.is_file() and cached.stat().st_mtime >= self._labels_mtime():
            scores = np.load(cached)
            if scores.shape == (self.n,):
                self._scores = scores
                return
        self._scores = self._scores_from_db()
        try:
            self._write_scores()
        except OSError:
            pass  # a full disk or a read-only workspace: read from the labels again next time

    def _labels_mtime(self) -> float:
        return max((p.stat().st_mtime for p in (self.folder / LABELS_FILE,
                                                self.folder / f"{LABELS_FILE}-wal")
                    if p.exists()), default=0.0)

    def _scores_from_db(self) -> np.ndarray:
        scores = np.full(self.n, np.nan, dtype=np.float32)
        with labels_db(self.folder) as con:
            rows = con.execute("SELECT feature, score FROM labels WHERE score IS NOT NULL"
                               ).fetchall()
        if rows:
            feats, values = zip(*rows, strict=True)
            scores[np.array(feats, dtype=np.int64)] = np.array(values, dtype=np.float32)
        return scores

    def _write_scores(self) -> None:
        write_npy_atomic(self.folder / SCORES_FILE, self._scores)

    def all_labels(self) -> dict[int, Label]:
        """Every stored label in one query (labelling many features reads them once)."""
        with labels_db(self.folder) as con:
            rows = con.execute(SELECT_LABELS).fetchall()
        return {r[0]: Label(*r) for r in rows}

    def labels_for(self, features: Sequence[int]) -> dict[int, Label]:
        """Labels of a few features (a page of the table) without loading them all."""
        ids = [int(f) for f in features]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with labels_db(self.folder) as con:
            rows = con.execute(f"{SELECT_LABELS} WHERE feature IN ({marks})", ids).fetchall()
        return {r[0]: Label(*r) for r in rows}

    def _label_rank(self) -> np.ndarray:
        """Each feature's position in case-insensitive label order (unlabelled first),
        from SQLite's sort, kept until labels change."""
        if self._rank is None:
            with labels_db(self.folder) as con:
                ordered = np.array([r[0] for r in con.execute(
                    "SELECT feature FROM labels ORDER BY label COLLATE NOCASE, feature")],
                    dtype=np.int64)
            rank = np.zeros(self.n, dtype=np.int64)  # unlabelled: rank 0, before every label
            rank[ordered] = np.arange(1, len(ordered) + 1)
            self._rank = rank
        return self._rank

    def label(self, feature: int) -> Label | None:
        self.check_index(feature)
        with labels_db(self.folder) as con:
            row = con.execute(f"{SELECT_LABELS} WHERE feature = ?", (int(feature),)).fetchone()
        return Label(*row) if row else None

    def set_labels(self, labels: Sequence[Label]) -> None:
        """Insert or replace labels (one transaction), and refresh the in-memory columns."""
        now = time.time()
        cached = self.folder / SCORES_FILE
        cache_valid = cached.is_file() and cached.stat().st_mtime >= self._labels_mtime()
        rows = [(int(lb.feature), lb.label, lb.source, lb.scorer, lb.score, lb.status,
                 lb.detail, now, lb.family, lb.detection, lb.fuzzing, lb.formula)
                for lb in labels]
        with labels_db(self.folder, write=True) as con:
            con.executemany(
                f"INSERT INTO labels({', '.join(LABEL_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(LABEL_COLUMNS))}) ON CONFLICT(feature) DO UPDATE SET "
                + ", ".join(f"{c}=excluded.{c}" for c in LABEL_COLUMNS[1:]), rows)
        journal_human(self.folder, rows)
        self._rank = None
        # keep the scores file current: patch it if it was current before this write
        scores = np.load(cached) if cache_valid else None
        if scores is None or scores.shape != (self.n,):
            self._scores = self._scores_from_db()
        else:
            for lb in labels:
                scores[lb.feature] = np.nan if lb.score is None else lb.score
            self._scores = scores
        self._write_scores()
        for lb in labels:
            if self._labels is not None:
                self._labels[lb.feature] = lb.label
            if self._families is not None:
                self._families[lb.feature] = lb.family or ""
            if self._fuzzing is not None:
                self._fuzzing[lb.feature] = np.nan if lb.fuzzing is None else lb.fuzzing

    def labelled(self) -> np.ndarray:
        """Indices of features that have a label (any status)."""
        with labels_db(self.folder) as con:
            return np.array([r[0] for r in con.execute("SELECT feature FROM labels")], np.int64)

    def forget_labels(self) -> None:
        """Labels were written by another process (a label job): read them again when next
        asked."""
        self._labels = self._families = self._fuzzing = self._scores = self._rank = None

    # families are asked of SQLite: loading every label to count them took ~200 ms at 100k
    def family_counts(self) -> dict[str, int]:
        """How many labelled features each family has, largest first."""
        with labels_db(self.folder) as con:
            rows = con.execute("SELECT family, COUNT(*) AS n FROM labels WHERE family != '' "
                               "GROUP BY family ORDER BY n DESC, family").fetchall()
        return {str(f): int(n) for f, n in rows}

    def family_members(self, family: str) -> np.ndarray:
        """The features labelled in ``family``, ascending."""
        with labels_db(self.folder) as con:
            rows = con.execute("SELECT feature FROM labels WHERE family = ? ORDER BY feature",
                               (family,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    # -- browsing ---------------------------------------------------------------------------
    def check_index(self, feature: int) -> None:
        if not 0 <= int(feature) < self.n:
            raise InvalidInputError(f"Feature {feature} is out of range: this SAE has "
                                    f"{self.n:,} features (0 to {self.n - 1:,}).",
                                    "Pick an index in that range.")

    def search(self, text: str) -> np.ndarray:
        """Features whose label matches ``text`` (FTS5 prefix match on every word), ascending."""
        words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
        if not words:
            return np.arange(self.n)
        query = " ".join(f'"{w}"*' for w in words)
        with labels_db(self.folder) as con:
            hits = con.execute("SELECT rowid FROM labels_fts WHERE labels_fts MATCH ? "
                               "ORDER BY rowid", (query,)).fetchall()
            # a family's name finds its features too ("negation" finds "not" and "never")
            wanted = " ".join(words)
            if len(wanted) >= 3:
                hits += con.execute("SELECT feature FROM labels WHERE family LIKE ?",
                                    (f"%{wanted}%",)).fetchall()
        return np.unique(np.array([h[0] for h in hits], dtype=np.int64))

    def select(self, ranges: dict[str, tuple[float | None, float | None]] | None = None,
               search: str | None = None, alive_only: bool = False,
               subset: np.ndarray | None = None, family: str | None = None) -> np.ndarray:
        """Indices of the features inside every (low, high) range, of ``family`` and matching
        ``search``."""
        mask = np.ones(self.n, dtype=bool)
        if alive_only:
            mask &= ~self.column("dead")
        if family:
            mask &= np.isin(np.arange(self.n), self.family_members(family))
        for name, (lo, hi) in (ranges or {}).items():
            col = self.column(name)
            if lo is not None:
                mask &= col >= lo
            if hi is not None:
                mask &= col <= hi
        idx = np.flatnonzero(mask) if subset is None else subset[mask[subset]]
        if search:
            idx = np.intersect1d(idx, self.search(search), assume_unique=True)
        return idx

    def order(self, idx: np.ndarray, by: str = "frequency", descending: bool = True) -> np.ndarray:
        """``idx`` sorted by a column (labels alphabetically); unlabelled and unscored features
        last, either way."""
        if by not in SORT_COLUMNS and by not in self.plugin_columns:
            raise InvalidInputError(f"Cannot sort by {by!r}.", "Use one of "
                                    f"{', '.join([*SORT_COLUMNS, *self.plugin_columns])}.")
        if by == "family":
            fams = self.column("family")[idx].astype(str)
            order = np.argsort(fams, kind="stable")
            order = order[::-1] if descending else order
            named = fams[order] != ""
            return idx[np.concatenate([order[named], order[~named]])]
        if by == "label":
            rank = self._label_rank()[idx]
            order = np.argsort(rank, kind="stable")
            order = order[::-1] if descending else order
            labelled = rank[order] > 0
            return idx[np.concatenate([order[labelled], order[~labelled]])]
        values = self.column(by)[idx].astype(np.float64)
        values = np.where(np.isnan(values), -np.inf if descending else np.inf, values)
        order = np.argsort(-values if descending else values, kind="stable")
        return idx[order]


def open_features(ws: Workspace, name: str) -> FeatureStore:
    try:
        art = ws.catalog.get("features", name)
    except NotFoundError as err:
        raise NotFoundError(f"No analysis named {name!r}.",
                            f"«do:analyze={name}» first (analyses are named after "
                            "their SAE).") from err
    if art.status != "complete":
        raise InvalidInputError(f"The analysis {name!r} is incomplete.",
                                f"«do:analyze={name}» again.")
    return FeatureStore(Path(art.path))


def describe_columns(store: FeatureStore, feature: int) -> dict[str, Any]:
    """One feature's numbers as plain Python values."""
    store.check_index(feature)
    out: dict[str, Any] = {}
    for name in store.columns:
        v = store.column(name)[feature]
        out[name] = v.tolist() if isinstance(v, np.ndarray) else v.item()
    return out
