"""An analysis's labels file (``labels.sqlite``): opened for reading or writing, a full disk or
a read-only workspace told apart from damage, and a damaged file recovered without losing it.

Hand labels are a person's work. A damaged file is therefore never deleted or overwritten:
:func:`recover_labels` moves it aside under a dated name, copies every label that can still be
read from it into a fresh file, and says how many it saved.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from mistudio.core.runtime.errors import CorruptedError
from mistudio.core.store.sqlite_files import (
    READ_ONLY,
    open_wal,
    open_writable_or_read_only,
    unwritable_error,
    why_unwritable,
)

LABELS_FILE = "labels.sqlite"
HUMAN_JOURNAL = "human_labels.jsonl"
"""Every hand label is also appended here, one JSON line per change: a damaged database can lose
its pages (a broken first page loses the whole table), but a person's words come back from
this file."""
LABEL_COLUMNS = ("feature", "label", "source", "scorer", "score", "status", "detail", "updated",
                 "family", "detection", "fuzzing", "formula")
ADDED_COLUMNS = {"family": "TEXT", "detection": "REAL", "fuzzing": "REAL", "formula": "TEXT"}
"""Columns newer than the first labels files; added in place when an older file is opened."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    feature INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    source TEXT NOT NULL,      -- concept, pattern, llm:MODEL, endpoint:MODEL, plugin:NAME, human
    scorer TEXT,               -- rule, judge:MODEL, plugin:NAME or NULL
    score REAL,                -- balanced accuracy on held-out contexts, or NULL
    status TEXT NOT NULL DEFAULT 'ok',  -- ok, or failed (the explainer gave nothing usable)
    detail TEXT,
    updated REAL NOT NULL,
    family TEXT,               -- the label's family (quotes, negation, names, ...)
    detection REAL,            -- held-out detection balanced accuracy
    fuzzing REAL,              -- held-out fuzzing balanced accuracy
    formula TEXT               -- a rule label's formula (JSON), or NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS labels_fts USING fts5(
    label, content='labels', content_rowid='feature', tokenize='unicode61');
CREATE TRIGGER IF NOT EXISTS labels_ai AFTER INSERT ON labels BEGIN
    INSERT INTO labels_fts(rowid, label) VALUES (new.feature, new.label); END;
CREATE TRIGGER IF NOT EXISTS labels_ad AFTER DELETE ON labels BEGIN
    INSERT INTO labels_fts(labels_fts, rowid, label) VALUES ('delete', old.feature, old.label); END;
CREATE TRIGGER IF NOT EXISTS labels_au AFTER UPDATE ON labels BEGIN
    INSERT INTO labels_fts(labels_fts, rowid, label) VALUES ('delete', old.feature, old.label);
    INSERT INTO labels_fts(rowid, label) VALUES (new.feature, new.label); END;
"""


def _add_columns(con: sqlite3.Connection) -> None:
    """Bring a labels file from before the newer columns up to date (a no-op after)."""
    have = {r[1] for r in con.execute("PRAGMA table_info(labels)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in have:
            con.execute(f"ALTER TABLE labels ADD COLUMN {name} {kind}")
    con.commit()


def _empty() -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA)
    return con


def open_labels(folder: Path, write: bool = False) -> sqlite3.Connection:
    """The labels of the analysis in ``folder``. For reading, a full disk or a read-only
    workspace opens the file read-only (and a file that could not be created reads as no
    labels); for ``write`` they raise a :class:`ResourceError` saying why. A file that cannot
    be read is a :class:`CorruptedError` naming the recovery, and is left as it is."""
    path = folder / LABELS_FILE
    try:
        con, why = open_writable_or_read_only(path, lambda: _opened(path),
                                              "SELECT COUNT(*) FROM labels")
    except sqlite3.DatabaseError as err:
        why = why_unwritable(err, path) if not path.exists() else None
        if why is None:
            raise damaged(path, err) from err
        if write:
            raise unwritable_error(why, f"the labels file {path}") from err
        return _empty()  # nothing labelled yet, and nowhere to create the file
    if write and why:
        con.close()
        raise unwritable_error(why, f"the labels file {path}")
    return con


def _opened(path: Path) -> sqlite3.Connection:
    con = open_wal(path, SCHEMA, 10)
    try:
        _add_columns(con)
    except BaseException:
        con.close()
        raise
    return con


CORRUPT_WORDS = ("malformed", "not a database", "corrupt")


@contextmanager
def labels_db(folder: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """:func:`open_labels` as a context: a write is committed as one transaction, the file is
    closed after, and damage found while reading (a malformed page deep in the file) is the
    same :class:`CorruptedError` as damage found when opening."""
    path = folder / LABELS_FILE
    con = open_labels(folder, write)
    try:
        with con:
            yield con
    except sqlite3.DatabaseError as err:
        if any(w in str(err).lower() for w in CORRUPT_WORDS):
            raise damaged(path, err) from err
        why = why_unwritable(err, path) if write else None
        if why is not None:
            raise unwritable_error(why, f"the labels file {path}") from err
        raise
    finally:
        con.close()


def damaged(path: Path, err: BaseException) -> CorruptedError:
    analysis = path.parent.name
    return CorruptedError(
        f"The labels file of analysis {analysis!r} is damaged ({err}); it is kept as it is.",
        f"«do:recover_labels={analysis}» (it keeps the damaged file and copies every label "
        "it can still read into a new one).")


class Recovered(NamedTuple):
    kept_as: Path
    """The damaged file, moved aside (never deleted)."""
    saved: int
    """Labels copied from it into the new file."""
    human: int
    """Of those, labels a person wrote."""


def recover_labels(folder: Path) -> Recovered:
    """Move a damaged labels file aside and start a new one with every label that can still be
    read from it. Refused (nothing moved) where the folder cannot be written."""
    path = folder / LABELS_FILE
    kept = path.with_name(f"{LABELS_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = _with_journal(_readable_rows(path), journaled(folder))
    try:
        for suffix in ("", "-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.replace(kept.with_name(kept.name + suffix))
    except OSError as err:
        raise unwritable_error(why_unwritable(err, path) or READ_ONLY,
                               f"the labels file {path}") from err
    con = open_wal(path, SCHEMA, 10)
    try:
        with con:
            con.executemany(f"INSERT OR REPLACE INTO labels({', '.join(LABEL_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(LABEL_COLUMNS))})", rows)
    finally:
        con.close()
    return Recovered(kept, len(rows), sum(1 for r in rows if r[2] == "human"))


def journal_human(folder: Path, rows: list[tuple]) -> None:
    """Append hand-label rows (in :data:`LABEL_COLUMNS` order) to the journal, flushed to disk."""
    lines = "".join(json.dumps(dict(zip(LABEL_COLUMNS, r, strict=True)), ensure_ascii=False)
                    + "\n" for r in rows if r[2] == "human")
    if not lines:
        return
    with open(folder / HUMAN_JOURNAL, "a", encoding="utf-8") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())


def journaled(folder: Path) -> dict[int, tuple]:
    """The last journaled hand label of each feature (a line cut short by a crash is skipped)."""
    out: dict[int, tuple] = {}
    try:
        text = (folder / HUMAN_JOURNAL).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            row = tuple(entry.get(c) for c in LABEL_COLUMNS)  # older lines lack newer keys
            if row[1] is None:
                continue
            out[int(entry["feature"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _with_journal(rows: list[tuple], journal: dict[int, tuple]) -> list[tuple]:
    """The database's rows, with each journaled hand label put back where the database lost it
    or holds an older one."""
    by_feature = {int(r[0]): r for r in rows}
    for feature, entry in journal.items():
        have = by_feature.get(feature)
        if have is None or (have[7] or 0) <= (entry[7] or 0):
            by_feature[feature] = entry
    return [by_feature[f] for f in sorted(by_feature)]


def _readable_rows(path: Path) -> list[tuple]:
    """Every label row SQLite can still read: the whole table, else row by row by feature
    (a damaged page loses only the rows on it)."""
    try:
        con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    except sqlite3.DatabaseError:
        return []
    try:
        return _rows_of(con)
    finally:
        con.close()


def _rows_of(con: sqlite3.Connection) -> list[tuple]:
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(labels)")}
    except sqlite3.DatabaseError:
        have = set(LABEL_COLUMNS)
    # an older file lacks the newer columns: read them as NULL
    query = f"SELECT {', '.join(c if c in have else 'NULL' for c in LABEL_COLUMNS)} FROM labels"
    try:
        return con.execute(query).fetchall()
    except sqlite3.DatabaseError:
        pass
    try:
        ids = [r[0] for r in con.execute("SELECT feature FROM labels")]
    except sqlite3.DatabaseError:
        return []
    rows: list[tuple] = []
    for feature in ids:
        try:
            rows += con.execute(query + " WHERE feature = ?", (feature,)).fetchall()
        except sqlite3.DatabaseError:
            continue
    return rows
