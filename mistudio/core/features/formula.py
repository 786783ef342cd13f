"""Labels as formulas over concepts and tokens, evaluated on an analysis's tokens and written
in words.

A formula is a left-to-right chain of atoms joined by AND, OR and AND NOT, as in Mu & Andreas'
compositional explanations. An atom is a concept of the token (``pos:PROPN``), a concept of the
token before it (``prev:dep:neg``), a token's text (``tok:the``) or the text of the token before
(``prevtok:a``). Token texts are compared stripped and lower-cased.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from mistudio.core.features.concepts.catalogue import BY_KEY, INDEX

OPS = ("and", "or", "and not")


class Formula(NamedTuple):
    terms: tuple[tuple[str, str], ...]
    """(operator, atom) pairs; the first operator is empty."""

    @staticmethod
    def atom(a: str) -> Formula:
        return Formula((("", a),))

    def extend(self, op: str, a: str) -> Formula:
        return Formula((*self.terms, (op, a)))

    @property
    def atoms(self) -> list[str]:
        return [a for _, a in self.terms]

    @property
    def names_concept(self) -> bool:
        """Whether the formula says more than a list of literal tokens."""
        return any(not a.startswith(("tok:", "prevtok:")) for a in self.atoms)

    def complexity(self) -> int:
        """Terms a reader must hold: a list of tokens ("the" / "a") counts as one."""
        if all(op in ("", "or") for op, _ in self.terms) and all(
                a.startswith("tok:") for a in self.atoms):
            return 1
        return len(self.terms)

    def to_text(self) -> str:
        return json.dumps([list(t) for t in self.terms], ensure_ascii=False)

    @staticmethod
    def from_text(text: str) -> Formula | None:
        try:
            terms = tuple((str(op), str(a)) for op, a in json.loads(text))
        except (ValueError, TypeError):
            return None
        return Formula(terms) if terms else None

    def shown(self) -> str:
        """The formula in symbols (the browser's detail view)."""
        out = ""
        for op, a in self.terms:
            out += f" {op.upper()} {a}" if op else a
        return out


class TokenTable(NamedTuple):
    """What atoms are evaluated on: the analysis's rows, their concepts and token texts."""

    bits: np.ndarray
    """[N, C] concepts of each analysed token."""
    prev_bits: np.ndarray
    """[N, C] concepts of the token before it in its sequence (none for a sequence's first)."""
    norm_ids: np.ndarray
    """[N] id of each token's stripped, lower-cased text."""
    prev_norm_ids: np.ndarray
    """[N] the same for the token before (-1: none)."""
    norm_index: dict[str, int]

    def atom(self, a: str, rows: np.ndarray) -> np.ndarray:
        kind, _, key = a.partition(":")
        if kind == "prev" and key in INDEX:
            return self.prev_bits[rows, INDEX[key]]
        if kind in ("tok", "prevtok"):
            want = self.norm_index.get(key, -2)
            return (self.norm_ids if kind == "tok" else self.prev_norm_ids)[rows] == want
        if a in INDEX:
            return self.bits[rows, INDEX[a]]
        return np.zeros(len(rows), dtype=bool)

    def evaluate(self, formula: Formula, rows: np.ndarray) -> np.ndarray:
        """[len(rows)] where the formula holds."""
        out = np.zeros(len(rows), dtype=bool)
        for op, a in formula.terms:
            m = self.atom(a, rows)
            out = m if not op else (out & m if op == "and" else out | m if op == "or"
                                    else out & ~m)
        return out


def _atom_words(a: str) -> str:
    kind, _, key = a.partition(":")
    if kind in ("tok", "prevtok"):
        return _quoted(key)
    concept = BY_KEY.get(key if kind == "prev" else a)
    return concept.words if concept else a


def _quoted(text: str) -> str:
    return '" " (spaces)' if text == "" else '"' + text.replace('"', "'") + '"'


def words(formula: Formula) -> str:
    """The formula as a label a person reads ("nouns after articles", "proper nouns, except
    text inside double quotes", '"the" / "a"')."""
    terms = list(formula.terms)
    if all(a.startswith("tok:") for a in formula.atoms) and all(op in ("", "or")
                                                                for op, _ in terms):
        return " / ".join(_atom_words(a) for a in formula.atoms)
    out = ""
    for i, (op, a) in enumerate(terms):
        prev = a.startswith(("prev:", "prevtok:"))
        w = _atom_words(a)
        if i == 0:
            out = f"the token after {w}" if prev else w
        elif op == "and" and prev and terms[0][1].startswith(("prev:", "prevtok:")):
            out = f"{out} (also {w})"  # both about the token before
        elif op == "and":
            out = f"{out} after {w}" if prev else f"{out}, also {w}"
        elif op == "or":
            out = f"{out} or the token after {w}" if prev else f"{out} or {w}"
        else:
            out = f"{out}, except after {w}" if prev else f"{out}, except {w}"
    return out


def _token_family(text: str) -> str:
    # a token such as "in" or "or" is a keyword only inside code: the concept says so, not this
    if "⏎" in text:
        return "line breaks"
    if text.isdigit():
        return "numbers"
    if text and all(not c.isalnum() for c in text):
        return "punctuation"
    return "specific tokens"


def family(formula: Formula) -> str:
    """The family of the formula's leading concept (its first atom that is not a token, else
    what its first token is)."""
    for a in formula.atoms:
        kind, _, key = a.partition(":")
        concept = BY_KEY.get(key if kind == "prev" else a)
        if concept is not None:
            return concept.family
    return _token_family(formula.atoms[0].partition(":")[2])
