"""File > Pretrained SAEs: the published releases miStudio knows, searchable by model and words,
pulled into the workspace with progress and cancel.

The pull runs in a child process (a job of the window's job center): a download
of hundreds of megabytes cannot be interrupted from inside, but a child can be stopped, so Cancel
and closing the window never wait for it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import RowsModel, show_error
from mistudio.gui.jobs import AppJobs

AUTO = "the model it was trained on"


class PretrainedDialog(QDialog):
    """Browse and pull published SAEs."""

    pulled = Signal(str)
    """The workspace name of an SAE pulled successfully."""

    def __init__(self, ws: Workspace, parent: QWidget | None = None,
                 jobs: AppJobs | None = None) -> None:
        from mistudio.core.sae.releases import list_saes

        super().__init__(parent)
        self.ws = ws
        jobs = jobs or AppJobs(ws.root, self)
        self.setWindowTitle("Pretrained SAEs")
        self.resize(900, 560)
        self.all = list_saes()
        layout = QVBoxLayout(self)
        intro = QLabel("Published SAEs from Gemma Scope, Llama Scope, GPT-2 small res-jb and "
                       "Pythia-70M. Pulling downloads the files into the Hugging Face cache "
                       "(only with Settings > Allow online downloads) or finds them there, "
                       "then adds the SAE to this workspace for the model it belongs to.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.model_filter = QComboBox()
        self.model_filter.addItem("All models", "")
        for m in sorted({s.model for s in self.all}):
            self.model_filter.addItem(m, m)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search: release, id, hook point (e.g. layer_12 16k)")
        row.addWidget(QLabel("Model"))
        row.addWidget(self.model_filter)
        row.addWidget(self.search, 1)
        layout.addLayout(row)
        self.model = RowsModel(("Release", "SAE id", "Hook point", "Latents", "L0", "Model"))
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        layout.addWidget(self.table, 1)
        bottom = QHBoxLayout()
        self.attach = QComboBox()
        bottom.addWidget(QLabel("Attach to"))
        bottom.addWidget(self.attach)
        self.pull_btn = QPushButton("Pull")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        bottom.addStretch(1)
        bottom.addWidget(self.pull_btn)
        bottom.addWidget(self.cancel_btn)
        layout.addLayout(bottom)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.runner = jobs.runner("pretrained", self)
        self.runner.progress.connect(lambda f: self.progress.setValue(int(f * 1000)))
        self.runner.status.connect(self.status.setText)
        self.runner.finished.connect(self._done)
        self.runner.failed.connect(self._failed)
        self.runner.cancelled.connect(lambda: self.status.setText("Cancelled; files already "
                                                                  "downloaded stay in the cache."))
        self.runner.running_changed.connect(self._running)
        self.model_filter.currentIndexChanged.connect(self.refilter)
        self.search.textChanged.connect(self.refilter)
        self.pull_btn.clicked.connect(self.pull)
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self.shown: list[Any] = []
        self.refilter()

    def refilter(self) -> None:
        from mistudio.core.sae.releases import list_saes

        self.shown = list_saes(self.model_filter.currentData() or None, None,
                               self.search.text().strip() or None)
        self.model.set_rows([[s.release, s.sae_id, s.hook, s.d_sae, s.l0, s.model]
                             for s in self.shown])
        self.table.resizeColumnsToContents()
        self.attach.clear()
        self.attach.addItem(AUTO, None)
        for art in self.ws.catalog.list("model"):
            self.attach.addItem(art.name, art.name)

    def selected(self) -> Any:
        rows = self.table.selectionModel().selectedRows()
        return self.shown[rows[0].row()] if rows else None

    def pull(self) -> None:
        from mistudio.core.runtime.online import is_online

        sae = self.selected()
        if sae is None:
            show_error(self, "Select an SAE in the table first.")
            return
        self.progress.setValue(0)
        self.runner.start("pull_sae", sae.release, sae.sae_id, None, self.attach.currentData(),
                          is_online(), title=f"Pulling {sae.release} {sae.sae_id}")

    def _running(self, running: bool) -> None:
        self.pull_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def _done(self, manifest: Any) -> None:
        s = manifest.summary
        self.progress.setValue(1000)
        self.status.setText(f"Added SAE {manifest.name} ({s.architecture}, {s.d_sae:,} latents "
                            f"at {s.hook} of {manifest.provenance.model}).")
        self.pulled.emit(manifest.name)

    def _failed(self, message: str, details: str) -> None:
        self.status.setText(message)
        show_error(self, message, details)

    def done(self, result: int) -> None:
        """Closing the dialog stops a pull in progress (its partial download is kept for the
        next try; the window's job center waits for the job at quit)."""
        if self.runner.running:
            self.runner.cancel()
        super().done(result)
