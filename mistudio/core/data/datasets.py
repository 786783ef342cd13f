"""Text datasets: read from a source (:mod:`.sources`), keep the text column, store as Arrow in
``raw/NAME/data.arrow``. Everything is read in batches, so a large source never has to fit in
memory.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from mistudio.core.data.sources import (
    BUILTIN_PYDOC,
    DatasetConfig,
    SourceReader,
    choose_text_column,
    decoded,
    open_source,
)
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.manifests import DatasetManifest, DatasetProvenance, DatasetSummary, made_now
from mistudio.core.store.workspace import Workspace

DATA_FILE = "data.arrow"

__all__ = ["BUILTIN_PYDOC", "DATA_FILE", "DatasetConfig", "add_dataset", "ensure_builtin_dataset",
           "open_dataset"]


def add_dataset(ws: Workspace, name: str, cfg: DatasetConfig,
                task: TaskState | None = None, overwrite: bool = False) -> DatasetManifest:
    """Ingest a source into ``raw/NAME``; returns the manifest. Cancel leaves nothing behind."""
    task = task or silent_task()
    with ws.build("dataset", name, "add-dataset", asdict(cfg), overwrite) as b:
        task.set_status(f"Opening {cfg.source}")
        reader = open_source(cfg)
        column = choose_text_column(reader.columns, cfg.text_column, cfg.source)
        summary = _write_texts(reader, column, cfg, b.folder / DATA_FILE, task)
        if summary.documents == 0:
            raise InvalidInputError(f"The source {cfg.source} has no non-empty text in column "
                                    f"{column!r}.", "Choose another «source» or «text_column».")
        b.manifest = DatasetManifest(
            name, config={**asdict(cfg), "text_column": column},
            provenance=DatasetProvenance(**made_now(), description=reader.description,
                                         columns=reader.columns),
            summary=summary)
    task.set_progress(1.0)
    return b.manifest


def _write_texts(reader: SourceReader, column: str, cfg: DatasetConfig, path: Path,
                 task: TaskState) -> DatasetSummary:
    """The non-empty texts of ``column`` into an Arrow file, batch by batch."""
    schema = pa.schema([pa.field("text", pa.large_string())])
    total = cfg.max_samples or reader.size_hint
    n_docs = n_chars = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        for batch in decoded(reader.batches, cfg.source):
            check_cancelled(task)
            texts = [t for t in batch[column] if isinstance(t, str) and t.strip()]
            if cfg.max_samples is not None:
                texts = texts[: cfg.max_samples - n_docs]
            if texts:
                w.write_batch(pa.record_batch([pa.array(texts, pa.large_string())], schema))
            n_docs += len(texts)
            n_chars += sum(len(t) for t in texts)
            task.set_status(f"Read {n_docs:,} documents")
            if total:
                task.set_progress(min(n_docs / total, 1.0))
            if cfg.max_samples is not None and n_docs >= cfg.max_samples:
                break
    return DatasetSummary(n_docs, n_chars)


def open_dataset(ws: Workspace, name: str) -> pa.Table:
    """The dataset's texts as a memory-mapped Arrow table with one column, ``text``."""
    art = ws.catalog.get("dataset", name)
    path = Path(art.path) / DATA_FILE
    if not path.is_file():
        raise CorruptedError(f"The data file of dataset {name!r} is missing ({path}).",
                             f"«do:add_dataset={name}» again («overwrite»).")
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def ensure_builtin_dataset(ws: Workspace, name: str = "pydoc",
                           task: TaskState | None = None) -> str:
    """Add the built-in corpus under ``name`` unless it is there already."""
    if ws.catalog.find("dataset", name) is None:
        add_dataset(ws, name, DatasetConfig(source=BUILTIN_PYDOC), task)
    return name
