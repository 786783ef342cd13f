"""Tokens as character spans of a decoded text, and character-level marks read at each token.

A block of the tokenized set is decoded token by token and joined, so every token owns the span
``[start, end)`` of the text. A token is read at its *anchor*: its first character that is not
whitespace, or its first character if it is all whitespace. A token whose text is empty (padding)
has anchor -1 and carries no concept. A token cut inside a multi-byte character decodes to the
replacement character and is read like any other token.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Spans(NamedTuple):
    text: str
    """The decoded block."""
    starts: np.ndarray
    """[T] first character of each token."""
    ends: np.ndarray
    """[T] one past its last character."""
    anchors: np.ndarray
    """[T] the character each token is read at (-1: empty token)."""


def spans_of(pieces: list[str]) -> Spans:
    """The spans of tokens whose decoded texts are ``pieces`` (in order)."""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    lead = np.fromiter((len(p) - len(p.lstrip()) if p.strip() else 0 for p in pieces),
                       dtype=np.int64, count=len(pieces))
    anchors = np.where(lengths > 0, starts + lead, -1)
    return Spans("".join(pieces), starts, ends, anchors)


def at_anchors(char_mask: np.ndarray, spans: Spans) -> np.ndarray:
    """[T] a character-level mark read at every token's anchor (False for empty tokens)."""
    out = np.zeros(len(spans.anchors), dtype=bool)
    ok = spans.anchors >= 0
    out[ok] = char_mask[spans.anchors[ok]]
    return out


def line_bounds(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, without its newline."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out
