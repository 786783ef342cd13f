"""The Add-dataset dialog: any source the core reads, a preview of its first rows, the text
column to use, and how many documents to take. Reading the preview runs in a worker (a hub
dataset is streamed, which takes a moment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from mistudio.gui.common import RowsModel, show_error
from mistudio.gui.jobs import AppJobs


class AddDatasetDialog(QDialog):
    def __init__(self, parent: QWidget, jobs: AppJobs | None = None) -> None:
        super().__init__(parent)
        jobs = jobs or parent.jobs  # type: ignore[attr-defined]
        self.setWindowTitle("Add a dataset")
        self.resize(760, 520)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.source = QLineEdit()
        self.source.setPlaceholderText("a file or folder, builtin:pydoc, or hf:OWNER/NAME "
                                       "(online mode)")
        pick = QHBoxLayout()
        pick.addWidget(self.source)
        for label, folder in (("File...", False), ("Folder...", True)):
            b = QPushButton(label)
            b.clicked.connect(lambda _=False, f=folder: self.browse(f))
            pick.addWidget(b)
        form.addRow("Source", pick)
        self.name = QLineEdit()
        self.hf_config = QLineEdit()
        self.hf_config.setPlaceholderText("Hugging Face configuration (optional)")
        self.split = QLineEdit("train")
        self.max_samples = QSpinBox(minimum=0, maximum=100_000_000, value=0, singleStep=1000)
        self.max_samples.setSpecialValueText("all documents")
        self.column = QComboBox()
        for label, w in (("Name", self.name), ("Configuration", self.hf_config),
                         ("Split", self.split), ("Max documents", self.max_samples),
                         ("Text column", self.column)):
            form.addRow(label, w)
        layout.addLayout(form)
        self.preview_btn = QPushButton("Preview")
        self.preview_btn.clicked.connect(self.preview)
        layout.addWidget(self.preview_btn)
        self.info = QLabel("")
        layout.addWidget(self.info)
        self.rows = RowsModel(())
        table = QTableView()
        table.setModel(self.rows)
        layout.addWidget(table)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.runner = jobs.runner("dataset preview", self)
        self.runner.finished.connect(self._previewed)
        self.runner.failed.connect(lambda m, d: show_error(self, m, d))

    def browse(self, folder: bool) -> None:
        path = (QFileDialog.getExistingDirectory(self, "Folder of documents") if folder else
                QFileDialog.getOpenFileName(self, "Dataset file", str(Path.home()),
                                            "Text data (*.txt *.jsonl *.json *.csv *.parquet)")[0])
        if path:
            self.source.setText(path)

    def config(self) -> Any:
        from mistudio.core.data.datasets import DatasetConfig

        return DatasetConfig(self.source.text().strip(), text_column=self.column.currentText()
                             or None, split=self.split.text().strip() or "train",
                             hf_config=self.hf_config.text().strip() or None,
                             max_samples=self.max_samples.value() or None)

    def preview(self) -> None:
        from mistudio.core.data.sources import DatasetConfig

        src = self.source.text().strip()
        if not src:
            show_error(self, "Choose a source first.")
            return
        if not self.name.text().strip():
            self.name.setText(Path(src.removeprefix("hf:")).stem.replace(" ", "-") or "dataset")
        cfg = DatasetConfig(src, split=self.split.text().strip() or "train",
                            hf_config=self.hf_config.text().strip() or None)
        self.info.setText("Reading...")
        self.runner.start("preview_source", cfg)

    def _previewed(self, result: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
        columns, rows = result
        text_cols = [c for c, t in columns.items() if t == "string"]
        self.column.clear()
        self.column.addItems(text_cols)
        if "text" in text_cols:
            self.column.setCurrentText("text")
        self.rows.headers = list(columns)
        self.rows.set_rows([[str(r.get(c, ""))[:200] for c in columns] for r in rows])
        self.info.setText(f"{len(columns)} columns; text columns: {', '.join(text_cols) or 'none'}")
