"""Typographic, layout and markup concepts, from the text alone (no language pipeline).

Quotes, brackets and backticks are paired within a line (a quote left open at the end of a line
closes there: prose rarely quotes across lines, and an apostrophe must not open one). A single
quote opens only after a non-letter and closes only before one, so "don't" is not a quotation.
"""

from __future__ import annotations

import re

import numpy as np

from mistudio.core.features.concepts.spans import Spans, at_anchors, line_bounds

PUNCT = {
    "p:period": ".", "p:comma": ",", "p:colon": ":", "p:semicolon": ";", "p:question": "?",
    "p:exclaim": "!", "p:dash": "-–—", "p:slash": "/\\", "p:asterisk": "*", "p:underscore": "_",
    "p:operator": "+=<>%^|&~", "p:at": "@", "p:hash": "#", "p:dquote": '"“”',
    "p:squote": "'‘’", "p:backtick": "`", "p:open": "([{", "p:close": ")]}",
}
UNDERLINE = re.compile(r"^\s*([=\-~*^#+])\1{2,}\s*$")
LIST_ITEM = re.compile(r"^\s*([*+\-•]|\d+[.)]|#\.)\s+\S")
ROLE = re.compile(r":[a-z][\w-]*:`[^`]*`|^\s*\.\. [\w-]+::")
BACKTICKS = re.compile(r"(`+)(.+?)\1")


def token_concepts(pieces: list[str], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Concepts read from each token's own text: capitals, digits, punctuation, spaces."""
    stripped = [p.strip() for p in pieces]
    out: dict[str, np.ndarray] = {}

    def mark(key: str, test) -> None:
        out[key] = np.fromiter((bool(s) and test(s) for s in stripped), bool, len(pieces))

    mark("cap:initial", lambda s: s[0].isupper() and s[1:].islower() if len(s) > 1
         else s.isupper())
    mark("cap:all", lambda s: len(s) > 1 and s.isupper() and s.isalpha())
    mark("num:digits", lambda s: any(c.isdigit() for c in s))
    for key, chars in PUNCT.items():
        mark(key, lambda s, chars=chars: all(c in chars for c in s))
    starts_word = np.fromiter((p[:1].isspace() for p in pieces), bool, len(pieces))
    alnum = np.fromiter((s[:1].isalnum() for s in stripped), bool, len(pieces))
    prev_alnum = np.zeros(len(pieces), bool)
    prev_alnum[1:] = [p[-1:].isalnum() for p in pieces[:-1]]
    first = positions <= 1  # the sequence's first text token (after a BOS at 0)
    out["piece:start"] = alnum & (starts_word | ~prev_alnum | first)
    out["piece:cont"] = alnum & ~starts_word & prev_alnum & ~first
    out["ws:newline"] = np.fromiter(("\n" in p for p in pieces), bool, len(pieces))
    out["ws:space"] = np.fromiter((len(p) > 1 and not p.strip() and "\n" not in p for p in pieces),
                                  bool, len(pieces))
    return out


def _paired(line: str, base: int, mask: np.ndarray, opening: str, closing: str) -> None:
    depth = 0
    for i, ch in enumerate(line):
        if ch in closing and depth:
            depth -= 1
        if depth:
            mask[base + i] = True
        if ch in opening:
            depth += 1


def _quoted(line: str, base: int, mask: np.ndarray, quote: str, word_bound: bool) -> None:
    open_at = -1
    for i, ch in enumerate(line):
        if ch not in quote:
            continue
        before = line[i - 1] if i else " "
        after = line[i + 1] if i + 1 < len(line) else " "
        if open_at < 0 and (not word_bound or not before.isalnum()):
            open_at = i
        elif open_at >= 0 and (not word_bound or not after.isalnum()):
            mask[base + open_at + 1: base + i] = True
            open_at = -1


def char_concepts(text: str) -> dict[str, np.ndarray]:
    """Character-level marks: inside quotes / brackets / backticks, markup, layout."""
    n = len(text)
    keys = ("in:dquote", "in:squote", "in:paren", "in:bracket", "in:brace", "in:backtick",
            "md:heading", "md:underline", "md:list", "md:literal", "md:role", "md:grammar",
            "at:line_start", "at:indented", "at:paragraph")
    m = {k: np.zeros(n + 1, dtype=bool) for k in keys}
    lines = line_bounds(text)
    literal_indent = None
    prev_blank = True
    for li, (a, z) in enumerate(lines):
        line = text[a:z]
        _quoted(line, a, m["in:dquote"], '"“”', False)
        _quoted(line, a, m["in:squote"], "'‘’", True)
        _paired(line, a, m["in:paren"], "(", ")")
        _paired(line, a, m["in:bracket"], "[", "]")
        _paired(line, a, m["in:brace"], "{", "}")
        for hit in BACKTICKS.finditer(line):
            m["in:backtick"][a + hit.start(2): a + hit.end(2)] = True
        for hit in ROLE.finditer(line):
            m["md:role"][a + hit.start(): a + hit.end()] = True
        body = line.lstrip()
        indent = len(line) - len(body)
        if body:
            m["at:line_start"][a + indent] = True
            if prev_blank:
                m["at:paragraph"][a + indent] = True
            if indent >= 2:
                m["at:indented"][a:z] = True
        if UNDERLINE.match(line) and li > 0 and text[lines[li - 1][0]:lines[li - 1][1]].strip():
            m["md:underline"][a:z] = True
            pa, pz = lines[li - 1]
            m["md:heading"][pa:pz] = True
        elif body.startswith("#") and body[1:2] in (" ", "#"):
            m["md:heading"][a:z] = True
        if LIST_ITEM.match(line):
            m["md:list"][a:z] = True
        if "::=" in line:
            m["md:grammar"][a:z] = True
        if literal_indent is not None and body:
            if indent > literal_indent:
                m["md:literal"][a:z] = True
            else:
                literal_indent = None
        if body.endswith("::") and "::=" not in body:
            literal_indent = indent
        prev_blank = not body
    return {k: v[:n] for k, v in m.items()}


def text_concepts(pieces: list[str], spans: Spans, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Every text-only concept of a block's tokens."""
    out = token_concepts(pieces, positions)
    for key, mask in char_concepts(spans.text).items():
        out[key] = at_anchors(mask, spans)
    out["at:first"] = positions < 4
    return out
