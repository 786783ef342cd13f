"""Opening the workspace's SQLite files (the catalog, an analysis's labels) so that a full disk
or a read-only workspace is told apart from damage.

A WAL database needs its ``-wal`` and ``-shm`` files written even to be read. On a full disk or
a read-only folder (a shared class folder, a mounted backup) opening it for writing fails with
"disk I/O error" or "attempt to write a readonly database", which used to be reported as a
damaged file, and the advice to rebuild it could not work either. Here such a file is opened
read-only instead (``mode=ro``, else ``immutable=1``: the file is read as it is on disk), so
everything can be viewed, and a write says why it cannot be done. Only a file that cannot be
read at all is called damaged.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from mistudio.core.runtime.errors import ResourceError, is_disk_full

FULL, READ_ONLY = "full", "read-only"
LOW_SPACE_BYTES = 1 << 20
"""Less free space than this where a database lives, and a failed open is a full disk."""


def disk_full(err: BaseException) -> bool:
    """:func:`~mistudio.core.runtime.errors.is_disk_full`, or SQLite saying so (SQLITE_FULL)."""
    return is_disk_full(err) or "disk is full" in str(err).lower() or getattr(
        err, "sqlite_errorcode", None) == 13


def open_wal(path: Path, schema: str, timeout: float, *pragmas: str) -> sqlite3.Connection:
    """``path`` opened for writing in WAL mode with ``schema`` created (and ``pragmas`` run);
    closed again if any of that fails."""
    con = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    try:
        for pragma in ("journal_mode=WAL", *pragmas):
            con.execute(f"PRAGMA {pragma}")
        con.executescript(schema)
    except BaseException:
        con.close()
        raise
    return con


def why_unwritable(err: BaseException, path: Path) -> str | None:
    """``FULL`` or ``READ_ONLY`` when ``err`` (from opening or writing ``path``) comes from a
    full disk or a place that cannot be written, else None."""
    if disk_full(err):
        return FULL
    folder = path.parent
    if "readonly" in str(err).lower() or not os.access(folder, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        return READ_ONLY
    try:
        if shutil.disk_usage(folder).free < LOW_SPACE_BYTES:
            return FULL
    except OSError:
        pass
    return None


def unwritable_error(why: str, what: str) -> ResourceError:
    """The one line for a write refused because the disk is full or the workspace read-only."""
    if why == FULL:
        return ResourceError(f"The disk is full: {what} cannot be written (nothing was lost).",
                             "Free some space and run the command again.")
    return ResourceError(f"The workspace is read-only here: {what} cannot be written (it can "
                         "still be viewed; nothing was changed).",
                         "Copy the workspace to a folder you may write to, or ask for write "
                         "permission, then run the command again.")


def open_read_only(path: Path, probe: str) -> sqlite3.Connection:
    """``path`` opened read-only; ``probe`` (a query) must run. Raises sqlite3.DatabaseError
    when the file cannot be read at all."""
    last: sqlite3.DatabaseError | None = None
    for flags in ("mode=ro", "immutable=1"):  # immutable: no -shm needed, read as on disk
        try:
            con = sqlite3.connect(f"file:{path}?{flags}", uri=True, timeout=30,
                                  check_same_thread=False)
        except sqlite3.DatabaseError as err:
            last = err
            continue
        try:
            con.execute(probe).fetchall()
            return con
        except sqlite3.DatabaseError as err:
            con.close()
            last = err
    assert last is not None
    raise last


def open_writable_or_read_only(path: Path, open_writable: Callable[[], sqlite3.Connection],
                               probe: str) -> tuple[sqlite3.Connection, str | None]:
    """(connection, None) when ``open_writable()`` works; (read-only connection, why) when it
    fails for a full disk or a read-only place and the file can still be read. Any other
    failure is raised as it is (the caller calls it damage)."""
    try:
        return open_writable(), None
    except sqlite3.DatabaseError as err:
        why = why_unwritable(err, path) if path.exists() else None
        if why is None:
            raise
        try:
            return open_read_only(path, probe), why
        except sqlite3.DatabaseError:
            raise err from None
