"""The Datasets panel, and the base of the artifact panels: what the workspace holds, and the
jobs that add to it.

Every job runs through the panel's runner of the window's job center (:mod:`.jobs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTextBrowser,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import FittedTable, RowsModel, name_combo, refill_combo, show_error
from mistudio.gui.jobs import AppJobs


class ArtifactPanel(QWidget):
    """A table of one kind of artifact plus a column of actions."""

    kind = ""
    headers: tuple[str, ...] = ()

    def __init__(self, ws: Workspace, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        self.jobs = jobs or AppJobs(ws.root, self)
        self.runner = self.jobs.runner(self.kind, self)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.runner.finished.connect(lambda _: self.refresh())
        self.runner.cancelled.connect(self.refresh)
        self.layout_ = QHBoxLayout(self)
        self.model = RowsModel(self.headers)
        self.table = FittedTable()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.main = QSplitter(Qt.Orientation.Vertical)  # subclasses add views below the table
        self.empty = QWidget()  # what to do first, while the table is empty
        empty = QVBoxLayout(self.empty)
        self.empty_text = QLabel("")
        self.empty_text.setWordWrap(True)
        self.empty_button = QPushButton("")
        empty.addWidget(self.empty_text)
        empty.addWidget(self.empty_button, 0, Qt.AlignmentFlag.AlignLeft)
        empty.addStretch(1)
        self.empty.hide()
        self.main.addWidget(self.empty)
        self.main.addWidget(self.table)
        self.layout_.addWidget(self.main, 3)
        self.side = QVBoxLayout()
        self.layout_.addLayout(self.side, 1)

    def rows(self) -> list[list[Any]]:
        raise NotImplementedError

    def set_empty_state(self, text: str, button: str, action: Any) -> None:
        """Shown instead of an empty table: the next step, and a button that takes it."""
        self.empty_text.setText(text)
        self.empty_button.setText(button)
        self.empty_button.clicked.connect(action)

    def refresh(self) -> None:
        chosen = [self.model.rows[i.row()][0] for i in self.table.selectionModel().selectedRows()]
        rows = self.rows()
        if self.empty_text.text():
            self.empty.setVisible(not rows)
            self.table.setVisible(bool(rows))
        if rows != self.model.rows:  # a reset clears the selection: only when something changed
            self.model.set_rows(rows)
            self.table.fit()
            names = [r[0] for r in rows]
            if chosen and chosen[0] in names:  # keep the user's row selected
                self.table.selectRow(names.index(chosen[0]))


class DatasetsPanel(ArtifactPanel):
    kind = "dataset"
    headers = ("Name", "Source", "Documents", "Characters", "Status")

    def __init__(self, ws: Workspace, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(ws, jobs, parent)
        add = QGroupBox("Add a dataset")
        a = QVBoxLayout(add)
        builtin = QPushButton("Built-in corpus (Python docs)")
        builtin.clicked.connect(self.add_builtin)
        files = QPushButton("A text file...")
        files.clicked.connect(self.add_files)
        folder = QPushButton("A folder of text files...")
        folder.clicked.connect(lambda: self.add_files(folder=True))
        other = QPushButton("Any source, with a preview...")
        other.clicked.connect(self.add_with_dialog)
        self.max_samples = QSpinBox(minimum=0, maximum=100_000_000, value=0, singleStep=1000)
        self.max_samples.setSpecialValueText("all documents")
        a.addWidget(builtin)
        a.addWidget(files)
        a.addWidget(folder)
        a.addWidget(other)
        row = QFormLayout()
        row.addRow("Max documents", self.max_samples)
        a.addLayout(row)
        self.side.addWidget(add)
        tok = QGroupBox("Tokenize the selected dataset")
        f = QFormLayout(tok)
        self.tok_model = name_combo()
        self.ctx = QSpinBox(minimum=16, maximum=8192, value=128, singleStep=64)
        self.bos = QCheckBox("Start each sequence with BOS")
        self.bos.setChecked(True)
        self.bos.setToolTip(
            "Models park attention on the first token and give it a huge activation norm. "
            "With the model's BOS token first, that token is BOS, which extraction leaves out. "
            "Models whose tokenizer has no BOS start with the text either way.")
        self.tokenize_btn = QPushButton("Tokenize")
        self.tokenize_btn.clicked.connect(self.tokenize)
        f.addRow("Model", self.tok_model)
        f.addRow("Context length", self.ctx)
        f.addRow(self.bos)
        f.addRow(self.tokenize_btn)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._can_tokenize())
        self.side.addWidget(tok)
        self.side.addStretch(1)
        self.set_empty_state("No datasets yet. Start with the built-in corpus (the Python "
                             "documentation, in every Python: no download), or add your own "
                             "text with the buttons on the right.", "Add the built-in corpus",
                             self.add_builtin)
        self.preview = TokenizedPreview(ws, self.jobs)
        self.main.addWidget(self.preview)
        self.main.setStretchFactor(1, 2)
        self.refresh()

    def refresh(self) -> None:
        super().refresh()
        if hasattr(self, "preview"):
            self.preview.refresh()
        if hasattr(self, "tokenize_btn"):
            self._can_tokenize()

    def _can_tokenize(self) -> None:
        """Tokenize only when it can do something: a dataset chosen, a model to tokenize with."""
        ready = bool(self.selected()) and self.tok_model.count() > 0
        self.tokenize_btn.setEnabled(ready)
        self.tokenize_btn.setToolTip("" if ready else "Select a dataset in the table (and "
                                     "register a model in the Models tab) first")

    def rows(self) -> list[list[Any]]:
        refill_combo(self.tok_model, [m.name for m in self.ws.catalog.list("model")])
        return [[a.name, a.config.get("source"), a.summary.documents,
                 a.summary.characters, a.status] for a in self.ws.catalog.list("dataset")]

    def selected(self) -> str | None:
        idx = self.table.selectionModel().selectedRows()
        return self.model.rows[idx[0].row()][0] if idx else None

    def add_builtin(self) -> None:
        self.runner.start("add_builtin_dataset", "pydoc")

    def add_files(self, folder: bool = False, path: str | None = None) -> None:
        from mistudio.core.data.datasets import DatasetConfig

        if path is None:
            path = (QFileDialog.getExistingDirectory(self, "Folder of documents")
                    if folder else QFileDialog.getOpenFileName(
                        self, "Dataset file", str(Path.home()),
                        "Text data (*.txt *.jsonl *.json *.csv *.parquet)")[0])
        if not path:
            return
        name = Path(path).stem.replace(" ", "-")
        cfg = DatasetConfig(path, max_samples=self.max_samples.value() or None)
        self.runner.start("add_dataset", name, cfg, title=f"Adding {name}")

    def add_with_dialog(self, dialog: Any = None) -> None:
        """The Add-dataset dialog (hub, saved datasets, text-column choice); ``dialog``:
        an already accepted one (tests)."""
        from mistudio.gui.dataset_dialog import AddDatasetDialog

        if dialog is None:
            dialog = AddDatasetDialog(self, self.jobs)
            if not dialog.exec():
                return
        name, cfg = dialog.name.text().strip(), dialog.config()
        self.runner.start("add_dataset", name, cfg, title=f"Adding {name}")

    def tokenize(self) -> None:
        from mistudio.core.data.tokenization import TokenizeConfig

        ds, model = self.selected(), self.tok_model.currentText()
        if not ds or not model:
            show_error(self, "Select a dataset in the table and a model to tokenize with.")
            return
        cfg = TokenizeConfig(ds, model, self.ctx.value(),
                             prepend_bos="auto" if self.bos.isChecked() else "no")
        self.runner.start("tokenize", cfg, title=f"Tokenizing {ds}")


class TokenizedPreview(QWidget):
    """A tokenized set's first sequences with token boundaries visible (alternating
    backgrounds, the id on hover), its document-length histogram and its top tokens."""

    def __init__(self, ws: Workspace, jobs: AppJobs, parent: QWidget | None = None) -> None:
        import pyqtgraph as pg

        super().__init__(parent)
        self.ws = ws
        layout = QHBoxLayout(self)
        left = QVBoxLayout()
        self.choice = name_combo()
        self.choice.currentTextChanged.connect(self.show_set)
        left.addWidget(self.choice)
        self.policy = QLabel("")
        self.policy.setTextFormat(Qt.TextFormat.PlainText)  # BOS is often "<s>": not a tag
        self.policy.setWordWrap(True)
        left.addWidget(self.policy)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
        self.text.highlighted.connect(self._hover)
        left.addWidget(self.text)
        layout.addLayout(left, 3)
        charts = pg.GraphicsLayoutWidget()
        self.lengths = charts.addPlot(row=0, col=0, title="Document length (tokens)")
        self.top = charts.addPlot(row=1, col=0, title="Most frequent tokens")
        for plot in (self.lengths, self.top):
            plot.setMouseEnabled(x=False, y=False)
            plot.getAxis("left").setWidth(48)
        layout.addWidget(charts, 2)
        self._shown = ""
        self.runner = jobs.runner("tokenized preview", self)
        self.runner.finished.connect(self._show)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))

    def refresh(self) -> None:
        current = self.choice.currentText()
        names = [a.name for a in self.ws.catalog.list("tokenized") if a.status == "complete"]
        self.setVisible(bool(names))  # no tokenized set: no empty charts under the hint
        self.choice.blockSignals(True)
        self.choice.clear()
        self.choice.addItems(names)
        self.choice.blockSignals(False)
        if names:
            self.choice.setCurrentText(current if current in names else names[0])
            if self.choice.currentText() != self._shown:  # a refresh re-reads nothing shown
                self.show_set(self.choice.currentText())

    def show_set(self, name: str) -> None:
        """Read and show a set (its stored preview; a set made before previews were stored
        gets one from a child process, since loading a tokenizer takes seconds)."""
        if not name or self.runner.running:
            return
        self._shown = name
        self.runner.start("preview_tokenized", name, title=f"Reading {name}")

    def _show(self, result: Any) -> None:
        import numpy as np
        import pyqtgraph as pg

        if result.html is None:
            self.runner.start("store_tokenized_preview", self._shown,
                              title=f"Reading {self._shown}")
            return
        self.text.setHtml(result.html)
        self.policy.setText(result.policy)
        stats = result.stats
        h = stats.doc_length_histogram
        self.lengths.clear()
        self.top.clear()
        if len(h.edges) > 1:
            edges = np.array(h.edges, dtype=float)
            self.lengths.addItem(pg.BarGraphItem(x=(edges[:-1] + edges[1:]) / 2,
                                                 height=h.counts,
                                                 width=float(edges[1] - edges[0]) * 0.9,
                                                 brush="#61afef"))
        top = stats.top_tokens[:12]
        if top:
            self.top.addItem(pg.BarGraphItem(x=np.arange(len(top)), height=[t.count for t in top],
                                             width=0.8, brush="#e06c75"))
            self.top.getAxis("bottom").setTicks([[(i, repr(t.token)[1:-1][:6])
                                                  for i, t in enumerate(top)]])

    def _hover(self, url: QUrl) -> None:
        from PySide6.QtGui import QCursor

        text = url.toString()
        if text.startswith("tok:"):
            QToolTip.showText(QCursor.pos(), f"token id {text[4:]}", self.text)
