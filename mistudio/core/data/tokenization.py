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

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from mistudio.core.data.datasets import open_dataset
from mistudio.core.data.token_preview import PREVIEW_SEQUENCES, preview_tokens, write_preview
from mistudio.core.models.registry import load_tokenizer, model_info
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.files import read_manifest
from mistudio.core.store.manifests import (
    Histogram,
    TokenizedManifest,
    TokenizedProvenance,
    TokenizedSummary,
    TokenStats,
    TopToken,
    made_now,
)
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
            raise InvalidInputError(f"Unknown «prepend_bos» value {self.prepend_bos!r}.",
                                    "Use auto, yes or no.")

    def default_name(self, with_bos: bool = False) -> str:
        """DATASET.MODEL.ctxN, plus ``.bos`` when sequences start with BOS."""
        return f"{self.dataset}.{self.model}.ctx{self.context_length}" + (
            ".bos" if with_bos else "")


class TokenizedSet:
    """Read access to a tokenized set without loading it: sequences come from the memory map."""

    def __init__(self, path: Path, manifest: TokenizedManifest) -> None:
        self.path = path
        self.manifest = manifest
        self.context_length = int(manifest.config["context_length"])
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path / TOKENS_FILE), "r"))
            self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (OSError, pa.ArrowInvalid) as err:
            raise CorruptedError(f"The tokenized set at {path} cannot be read ({err}).",
                                 "Tokenize the dataset again («overwrite»).") from err
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
                                    "Use «prepend_bos=auto» or no.")
        return None
    return int(bos)


def _made_with(ws: Workspace, cfg: TokenizeConfig, name: str | None) -> TokenizedManifest | None:
    """A complete tokenized set made with exactly ``cfg`` (the name it would get, with or
    without BOS), or None: whatever else is there is checked once the tokenizer is loaded."""
    wanted = json.loads(json.dumps(asdict(cfg)))
    for candidate in [name] if name else [cfg.default_name(True), cfg.default_name(False)]:
        art = ws.catalog.find("tokenized", candidate)
        if art is not None and art.status == "complete" and art.config == wanted:
            return read_manifest(Path(art.path), f"tokenized set {candidate!r}",
                                 "«do:rebuild_catalog», or tokenize again («overwrite»).")
    return None


def _check_same(manifest: TokenizedManifest, cfg: TokenizeConfig, bos: int | None) -> None:
    """A tokenized set found by name must be what ``cfg`` asks for."""
    have = manifest.config
    diffs = [f"{f.replace('_', ' ')} {have.get(f)!r} (asked: {getattr(cfg, f)!r})"
             for f in ("dataset", "model", "context_length", "mode") if have.get(f) != getattr(cfg, f)]
    old_bos = manifest.provenance.bos_token_id
    if old_bos != bos:
        diffs.append(f"BOS {'first' if old_bos is not None else 'not prepended'} (asked: "
                     f"{'first' if bos is not None else 'not prepended'})")
    if diffs:
        raise InvalidInputError(
            f"Tokenized set {manifest.name!r} exists with other settings: "
            f"{'; '.join(diffs)}.", "Give the new set another «name», or replace it («overwrite»).")


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
                     task: TaskState | None = None, overwrite: bool = False) -> TokenizedManifest:
    """Tokenize ``cfg.dataset`` with ``cfg.model``'s tokenizer into ``tokenized/NAME``; a set of
    that name made with the same settings is returned as it is."""
    task = task or silent_task()
    if not overwrite and (same := _made_with(ws, cfg, name)) is not None:
        return same  # found without loading the tokenizer (a re-run imports no transformers)
    info = model_info(ws, cfg.model)
    task.set_status(f"Loading the tokenizer of {cfg.model}")
    tokenizer = load_tokenizer(ws, cfg.model, task)
    bos = bos_policy(tokenizer, cfg.prepend_bos)
    name = name or cfg.default_name(bos is not None)
    existing = ws.catalog.find("tokenized", name)
    if existing and existing.status == "complete" and not overwrite:
        manifest = read_manifest(Path(existing.path), f"tokenized set {name!r}",
                                 "«do:rebuild_catalog», or tokenize again («overwrite»).")
        _check_same(manifest, cfg, bos)
        return manifest
    if cfg.context_length > info.max_context:
        raise InvalidInputError(f"Context length {cfg.context_length} exceeds the model's "
                                f"maximum of {info.max_context}.",
                                f"Use «context_length={min(1024, info.max_context)}» or less.")
    with ws.build("tokenized", name, "tokenize", asdict(cfg), overwrite) as b:
        table = open_dataset(ws, cfg.dataset)
        sequences = _Sequences(b.folder / TOKENS_FILE, cfg, tokenizer, bos,
                               max(info.vocab_size, len(tokenizer)))
        with sequences:
            for doc, toks, last in _documents(table, tokenizer, task):
                check_cancelled(task)
                if sequences.add(doc, toks, last):  # a batch was written
                    task.set_status(f"Tokenized {doc + last:,}/{len(table):,} documents, "
                                    f"{sequences.n_seq:,} sequences")
                    task.set_progress((doc + last) / max(len(table), 1))
        if sequences.n_seq == 0:
            raise InvalidInputError(
                f"Dataset {cfg.dataset!r} has fewer tokens than one sequence of "
                f"{cfg.context_length}.",
                "Use a smaller «context_length», «mode=truncate», or a larger dataset.")
        b.manifest = TokenizedManifest(
            name, config=asdict(cfg), provenance=TokenizedProvenance(
                **made_now(), dataset=cfg.dataset, model=cfg.model, bos_token_id=bos,
                prepend_bos=bos is not None,
                bos_token=tokenizer.convert_ids_to_tokens(bos) if bos is not None else None,
                separator_token_id=sequences.sep, pad_token_id=sequences.pad),
            summary=TokenizedSummary(len(table), sequences.n_seq, sequences.n_tokens,
                                     sequences.dropped_tail),
            stats=sequences.stats(tokenizer))
        write_preview(b.folder, preview_tokens(
            *TokenizedSet(b.folder, b.manifest).slice(0, PREVIEW_SEQUENCES), tokenizer))
    task.set_progress(1.0)
    return b.manifest


class _Sequences:
    """Documents in, fixed-length sequences out: cut (concat) or padded (truncate), written to
    the Arrow file in batches, with token counts and document lengths for the statistics."""

    def __init__(self, path: Path, cfg: TokenizeConfig, tokenizer: Any, bos: int | None,
                 vocab: int) -> None:
        self.path, self.cfg, self.bos = path, cfg, bos
        self.ctx = cfg.context_length
        self.body = self.ctx - (bos is not None)  # tokens of text per sequence
        self.sep = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.schema = pa.schema([("input_ids", pa.list_(pa.int32(), self.ctx)),
                                 ("attention_mask", pa.list_(pa.int8(), self.ctx)),
                                 ("doc_index", pa.int32())])
        self.counts = np.zeros(vocab, np.int64)
        self.doc_lengths: list[int] = []
        self.n_seq = self.n_tokens = 0
        self.stream: list[int] = []
        self.stream_docs: list[int] = []  # which document each token of the stream came from
        self.pos = 0  # the stream's consumed prefix (deleting it per sequence was quadratic)
        self.rows: list[list[int]] = []
        self.masks: list[list[int]] = []
        self.docs: list[int] = []
        self.length = 0  # tokens of the current document so far

    def __enter__(self) -> _Sequences:
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self._writer.close()
            self._sink.close()

    @property
    def dropped_tail(self) -> int:
        return len(self.stream) - self.pos

    def add(self, doc: int, toks: list[int], last: bool) -> bool:
        """Take one document (or a piece of a long one); True when a batch was written."""
        self.length += len(toks)
        if self.cfg.mode == "truncate":
            self._truncate(doc, toks, last)
        else:
            self._concat(doc, toks, last)
        if last:
            self.doc_lengths.append(self.length)
            self.length = 0
        if len(self.rows) >= 256 or (last and doc % _DOC_BATCH == _DOC_BATCH - 1):
            self.flush()
            return True
        return False

    def _truncate(self, doc: int, toks: list[int], last: bool) -> None:
        self.stream.extend(toks[: max(self.body - len(self.stream), 0)])
        if last:
            seq = ([self.bos] if self.bos is not None else []) + self.stream
            self.rows.append(seq + [self.pad] * (self.ctx - len(seq)))
            self.masks.append([1] * len(seq) + [0] * (self.ctx - len(seq)))
            self.docs.append(doc)
            self.stream.clear()

    def _concat(self, doc: int, toks: list[int], last: bool) -> None:
        piece = toks + ([self.sep] if last and self.sep is not None else [])
        self.stream.extend(piece)
        self.stream_docs.extend([doc] * len(piece))
        while len(self.stream) - self.pos >= self.body:
            self.rows.append(([self.bos] if self.bos is not None else [])
                             + self.stream[self.pos:self.pos + self.body])
            self.masks.append([1] * self.ctx)
            self.docs.append(self.stream_docs[self.pos])
            self.pos += self.body

    def flush(self) -> None:
        """Write the sequences made so far as one record batch."""
        if self.rows:
            ids = np.asarray(self.rows, np.int32).reshape(-1)  # [n * ctx]
            mask = np.asarray(self.masks, np.int8).reshape(-1)
            self._writer.write_batch(pa.record_batch([
                pa.FixedSizeListArray.from_arrays(pa.array(ids), self.ctx),
                pa.FixedSizeListArray.from_arrays(pa.array(mask), self.ctx),
                pa.array(self.docs, pa.int32())], schema=self.schema))
            np.add.at(self.counts, ids[mask.astype(bool)], 1)
            self.n_seq += len(self.rows)
            self.n_tokens += int(mask.sum())
        self.rows, self.masks, self.docs = [], [], []
        del self.stream[:self.pos], self.stream_docs[:self.pos]
        self.pos = 0

    def stats(self, tokenizer: Any) -> TokenStats:
        """Document-length histogram (in tokens) and the most frequent tokens."""
        lengths = np.asarray(self.doc_lengths)
        hist, edges = np.histogram(lengths, bins=min(30, max(1, len(np.unique(lengths)))))
        top = np.argsort(self.counts)[::-1][:30]
        return TokenStats(Histogram(hist.tolist(), edges.tolist()), float(lengths.mean()),
                          int(lengths.max()),
                          [TopToken(int(t), tokenizer.decode([int(t)]), int(self.counts[t]))
                           for t in top if self.counts[t] > 0])


def open_tokenized(ws: Workspace, name: str) -> TokenizedSet:
    art = ws.catalog.get("tokenized", name)
    path = Path(art.path)
    return TokenizedSet(path, read_manifest(path, f"tokenized set {name!r}",
                                            "Tokenize the dataset again («overwrite»)."))
