"""Code concepts from Python's own tokenizer, on the spans of a text that parse as Python.

Candidate spans are interpreter sessions (lines after ``>>>`` / ``...`` prompts) and runs of
indented lines (literal blocks in reST and Markdown). A run is code when it parses as Python
(``ast.parse``) after dedenting; otherwise each of its lines that parses on its own and holds
more than a bare name is code. Only code spans get ``py:`` concepts, so "for" in prose is not a
keyword.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import textwrap
import tokenize
import warnings

import numpy as np

from mistudio.core.features.concepts.spans import line_bounds

PROMPT = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)")
BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_"))
STRING_TYPES = {tokenize.STRING} | {getattr(tokenize, n) for n in
                                    ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                                    if hasattr(tokenize, n)}
KEYS = ("code:any", "py:keyword", "py:name", "py:builtin", "py:string", "py:docstring",
        "py:number", "py:comment", "py:op", "py:call", "py:attr", "py:def_name",
        "py:decorator", "py:prompt")


def _parses(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in example strings
            ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _code_lines(text: str) -> list[list[tuple[int, int, int]]]:
    """Groups of code lines: (line start, offset where the code begins, line end)."""
    lines = line_bounds(text)
    groups: list[list[tuple[int, int, int]]] = []
    run: list[tuple[int, int, int]] = []
    session: list[tuple[int, int, int]] = []

    def close(group: list[tuple[int, int, int]]) -> None:
        if group:
            groups.append(list(group))
            group.clear()

    for a, z in lines:
        line = text[a:z]
        prompt = PROMPT.match(line)
        if prompt:
            close(run)
            session.append((a, a + prompt.end(), z))
            continue
        close(session)
        if line.strip() and len(line) - len(line.lstrip()) >= 2:
            run.append((a, a, z))
        elif line.strip():
            close(run)
    close(run)
    close(session)
    return groups


def _accepted(text: str, group: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """The group if it parses as a whole, else its single lines that parse and are not trivial."""
    source = textwrap.dedent("\n".join(text[c:z] for _, c, z in group))
    if _parses(source):
        return [group]
    out = []
    for item in group:
        line = text[item[1]:item[2]].strip()
        if _parses(line) and not re.fullmatch(r"[\w.]+", line):
            out.append([item])
    return out


def _mark_group(text: str, group: list[tuple[int, int, int]], m: dict[str, np.ndarray]) -> None:
    body = [text[c:z] for _, c, z in group]
    source = textwrap.dedent("\n".join(body))
    shift = [len(b) - len(s) for b, s in zip(body, source.split("\n"), strict=True)]
    starts = [c + d for (_, c, _), d in zip(group, shift, strict=True)]
    for a, c, z in group:
        m["code:any"][c:z] = True
        if c > a:
            m["py:prompt"][a:c] = True

    def at(row: int, col: int) -> int:
        return starts[row - 1] + col

    try:
        toks = list(tokenize.generate_tokens(io.StringIO(source + "\n").readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return
    toks = [t for t in toks if t.start[0] <= len(group) and t.end[0] <= len(group)]
    significant = [t for t in toks if t.type not in (tokenize.NL, tokenize.NEWLINE,
                                                      tokenize.INDENT, tokenize.DEDENT)]
    for i, t in enumerate(significant):
        a, z = at(*t.start), at(*t.end)
        prev = significant[i - 1] if i else None
        nxt = significant[i + 1] if i + 1 < len(significant) else None
        if t.type in STRING_TYPES:
            stmt = (prev is None or prev.end[0] < t.start[0]) and (
                nxt is None or nxt.start[0] > t.end[0])
            m["py:docstring" if stmt and t.string[:3] in ('"""', "'''") else "py:string"][a:z] = True
        elif t.type == tokenize.NUMBER:
            m["py:number"][a:z] = True
        elif t.type == tokenize.COMMENT:
            m["py:comment"][a:z] = True
        elif t.type == tokenize.OP:
            at_line_start = prev is None or prev.end[0] < t.start[0]
            m["py:decorator" if t.string == "@" and at_line_start else "py:op"][a:z] = True
        elif t.type == tokenize.NAME:
            if keyword.iskeyword(t.string) or keyword.issoftkeyword(t.string):
                m["py:keyword"][a:z] = True
                continue
            m["py:name"][a:z] = True
            if t.string in BUILTINS:
                m["py:builtin"][a:z] = True
            if prev is not None and prev.string in ("def", "class"):
                m["py:def_name"][a:z] = True
            if prev is not None and prev.string == "." and prev.end == t.start:
                m["py:attr"][a:z] = True
            if prev is not None and prev.string == "@":
                m["py:decorator"][a:z] = True
            if nxt is not None and nxt.string == "(":
                m["py:call"][a:z] = True


def code_concepts(text: str) -> dict[str, np.ndarray]:
    """Character-level ``py:`` marks of a text (see the module docstring)."""
    m = {k: np.zeros(len(text), dtype=bool) for k in KEYS}
    for group in _code_lines(text):
        for accepted in _accepted(text, group):
            _mark_group(text, accepted, m)
    return m
