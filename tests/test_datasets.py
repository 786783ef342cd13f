"""Dataset sources, text-column choice and the stored form."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mistudio.core.data.datasets import DatasetConfig, add_dataset, open_dataset
from mistudio.core.runtime.errors import Cancelled, InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import CallbackTask, CancelToken
from mistudio.core.store.workspace import Workspace

DOCS = ["First document.", "Second one, longer.", "Third!"]


def _write_sources(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    out = {}
    out["txt"] = folder / "corpus.txt"
    out["txt"].write_text("\n\n".join(DOCS) + "\n")
    out["jsonl"] = folder / "c.jsonl"
    out["jsonl"].write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(DOCS)))
    out["json"] = folder / "c.json"
    out["json"].write_text(json.dumps([{"body": t, "n": 1} for t in DOCS]))
    out["csv"] = folder / "c.csv"
    out["csv"].write_text("id,content\n" + "\n".join(f'{i},"{t}"' for i, t in enumerate(DOCS)))
    out["parquet"] = folder / "c.parquet"
    pq.write_table(pa.table({"text": DOCS, "label": [0, 1, 0]}), out["parquet"])
    return out


@pytest.mark.parametrize("kind", ["txt", "jsonl", "json", "csv", "parquet"])
def test_local_files(ws: Workspace, tmp_path: Path, kind: str) -> None:
    path = _write_sources(tmp_path / "src")[kind]
    m = add_dataset(ws, kind, DatasetConfig(str(path)))
    assert m.summary.documents == 3
    assert open_dataset(ws, kind).column("text").to_pylist() == DOCS
    assert ws.catalog.get("dataset", kind).status == "complete"


def test_folder_of_text_files_is_one_document_per_file(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "txts"
    folder.mkdir()
    for i, t in enumerate(DOCS):
        (folder / f"{i}.txt").write_text(t + "\n\nsame document")
    m = add_dataset(ws, "folder", DatasetConfig(str(folder)))
    assert m.summary.documents == 3


def test_saved_dataset_with_splits(ws: Workspace, tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS}),
                               "test": datasets.Dataset.from_dict({"text": DOCS[:1]})})
    dd.save_to_disk(str(tmp_path / "saved"))
    m = add_dataset(ws, "saved", DatasetConfig(str(tmp_path / "saved"), split="test"))
    assert m.summary.documents == 1
    with pytest.raises(NotFoundError, match="no split 'dev'.*Choose split"):
        add_dataset(ws, "saved2", DatasetConfig(str(tmp_path / "saved"), split="dev"))


def test_builtin_corpus_and_max_samples(ws: Workspace) -> None:
    m = add_dataset(ws, "pydoc", DatasetConfig("builtin:pydoc"))
    assert m.summary.documents >= 70 and m.summary.characters > 300_000
    m = add_dataset(ws, "few", DatasetConfig("builtin:pydoc", max_samples=5))
    assert m.summary.documents == 5 and len(open_dataset(ws, "few")) == 5


def test_ambiguous_and_missing_text_columns(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text(json.dumps({"title": "a", "body": "b"}) + "\n")
    with pytest.raises(InvalidInputError, match="several text columns: title, body.*text column"):
        add_dataset(ws, "two", DatasetConfig(str(path)))
    with pytest.raises(InvalidInputError, match=r"no column 'txt' \(columns: title \(string\)"):
        add_dataset(ws, "two", DatasetConfig(str(path), text_column="txt"))
    assert add_dataset(ws, "two", DatasetConfig(str(path), text_column="body")).summary \
        .documents == 1


def test_empty_dataset_is_refused_and_leaves_nothing(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"text": "   "}) + "\n")
    with pytest.raises(InvalidInputError, match="no non-empty text"):
        add_dataset(ws, "empty", DatasetConfig(str(path)))
    assert list((ws.root / "raw").iterdir()) == []
    assert ws.catalog.find("dataset", "empty") is None


def test_missing_file_and_unknown_builtin(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="neither an existing file"):
        add_dataset(ws, "x", DatasetConfig("/no/such/file.txt"))
    with pytest.raises(NotFoundError, match="Unknown built-in corpus"):
        add_dataset(ws, "x", DatasetConfig("builtin:wiki"))


def test_hub_dataset_offline_says_how_to_go_online(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="not in the local cache.*online"):
        add_dataset(ws, "x", DatasetConfig("hf:someone/not-cached-anywhere"))


def test_bad_jsonl_line_is_named(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(InvalidInputError, match="line 2 is not valid JSON"):
        add_dataset(ws, "bad", DatasetConfig(str(path)))


def test_existing_name_needs_overwrite_and_keeps_the_old_one(ws: Workspace, tmp_path: Path) -> None:
    add_dataset(ws, "d", DatasetConfig("builtin:pydoc", max_samples=2))
    with pytest.raises(InvalidInputError, match="already exists.*overwrite"):
        add_dataset(ws, "d", DatasetConfig("builtin:pydoc", max_samples=3))
    assert len(open_dataset(ws, "d")) == 2
    add_dataset(ws, "d", DatasetConfig("builtin:pydoc", max_samples=3), overwrite=True)
    assert len(open_dataset(ws, "d")) == 3


def test_cancel_leaves_the_workspace_as_it_was(ws: Workspace, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(5000)))
    token = CancelToken()
    task = CallbackTask(on_status=lambda s: token.cancel() if "1,000" in s else None, cancel=token)
    with pytest.raises(Cancelled):
        add_dataset(ws, "big", DatasetConfig(str(big)), task)
    assert list((ws.root / "raw").iterdir()) == []
    assert ws.catalog.find("dataset", "big") is None
    assert ws.catalog.jobs()[0].status == "cancelled"


def test_invalid_config_values() -> None:
    with pytest.raises(InvalidInputError, match="(?i)max samples must be positive"):
        DatasetConfig("builtin:pydoc", max_samples=0)


def test_text_files_in_other_encodings_are_read_or_refused_clearly(ws: Workspace,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes("Café crème brûlée.\n\n“Quoted” text.\n"
                                         .encode("cp1252"))
    (tmp_path / "u16.txt").write_text("Hello in UTF-16.\n\nSecond.\n", encoding="utf-16")
    (tmp_path / "u16be.txt").write_bytes("No BOM here.\n".encode("utf-16-be"))
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "mixed.txt").write_bytes(b"fine start " * 10_000 + b"\xff\xfe\xfa broken\n")
    add_dataset(ws, "latin", DatasetConfig(str(tmp_path / "latin.txt")))
    assert open_dataset(ws, "latin").column("text").to_pylist() == ["Café crème brûlée.",
                                                                    "“Quoted” text."]
    add_dataset(ws, "u16", DatasetConfig(str(tmp_path / "u16.txt")))
    assert open_dataset(ws, "u16").column("text").to_pylist() == ["Hello in UTF-16.", "Second."]
    add_dataset(ws, "u16be", DatasetConfig(str(tmp_path / "u16be.txt")))
    assert open_dataset(ws, "u16be").column("text").to_pylist() == ["No BOM here."]
    with pytest.raises(InvalidInputError, match="binary file"):
        add_dataset(ws, "bin", DatasetConfig(str(tmp_path / "bin.txt")))
    with pytest.raises(InvalidInputError, match="not valid utf-8 text throughout"):
        add_dataset(ws, "mixed", DatasetConfig(str(tmp_path / "mixed.txt")))
    assert ws.catalog.find("dataset", "mixed") is None
    assert not (ws.root / "raw" / "mixed").exists() and not (ws.root / "raw" / ".mixed.partial"
                                                             ).exists()


@pytest.mark.parametrize("order", ["utf8-first", "latin1-first", "latin1-first-long"])
def test_a_file_in_two_encodings_is_refused(ws: Workspace, tmp_path: Path, order: str) -> None:
    line = "ünïcödé\n"
    utf8, latin1 = (line * 200).encode("utf-8"), (line * 200).encode("latin-1")
    if order == "latin1-first-long":  # the UTF-8 part starts far past what detection samples
        latin1 = (line * 20_000).encode("latin-1")
    data = utf8 + latin1 if order == "utf8-first" else latin1 + utf8
    (tmp_path / "two.txt").write_bytes(data)
    with pytest.raises(InvalidInputError, match="mixes encodings|not valid utf-8") as err:
        add_dataset(ws, "two", DatasetConfig(str(tmp_path / "two.txt")))
    assert "UTF-8" in err.value.fix
    assert ws.catalog.find("dataset", "two") is None
    assert not (ws.root / "raw" / "two").exists()
