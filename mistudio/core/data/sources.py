"""Where dataset text comes from: each kind of source read in batches, with its text column.

Sources:

- ``builtin:pydoc``: CPython's own documentation (``pydoc_data.topics``), on every install;
- a local file: ``.txt`` (one document per blank-line block), ``.jsonl``/``.json``, ``.csv``,
  ``.parquet``; or a folder of ``.txt`` files (one document per file) or of one kind of data file;
- a folder written by ``datasets.Dataset.save_to_disk``;
- ``hf:ID`` (or a bare ``owner/name``): a Hugging Face dataset, streamed; needs online mode
  unless it is already in the local HF cache.

Everything is read in batches, so a large source never has to fit in memory.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.runtime.online import is_online, offline_hint

BUILTIN_PYDOC = "builtin:pydoc"
_BATCH = 1000
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class DatasetConfig:
    """How a dataset is ingested; stored in its manifest."""

    source: str
    """builtin:pydoc, a local path, a save_to_disk folder or hf:ID."""
    text_column: str | None = None
    """Column holding the text; None = auto-detect (the only string column, or 'text')."""
    split: str = "train"
    """Split of a Hugging Face or saved DatasetDict source."""
    hf_config: str | None = None
    """Configuration name of a Hugging Face dataset."""
    max_samples: int | None = None
    """Stop after this many non-empty documents."""

    def __post_init__(self) -> None:
        if not self.source:
            raise InvalidInputError("The dataset source is empty.", "Give a «source».")
        if self.max_samples is not None and self.max_samples <= 0:
            raise InvalidInputError(
                f"«max_samples» must be positive, got {self.max_samples}.",
                "Omit it to read the whole source.",
            )


class SourceReader:
    """Column names of a source, and its rows in batches of ``{column: [values]}``."""

    def __init__(self, columns: dict[str, str], batches: Iterator[dict[str, list]],
                 size_hint: int | None, description: str) -> None:
        self.columns = columns
        """Column name -> type name ('string' for text columns)."""
        self.batches = batches
        self.size_hint = size_hint
        """Number of rows when known (for progress), else None."""
        self.description = description


def open_source(cfg: DatasetConfig) -> SourceReader:
    """Resolve ``cfg.source`` to a reader, with one clear message for each way it can fail."""
    src = cfg.source
    if src.startswith("builtin:"):
        if src != BUILTIN_PYDOC:
            raise NotFoundError(f"Unknown built-in corpus {src!r}.", f"Use {BUILTIN_PYDOC}.")
        return _pydoc_reader()
    path = Path(src).expanduser()
    if path.exists():
        return _local_reader(path, cfg)
    if src.startswith("hf:") or (src.count("/") == 1 and not src.startswith((".", "/", "~"))):
        return _hub_reader(src.removeprefix("hf:"), cfg)
    raise NotFoundError(
        f"The dataset source {src!r} is neither an existing file or folder, nor a built-in "
        "corpus, nor a Hugging Face id.",
        f"Check the path, or use {BUILTIN_PYDOC} or hf:OWNER/NAME.",
    )


def preview_source(cfg: DatasetConfig, n: int = 5) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The columns of a source and its first ``n`` rows (for choosing the text column)."""
    reader = open_source(cfg)
    rows: list[dict[str, Any]] = []
    for batch in decoded(reader.batches, cfg.source):
        width = len(next(iter(batch.values()), []))
        rows += [{k: v[i] for k, v in batch.items()} for i in range(width)]
        if len(rows) >= n:
            break
    return reader.columns, rows[:n]


def decoded(batches: Iterator[dict[str, list]], source: str) -> Iterator[dict[str, list]]:
    """The batches, with a decoding error deep inside a file turned into one clear line."""
    try:
        yield from batches
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"{source} is not valid {err.encoding} text throughout: its start reads as "
            f"{err.encoding}, but later bytes do not ({err.reason}).",
            "Convert the file to UTF-8 (e.g. iconv -t UTF-8), then add it again.") from err


def _pydoc_reader() -> SourceReader:
    from pydoc_data import topics

    items = sorted(topics.topics.items())
    batch = {"topic": [k for k, _ in items], "text": [v for _, v in items]}
    return SourceReader({"topic": "string", "text": "string"}, iter([batch]), len(items),
                        "CPython documentation topics (pydoc_data.topics)")


def _local_reader(path: Path, cfg: DatasetConfig) -> SourceReader:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _saved_reader(path, cfg)
        txts = sorted(path.rglob("*.txt"))
        if txts:
            return SourceReader({"text": "string"}, _txt_files(txts), len(txts),
                                f"{len(txts)} text files in {path}")
        for suffix in _DATA_SUFFIXES:
            files = sorted(path.rglob(f"*{suffix}"))
            if files:
                readers = [_file_reader(f) for f in files]
                return SourceReader(readers[0].columns,
                                    (b for r in readers for b in r.batches), None,
                                    f"{len(files)} {suffix} files in {path}")
        raise InvalidInputError(
            f"The folder {path} holds no .txt, .jsonl, .json, .csv or .parquet files.",
            "Point «source» at a folder of such files, or at one file.",
        )
    return _file_reader(path)


def _file_reader(path: Path) -> SourceReader:
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return SourceReader({"text": "string"}, _txt_blocks(path), None, str(path))
        if suffix == ".jsonl":
            return _records_reader(_jsonl_records(path), str(path))
        if suffix == ".json":
            return _json_reader(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path)
            return _arrow_reader(reader.schema, iter(reader), str(path))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            return _arrow_reader(pf.schema_arrow, pf.iter_batches(_BATCH), str(path),
                                 pf.metadata.num_rows)
    except (pa.ArrowInvalid, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"Cannot read {path}: {err}",
                                "Check that the file is valid and UTF-8 encoded.") from err
    raise InvalidInputError(
        f"Unsupported file type {suffix or '(none)'} for {path}.",
        "Use .txt, .jsonl, .json, .csv or .parquet, or a folder of them.",
    )


def text_encoding(path: Path) -> str:
    """How a text file is encoded: from its byte-order mark, UTF-16 without one (every other
    byte zero), else UTF-8 if its start decodes, else Windows-1252 / Latin-1 for text that reads
    as text. A binary file (NUL bytes, control characters) is refused with one clear line."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return enc
    if b"\0" in head:
        pairs = len(head) // 2
        if pairs and head[1::2].count(0) > 0.9 * pairs:
            return "utf-16-le"
        if pairs and head[0::2].count(0) > 0.9 * pairs:
            return "utf-16-be"
        raise InvalidInputError(f"{path} looks like a binary file, not text (it holds NUL "
                                "bytes).", "Point the source at text files (.txt in UTF-8).")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    _refuse_mixed(path)
    for enc in ("cp1252", "latin-1"):
        try:
            text = head.decode(enc)
        except UnicodeDecodeError:
            continue
        printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
        if printable >= 0.97 * max(len(text), 1):
            return enc
    raise InvalidInputError(f"{path} is neither UTF-8 nor readable text in another common "
                            "encoding.", "Convert it to UTF-8 (e.g. iconv -t UTF-8), or check "
                            "that it is a text file.")


_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}"
                            rb"|[\xf0-\xf4][\x80-\xbf]{3}")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
MIXED_UTF8_LINES = 3
"""Lines of UTF-8 text that prove a file that is not UTF-8 throughout mixes encodings."""


def _refuse_mixed(path: Path) -> None:
    """Refuse a file that is not UTF-8 throughout yet holds lines of UTF-8 text (a file
    appended to in two encodings): read as Windows-1252 its UTF-8 part would be stored garbled
    ("Ã¼" for "ü"). A line counts as UTF-8 when every byte over 127 in it belongs to a valid
    UTF-8 sequence; in text really in Windows-1252 or Latin-1 that takes two accented
    characters in exact byte patterns, so a few such lines are proof."""
    utf8_lines, first_line = 0, 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            high = len(_HIGH_BYTE.findall(line))
            if high and sum(len(m) for m in _UTF8_SEQUENCE.findall(line)) == high:
                utf8_lines += 1
                first_line = first_line or lineno
                if utf8_lines >= MIXED_UTF8_LINES:
                    raise InvalidInputError(
                        f"{path} mixes encodings: some lines are UTF-8 (the first is line "
                        f"{first_line:,}) and others are not, so one of the two kinds would "
                        "be stored garbled.",
                        "Convert the lines that are not UTF-8 to UTF-8 (e.g. iconv -f LATIN1 "
                        "-t UTF-8 on that part), then add the file again.")


def _txt_blocks(path: Path) -> Iterator[dict[str, list]]:
    """One document per blank-line-separated block, read line by line."""
    docs: list[str] = []
    block: list[str] = []
    with open(path, encoding=text_encoding(path)) as fh:
        for line in fh:
            if line.strip():
                block.append(line)
                continue
            if block:
                docs.append("".join(block).strip())
                block = []
            if len(docs) >= _BATCH:
                yield {"text": docs}
                docs = []
    if block:
        docs.append("".join(block).strip())
    if docs:
        yield {"text": docs}


def _txt_files(files: list[Path]) -> Iterator[dict[str, list]]:
    for start in range(0, len(files), _BATCH):
        yield {"text": [f.read_text(encoding=text_encoding(f))
                        for f in files[start:start + _BATCH]]}


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding=text_encoding(path)) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{path} line {lineno} is not valid JSON ({err}).",
                                        "Fix or remove that line.") from err
            yield record if isinstance(record, dict) else {"text": record}


def _json_reader(path: Path) -> SourceReader:
    with open(path, encoding=text_encoding(path)) as fh:
        data = json.load(fh)
    if isinstance(data, dict):  # {"data": [...]} or {"col": [values]}
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        elif lists and len({len(v) for v in lists.values()}) == 1:
            n = len(next(iter(lists.values())))
            data = [{k: v[i] for k, v in lists.items()} for i in range(n)]
    if not isinstance(data, list):
        raise InvalidInputError(f"{path} is not a list of records.",
                                "Use a JSON list of objects, or JSON Lines (.jsonl).")
    records = (r if isinstance(r, dict) else {"text": r} for r in data)
    return _records_reader(records, str(path), len(data))


def _records_reader(records: Iterator[dict[str, Any]], desc: str,
                    size: int | None = None) -> SourceReader:
    """Rows as dicts: the first row's keys are the columns."""
    first = next(records, None)
    if first is None:
        return SourceReader({}, iter(()), 0, desc)
    columns = {k: "string" if isinstance(v, str) else type(v).__name__ for k, v in first.items()}

    def batches() -> Iterator[dict[str, list]]:
        rows = [first]
        for record in records:
            rows.append(record)
            if len(rows) >= _BATCH:
                yield {c: [r.get(c) for r in rows] for c in columns}
                rows = []
        if rows:
            yield {c: [r.get(c) for r in rows] for c in columns}

    return SourceReader(columns, batches(), size, desc)


def _arrow_reader(schema: pa.Schema, batches: Any, desc: str,
                  size: int | None = None) -> SourceReader:
    columns = {f.name: "string" if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
               else str(f.type) for f in schema}
    return SourceReader(columns, (b.to_pydict() for b in batches), size, desc)


def _saved_reader(path: Path, cfg: DatasetConfig) -> SourceReader:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise NotFoundError(f"The saved dataset {path} has no split {cfg.split!r} "
                                f"(splits: {', '.join(ds)}).", "Choose «split» from those.")
        ds = ds[cfg.split]
    return SourceReader(_feature_columns(ds.features), ds.iter(batch_size=_BATCH), len(ds),
                        f"saved dataset {path}")


def _hub_reader(repo_id: str, cfg: DatasetConfig) -> SourceReader:
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, cfg.hf_config, split=cfg.split, streaming=True)
    except Exception as err:  # the hub libraries raise many types for "not available"
        if not is_online():
            raise NotFoundError(
                f"The Hugging Face dataset {repo_id!r} is not in the local cache.", offline_hint()
            ) from err
        raise NotFoundError(f"Cannot open the Hugging Face dataset {repo_id!r}: {err}",
                            "Check the id, «hf_config» and «split».") from err
    features = ds.features
    if features is None:  # some streamed datasets only know their columns after a row
        head = next(iter(ds))
        columns = {k: "string" if isinstance(v, str) else type(v).__name__ for k, v in head.items()}
    else:
        columns = _feature_columns(features)
    return SourceReader(columns, ds.iter(batch_size=_BATCH), None, f"hf:{repo_id}")


def _feature_columns(features: Any) -> dict[str, str]:
    out = {}
    for name, feat in features.items():
        dtype = getattr(feat, "dtype", type(feat).__name__)
        out[name] = "string" if dtype in ("string", "large_string") else str(dtype)
    return out


def choose_text_column(columns: dict[str, str], requested: str | None, source: str) -> str:
    """The requested column, or the only string column, or 'text'; else a clear error."""
    listing = ", ".join(f"{k} ({v})" for k, v in columns.items()) or "none"
    if requested is not None:
        if requested not in columns:
            raise InvalidInputError(f"The source {source} has no column {requested!r} "
                                    f"(columns: {listing}).", "Choose «text_column» from those.")
        return requested
    strings = [k for k, v in columns.items() if v == "string"]
    if len(strings) == 1:
        return strings[0]
    if "text" in strings:
        return "text"
    if not strings:
        raise InvalidInputError(f"The source {source} has no text column (columns: {listing}).",
                                "Choose a source with a string column.")
    raise InvalidInputError(
        f"The source {source} has several text columns: {', '.join(strings)}.",
        "Choose the one to use («text_column»).",
    )
