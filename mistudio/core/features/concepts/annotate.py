"""Concept annotations of a tokenized set, computed once and cached beside it.

For every token of the sequences an analysis covers, one bit per concept of the catalogue
(:mod:`.catalogue`), from the text itself (:mod:`.text_concepts`), Python's tokenizer on the
spans that parse as code (:mod:`.code_concepts`) and spaCy's English pipeline where it is
installed and the text reads as English (:mod:`.linguistic`). Consecutive sequences of a
concatenated set are joined (a sentence cut between two sequences is parsed whole); the BOS
token reads as nothing and a document separator as a paragraph break.

The cache is ``tokenized/NAME/concepts/annotations.npz`` (bits packed per token and a JSON note
of what they hold, in one file written all or nothing), reused while it covers the sequences
asked for and was made with the same catalogue and pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.features.concepts import linguistic
from mistudio.core.features.concepts.catalogue import CATALOGUE_VERSION, INDEX, KEYS, SPACY_KEYS
from mistudio.core.features.concepts.code_concepts import code_concepts
from mistudio.core.features.concepts.spans import at_anchors, spans_of
from mistudio.core.features.concepts.text_concepts import text_concepts
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.files import atomic_write

CACHE_DIR = "concepts"
CACHE_FILE = "annotations.npz"
BLOCK_SEQUENCES = 16
SPACY_COLUMNS = [k for k in KEYS if k in SPACY_KEYS]


class Annotations(NamedTuple):
    """The concept bits of sequences ``first .. first + n - 1`` of a tokenized set."""

    bits: np.ndarray
    """[n * context_length, len(KEYS)] bool, sequence-major."""
    first: int
    context_length: int
    linguistic: str
    """Which linguistic concepts are in (the pipeline), or why none are."""

    def for_rows(self, seq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """[R, C] the concepts of tokens at (sequence, position)."""
        return self.bits[(np.asarray(seq, np.int64) - self.first) * self.context_length
                         + np.asarray(pos, np.int64)]

    @property
    def has_linguistic(self) -> bool:
        return self.linguistic.startswith("spaCy")


def token_pieces(piece_text: Callable[[int], str], ids: np.ndarray, masks: np.ndarray,
                 special: dict[int, str]) -> dict[int, str]:
    """The raw text of every token id used (``special``: the text that stands for BOS,
    padding and the document separator). Raises when the tokens decode to nothing readable
    (the text cannot be recovered)."""
    used = np.unique(ids[masks.astype(bool)])
    out = {int(i): special[int(i)] if int(i) in special else piece_text(int(i)) for i in used}
    text = "".join(out.values())
    if not text.strip() or text.count("\ufffd") > 0.5 * len(text):
        raise InvalidInputError("The text of this tokenized set cannot be recovered from its "
                                "tokens (the tokenizer decodes them to nothing readable).",
                                "Tokenize the dataset again with the model's own tokenizer.")
    return out


def special_texts(provenance: Any) -> dict[int, str]:
    """BOS and padding read as nothing, the document separator as a paragraph break."""
    out = {int(i): "" for i in (getattr(provenance, "bos_token_id", None),
                                 getattr(provenance, "pad_token_id", None)) if i is not None}
    sep = getattr(provenance, "separator_token_id", None)
    if sep is not None:
        out[int(sep)] = "\n\n"
    return out


def _blocks(n_seq: int, concat: bool) -> list[tuple[int, int]]:
    step = BLOCK_SEQUENCES if concat else 1
    return [(a, min(a + step, n_seq)) for a in range(0, n_seq, step)]


def _annotate_blocks(ids: np.ndarray, masks: np.ndarray, pieces: dict[int, str], concat: bool,
                     use_spacy: bool, task: TaskState) -> tuple[np.ndarray, str]:
    n_seq, L = ids.shape
    bits = np.zeros((n_seq * L, len(KEYS)), dtype=bool)
    blocks = _blocks(n_seq, concat)
    texts, spans_list = [], []
    for bi, (a, z) in enumerate(blocks):
        check_cancelled(task)
        block_ids, block_mask = ids[a:z].reshape(-1), masks[a:z].reshape(-1).astype(bool)
        p = [pieces[int(t)] if m else "" for t, m in zip(block_ids, block_mask, strict=True)]
        positions = np.tile(np.arange(L), z - a)
        spans = spans_of(p)
        rows = slice(a * L, z * L)
        for key, col in text_concepts(p, spans, positions).items():
            bits[rows, INDEX[key]] = col
        for key, mask in code_concepts(spans.text).items():
            bits[rows, INDEX[key]] = at_anchors(mask, spans)
        texts.append(spans.text)
        spans_list.append(spans)
        task.set_progress(0.3 * (bi + 1) / len(blocks))
    if not use_spacy:
        state = linguistic.availability()
        return bits, state.pipeline if not state.ok else "left out"
    parsed = linguistic.parse_texts(texts, lambda i: (check_cancelled(task), task.set_progress(
        0.3 + 0.7 * (i + 1) / len(texts))))
    english, share = linguistic.reads_as_english(parsed)
    if not english:
        return bits, (f"the text does not read as English ({share:.0%} English stop words), "
                      "so the English pipeline's concepts are left out")
    cols = [INDEX[k] for k in SPACY_COLUMNS]
    for (a, z), spans, doc in zip(blocks, spans_list, parsed, strict=True):
        bits[a * L: z * L, cols] = linguistic.word_concepts(doc, spans.anchors, SPACY_COLUMNS)
    return bits, f"spaCy {linguistic.spacy_pipeline_name()}"


def _read_cache(folder: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """(what the cache holds, its packed bits), from one file, or None."""
    try:
        with np.load(folder / CACHE_DIR / CACHE_FILE, allow_pickle=False) as z:
            return json.loads(str(z["note"])), z["bits"]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(folder: Path, bits: np.ndarray, note: dict[str, Any]) -> None:
    """Bits and note in one file, written all or nothing: a reader never pairs one writer's
    bits with another's note, and two processes annotating at once leave one whole file."""
    (folder / CACHE_DIR).mkdir(exist_ok=True)
    with atomic_write(folder / CACHE_DIR / CACHE_FILE) as fh:
        np.savez(fh, bits=np.packbits(bits, axis=1), note=np.array(json.dumps(note)))


def annotate(tokenized: Any, first: int, last: int, piece_text: Callable[[int], str],
             use_spacy: bool = True, task: TaskState | None = None) -> Annotations:
    """Concepts of sequences ``first..last`` of ``tokenized`` (a TokenizedSet), from the cache
    when it covers them (see the module docstring). ``piece_text(id)``: a token's raw text."""
    task = task or silent_task()
    spacy_state = linguistic.availability()
    want_spacy = use_spacy and spacy_state.ok
    cached = _read_cache(tokenized.path)
    L = tokenized.context_length
    if cached is not None:
        note, packed = cached
        if (note.get("version") == CATALOGUE_VERSION and note.get("keys") == list(KEYS)
                and note["first"] <= first and note["last"] >= last
                and note.get("spacy_wanted") == want_spacy):
            lo, hi = (first - note["first"]) * L, (last + 1 - note["first"]) * L
            bits = np.unpackbits(packed[lo:hi], axis=1, count=len(KEYS)).astype(bool)
            return Annotations(bits, first, L, note["linguistic"])
    ids, masks = tokenized.slice(first, last + 1)
    task.set_status("Reading the text back from its tokens")
    pieces = token_pieces(piece_text, ids, masks, special_texts(tokenized.manifest.provenance))
    concat = tokenized.manifest.config.get("mode", "concat") == "concat"
    task.set_status("Annotating concepts (parts of speech, quotes, code, ...)")
    bits, words = _annotate_blocks(ids, masks, pieces, concat, want_spacy, task)
    try:
        _write_cache(tokenized.path, bits, {
            "version": CATALOGUE_VERSION, "keys": list(KEYS), "first": first, "last": last,
            "spacy_wanted": want_spacy, "linguistic": words})
    except OSError:
        pass  # a read-only workspace: annotations are recomputed next time
    return Annotations(bits, first, L, words)
