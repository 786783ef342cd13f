"""Tokenize a dataset into fixed-length sequences, stored as memory-mapped Arrow.

Two ways to make sequences of ``context_length`` tokens:

- ``concat`` (default): documents are joined into one stream, separated by the end-of-text
  token, and cut into sequences; each starts with BOS whenever the model's tokenizer defines one
  (``prepend_bos='auto'``, SAELens's default). No padding, no wasted compute; the tail shorter
  than one sequence is dropped.

Why BOS by default: models park attention on the first token of a sequence and give it an
activation norm tens of times the typical one. With BOS first, that sink is the BOS position,
which extraction drops; without it (SmolLM2's tokenizer adds none) the sink lands on the first
text tokens, which would then be stored and dominate training and metrics
(:mod:`mistudio.core.activations.massive`).
- ``truncate``: one sequence per document, cut at the context length and padded, with an
  attention mask.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from mistudio import __version__
from mistudio.core.data.datasets import open_dataset
from mistudio.core.models.registry import load_tokenizer, model_info
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.files import building, read_json, write_json_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.workspace import Workspace

TOKENS_FILE = "tokens.arrow"
_DOC_BATCH = 64


@dataclass(frozen=True)
class TokenizeConfig:
    """How a dataset is cut into sequences; stored in the tokenized set's manifest."""

    dataset: str
    """Name of the dataset in the workspace."""
    model: str
    """Name of the model whose tokenizer is used."""
    context_length: int = 128
    """Tokens per sequence."""
    mode: Literal["concat", "truncate"] = "concat"
    """concat: join documents and cut; truncate: one padded sequence per document."""
    prepend_bos: Literal["auto", "yes", "no"] = "auto"
    """Start each sequence with BOS: auto = whenever the tokenizer defines a BOS token; yes =
    the same, refusing a tokenizer without one; no = never (the text's first token then takes
    the attention sink)."""

    def __post_init__(self) -> None:
        if not 2 <= self.context_length <= 1_000_000:
            raise InvalidInputError(f"Context length {self.context_length} is out of range.",
                                    "Use a value from 2 up to the model's maximum (e.g. 128).")
        if self.mode not in ("concat", "truncate"):
            raise InvalidInputError(f"Unknown tokenization mode {self.mode!r}.",
                                    "Use concat or truncate.")
        if self.prepend_bos not in ("auto", "yes", "no"):
            raise InvalidInputError(f"Unknown --prepend-bos value {self.prepend_bos!r}.",
                                    "Use auto, yes or no.")

    def default_name(self, with_bos: bool = False) -> str:
        """DATASET.MODEL.ctxN, plus ``.bos`` when sequences start with BOS."""
        return f"{self.dataset}.{self.model}.ctx{self.context_length}" + (
            ".bos" if with_bos else "")


class TokenizedSet:
    """Read access to a tokenized set without loading it: sequences come from the memory map."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.context_length = int(manifest["config"]["context_length"])
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path / TOKENS_FILE), "r"))
            self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (OSError, pa.ArrowInvalid) as err:
            raise CorruptedError(f"The tokenized set at {path} cannot be read ({err}).",
                                 "Tokenize the dataset again with --overwrite.") from err
        sizes = [b.num_rows for b in self._batches]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_sequences = int(self._starts[-1])

    def _column(self, batch: pa.RecordBatch, name: str) -> np.ndarray:
        flat = batch.column(name).values.to_numpy(zero_copy_only=True)
        return flat.reshape(-1, self.context_length)  # [rows, ctx]

    def slice(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Input ids and attention mask of sequences ``start:stop``, each [n, ctx]."""
        ids, masks = [], []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for b in range(max(first, 0), len(self._batches)):
            lo, hi = self._starts[b], self._starts[b + 1]
            if lo >= stop:
                break
            a, z = max(start, lo) - lo, min(stop, hi) - lo
            ids.append(self._column(self._batches[b], "input_ids")[a:z])
            masks.append(self._column(self._batches[b], "attention_mask")[a:z])
        if not ids:
            empty = np.zeros((0, self.context_length), np.int32)
            return empty, empty.astype(np.int8)
        return np.concatenate(ids), np.concatenate(masks)


def bos_policy(tokenizer: Any, prepend_bos: str) -> int | None:
    """The BOS id to put first in each sequence, or None."""
    bos = tokenizer.bos_token_id
    if prepend_bos == "no":
        return None
    if bos is None:
        if prepend_bos == "yes":
            raise InvalidInputError("This model's tokenizer defines no BOS token.",
                                    "Use --prepend-bos auto or no.")
        return None
    return int(bos)


def _check_same(manifest: dict[str, Any], cfg: TokenizeConfig, bos: int | None) -> None:
    """A tokenized set found by name must be what ``cfg`` asks for."""
    have = manifest.get("config", {})
    diffs = [f"{f.replace('_', ' ')} {have.get(f)!r} (asked: {getattr(cfg, f)!r})"
             for f in ("dataset", "model", "context_length", "mode") if have.get(f) != getattr(cfg, f)]
    old_bos = manifest.get("provenance", {}).get("bos_token_id")
    if old_bos != bos:
        diffs.append(f"BOS {'first' if old_bos is not None else 'not prepended'} (asked: "
                     f"{'first' if bos is not None else 'not prepended'})")
    if diffs:
        raise InvalidInputError(
            f"Tokenized set {manifest.get('name')!r} exists with other settings: "
            f"{'; '.join(diffs)}.", "Give the new set another --name, or pass --overwrite.")


PIECE_CHARS = 50_000
"""Documents longer than this are tokenized in pieces cut at whitespace: one 50 MB line in
one call took 14 minutes and 6.5 GB here; in pieces memory stays bounded and progress shows."""


def _pieces(text: str, limit: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``limit`` characters, cut after whitespace
    where there is some (so no word is split), the pieces joining back to ``text``."""
    start = 0
    while len(text) - start > limit:
        cut = max(text.rfind(" ", start, start + limit), text.rfind("\n", start, start + limit))
        end = cut + 1 if cut > start else start + limit
        yield text[start:end]
        start = end
    yield text[start:]


def _documents(table: pa.Table, tokenizer: Any,
               task: TaskState) -> Iterator[tuple[int, list[int], bool]]:
    """(document index, token ids, last piece of the document?) in order: ordinary documents
    tokenized 64 at a time, long ones piece by piece."""
    texts = table.column("text")
    n = len(texts)
    for start in range(0, n, _DOC_BATCH):
        batch = texts.slice(start, _DOC_BATCH).to_pylist()
        short = [t if len(t) <= PIECE_CHARS else "" for t in batch]
        ids = tokenizer(short, add_special_tokens=False, verbose=False)["input_ids"]
        for i, (text, toks) in enumerate(zip(batch, ids, strict=True)):
            doc = start + i
            if len(text) <= PIECE_CHARS:
                yield doc, toks, True
                continue
            done = 0
            for piece in _pieces(text):
                check_cancelled(task)
                done += len(piece)
                task.set_status(f"Tokenizing document {doc + 1:,} of {n:,}: "
                                f"{done / 1e6:,.1f} of {len(text) / 1e6:,.1f} M characters")
                task.set_progress((doc + done / len(text)) / max(n, 1))
                yield doc, tokenizer(piece, add_special_tokens=False,
                                     verbose=False)["input_ids"], done == len(text)


def tokenize_dataset(ws: Workspace, cfg: TokenizeConfig, name: str | None = None,
                     task: TaskState | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Tokenize ``cfg.dataset`` with ``cfg.model``'s tokenizer into ``tokenized/NAME``."""
    task = task or silent_task()
    info = model_info(ws, cfg.model)
    task.set_status(f"Loading the tokenizer of {cfg.model}")
    tokenizer = load_tokenizer(ws, cfg.model, task)
    bos = bos_policy(tokenizer, cfg.prepend_bos)
    name = name or cfg.default_name(bos is not None)
    existing = ws.catalog.find("tokenized", name)
    if existing and existing.status == "complete" and not overwrite:
        manifest = read_json(Path(existing.path) / MANIFEST, f"tokenized set {name!r}",
                             "Run `mistudio catalog rebuild`, or tokenize again with --overwrite.")
        _check_same(manifest, cfg, bos)
        return manifest
    ws.refuse_existing("tokenized", name, overwrite)
    with ws.writer("tokenized", name, "tokenize"):
        return _tokenize(ws, cfg, name, info, tokenizer, bos, task)


def _tokenize(ws: Workspace, cfg: TokenizeConfig, name: str, info: Any, tokenizer: Any,
              bos: int | None, task: TaskState) -> dict[str, Any]:
    table = open_dataset(ws, cfg.dataset)
    if cfg.context_length > info.max_context:
        raise InvalidInputError(f"Context length {cfg.context_length} exceeds the model's "
                                f"maximum of {info.max_context}.",
                                f"Use --context-length {min(1024, info.max_context)} or less.")
    sep = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ctx = cfg.context_length
    body = ctx - (bos is not None)  # tokens of text per sequence
    schema = pa.schema([("input_ids", pa.list_(pa.int32(), ctx)),
                        ("attention_mask", pa.list_(pa.int8(), ctx)),
                        ("doc_index", pa.int32())])
    counts = np.zeros(max(info.vocab_size, len(tokenizer)), np.int64)
    doc_lengths: list[int] = []
    n_seq = n_tokens = 0
    stream: list[int] = []
    stream_docs: list[int] = []  # which document each token of the stream came from
    n_docs = len(table)

    def write(w: Any, rows: list[list[int]], masks: list[list[int]], docs: list[int]) -> None:
        nonlocal n_seq, n_tokens
        ids = np.asarray(rows, np.int32).reshape(-1)  # [n * ctx]
        mask = np.asarray(masks, np.int8).reshape(-1)
        w.write_batch(pa.record_batch([
            pa.FixedSizeListArray.from_arrays(pa.array(ids), ctx),
            pa.FixedSizeListArray.from_arrays(pa.array(mask), ctx),
            pa.array(docs, pa.int32())], schema=schema))
        np.add.at(counts, ids[mask.astype(bool)], 1)
        n_seq += len(rows)
        n_tokens += int(mask.sum())

    final, partial = ws.artifact_path("tokenized", name), ws.partial_path("tokenized", name)
    with ws.job("tokenize", name, asdict(cfg)), building(final, partial) as out:
        with pa.OSFile(str(out / TOKENS_FILE), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
            pos = 0  # the stream's consumed prefix (deleting it per sequence was quadratic)
            rows, masks, docs = [], [], []
            length = 0  # tokens of the current document so far
            for doc, toks, last in _documents(table, tokenizer, task):
                check_cancelled(task)
                length += len(toks)
                if cfg.mode == "truncate":
                    stream.extend(toks[: max(body - len(stream), 0)])
                    if last:
                        seq = ([bos] if bos is not None else []) + stream
                        rows.append(seq + [pad] * (ctx - len(seq)))
                        masks.append([1] * len(seq) + [0] * (ctx - len(seq)))
                        docs.append(doc)
                        stream.clear()
                else:
                    piece = toks + ([sep] if last and sep is not None else [])
                    stream.extend(piece)
                    stream_docs.extend([doc] * len(piece))
                    while len(stream) - pos >= body:
                        rows.append(([bos] if bos is not None else []) + stream[pos:pos + body])
                        masks.append([1] * ctx)
                        docs.append(stream_docs[pos])
                        pos += body
                if last:
                    doc_lengths.append(length)
                    length = 0
                if len(rows) >= 256 or (last and doc % _DOC_BATCH == _DOC_BATCH - 1):
                    if rows:
                        write(w, rows, masks, docs)
                    rows, masks, docs = [], [], []
                    del stream[:pos], stream_docs[:pos]
                    pos = 0
                    task.set_status(f"Tokenized {doc + last:,}/{n_docs:,} documents, "
                                    f"{n_seq:,} sequences")
                    task.set_progress((doc + last) / max(n_docs, 1))
            if rows:
                write(w, rows, masks, docs)
            del stream[:pos], stream_docs[:pos]
        if n_seq == 0:
            raise InvalidInputError(
                f"Dataset {cfg.dataset!r} has fewer tokens than one sequence of {ctx}.",
                "Use a smaller --context-length, --mode truncate, or a larger dataset.")
        manifest = {
            "kind": "tokenized", "name": name, "status": "complete", "config": asdict(cfg),
            "provenance": {"dataset": cfg.dataset, "model": cfg.model, "bos_token_id": bos,
                           "prepend_bos": bos is not None,
                           "bos_token": tokenizer.convert_ids_to_tokens(bos)
                           if bos is not None else None,
                           "separator_token_id": sep, "pad_token_id": pad,
                           "mistudio": __version__, "created": time.time()},
            "summary": {"documents": n_docs, "sequences": n_seq, "tokens": n_tokens,
                        "dropped_tail_tokens": len(stream)},
            "stats": _stats(doc_lengths, counts, tokenizer),
        }
        write_json_atomic(out / MANIFEST, manifest)
    ws.register(manifest)
    task.set_progress(1.0)
    return manifest


def _stats(doc_lengths: list[int], counts: np.ndarray, tokenizer: Any) -> dict[str, Any]:
    """Document-length histogram (in tokens) and the most frequent tokens."""
    lengths = np.asarray(doc_lengths)
    hist, edges = np.histogram(lengths, bins=min(30, max(1, len(np.unique(lengths)))))
    top = np.argsort(counts)[::-1][:30]
    return {
        "doc_length_histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
        "doc_length_mean": float(lengths.mean()), "doc_length_max": int(lengths.max()),
        "top_tokens": [{"id": int(t), "token": tokenizer.decode([int(t)]), "count": int(counts[t])}
                       for t in top if counts[t] > 0],
    }


def open_tokenized(ws: Workspace, name: str) -> TokenizedSet:
    art = ws.catalog.get("tokenized", name)
    path = Path(art.path)
    manifest = read_json(path / MANIFEST, f"tokenized set {name!r}",
                         "Tokenize the dataset again with --overwrite.")
    return TokenizedSet(path, manifest)
