"""The SQLite catalog: an index of every artifact and job in a workspace.

Each artifact's own ``manifest.json`` is the source of truth; the catalog indexes them so the
CLI and the app can list and look things up instantly. :func:`rebuild_catalog` re-indexes the
manifests in place (keeping the job history, safe beside running jobs), or replaces a damaged
file; a catalog created where artifacts already exist (deleted, or a workspace copied without
it) indexes them on its own. Paths are stored relative to the workspace root, so copies and
moves keep working. WAL mode lets the app read while a CLI job
writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from mistudio.core.runtime.errors import CorruptedError, NotFoundError, ResourceError
from mistudio.core.store.layout import ARTIFACT_DIRS, MANIFEST
from mistudio.core.store.manifests import provenance_type, summary_type
from mistudio.core.store.records import Record
from mistudio.core.store.sqlite_files import (
    FULL,
    disk_full,
    open_wal,
    open_writable_or_read_only,
    unwritable_error,
    why_unwritable,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    path TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    provenance TEXT NOT NULL DEFAULT '{}',
    summary TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    message TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    started REAL NOT NULL,
    finished REAL
);
"""
REBUILD_FIX = "«do:rebuild_catalog» to re-index the workspace from its manifests."


class Artifact(NamedTuple):
    """One catalog row, typed by its kind (:mod:`mistudio.core.store.manifests`)."""

    kind: str
    """dataset, tokenized, activations, model, sae or features."""
    name: str
    status: str
    """complete, or partial (a build that can be resumed)."""
    path: str
    config: dict[str, Any]
    """How it was made: the producer's configuration, as JSON."""
    provenance: Any
    """What it was made from: the kind's provenance record (``SAEProvenance``, ...)."""
    summary: Any
    """Figures to show in lists: the kind's summary record (``ActivationsSummary``, ...)."""
    created: float
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "provenance": self.provenance.to_json(),
                "summary": self.summary.to_json()}


class Job(NamedTuple):
    id: int
    kind: str
    target: str
    status: str
    """running, done, failed, cancelled or interrupted (its process died)."""
    params: dict[str, Any]
    message: str
    pid: int | None
    started: float
    finished: float | None


class Catalog:
    """Artifact paths are stored relative to the workspace root (``raw/NAME``), so a copied
    or moved workspace keeps finding its own artifacts and never another's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent.parent
        new = not path.exists()
        try:
            self._db, self.unwritable = open_writable_or_read_only(
                path, lambda: open_wal(path, _SCHEMA, 30, "synchronous=NORMAL"),
                "SELECT COUNT(*) FROM artifacts")
        except sqlite3.DatabaseError as err:
            if disk_full(err):
                raise self._refused(FULL) from err
            raise CorruptedError(f"The workspace catalog {path} is damaged ({err}).",
                                 REBUILD_FIX) from err
        # self.unwritable: None, or why the catalog is open read-only (a full disk, a read-only
        # workspace): everything can be read, and a write raises a ResourceError saying why
        if new:  # a fresh catalog beside existing artifacts: index them rather than hide them
            self.reindex()

    def close(self) -> None:
        self._db.close()

    def _refused(self, why: str) -> ResourceError:
        return unwritable_error(why, f"the workspace catalog {self.path}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; a full disk or a read-only workspace is a
        :class:`ResourceError`, not damage."""
        if self.unwritable:
            raise self._refused(self.unwritable)
        try:
            with self._db:
                yield self._db
        except sqlite3.OperationalError as err:
            why = why_unwritable(err, self.path)
            if why is not None:
                raise self._refused(why) from err
            raise

    # -- artifacts ---------------------------------------------------------------------------
    def put(
        self,
        kind: str,
        name: str,
        path: Path | str,
        status: str = "complete",
        config: dict[str, Any] | None = None,
        provenance: Record | dict[str, Any] | None = None,
        summary: Record | dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                """INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(kind, name) DO UPDATE SET status=excluded.status,
                   path=excluded.path, config=excluded.config, provenance=excluded.provenance,
                   summary=excluded.summary, updated=excluded.updated""",
                (kind, name, status, self._relative(kind, path), _dumps(config),
                 _dumps(provenance), _dumps(summary), now, now),
            )

    def _relative(self, kind: str, path: Path | str) -> str:
        """``SUBDIR/FOLDER`` of an artifact folder inside this workspace."""
        path = Path(path)
        sub = ARTIFACT_DIRS[kind]
        if path.parent.name != sub or path.parent.parent.resolve() != self.root.resolve():
            raise ValueError(f"{path} is not a {kind} folder of the workspace {self.root}")
        return f"{sub}/{path.name}"

    def _absolute(self, kind: str, stored: str) -> str:
        """The folder a stored path means in this workspace. Catalogs written by earlier
        versions hold absolute paths, possibly of the workspace this one was copied from: only
        the folder's name is kept."""
        folder = Path(stored).name
        return str(self.root / ARTIFACT_DIRS[kind] / folder)

    def _artifact(self, row: tuple) -> Artifact:
        art = _artifact(row)
        return art._replace(path=self._absolute(art.kind, art.path))

    def get(self, kind: str, name: str) -> Artifact:
        row = self._db.execute(
            "SELECT * FROM artifacts WHERE kind=? AND name=?", (kind, name)
        ).fetchone()
        if row is None:
            known = ", ".join(a.name for a in self.list(kind)) or "none yet"
            raise NotFoundError(
                f"There is no {kind} named {name!r} in this workspace (known: {known}).",
                f"Check the name («do:list_artifacts={kind}»).",
            )
        return self._artifact(row)

    def find(self, kind: str, name: str) -> Artifact | None:
        row = self._db.execute(
            "SELECT * FROM artifacts WHERE kind=? AND name=?", (kind, name)
        ).fetchone()
        return self._artifact(row) if row else None

    def list(self, kind: str | None = None) -> list[Artifact]:
        if kind is None:
            rows = self._db.execute("SELECT * FROM artifacts ORDER BY kind, name")
        else:
            rows = self._db.execute("SELECT * FROM artifacts WHERE kind=? ORDER BY name", (kind,))
        return [self._artifact(r) for r in rows.fetchall()]

    def delete(self, kind: str, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM artifacts WHERE kind=? AND name=?", (kind, name))

    def reindex(self) -> Reindexed:
        """Index every manifest on disk, in place and in one transaction: rows of artifacts
        found are refreshed, rows of partial (resumable) builds whose folder is still there are
        kept, rows of folders that are gone are dropped. Jobs are untouched. Safe beside running
        jobs: a job that registers its artifact meanwhile waits for the transaction, then
        writes its own (newer) row."""
        found, skipped = scan_manifests(self.root)
        now = time.time()
        with self._write() as db:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT kind, name, status, path FROM artifacts").fetchall()
            for kind, name, status, stored in rows:
                if (kind, name) in found:
                    continue
                folder = Path(self._absolute(kind, stored))
                if status == "partial" and folder.is_dir():
                    continue  # a build in progress or resumable: its folder has no manifest yet
                db.execute("DELETE FROM artifacts WHERE kind=? AND name=?", (kind, name))
            for (kind, name), (folder, data) in found.items():
                db.execute(
                    """INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(kind, name) DO UPDATE SET status=excluded.status,
                       path=excluded.path, config=excluded.config,
                       provenance=excluded.provenance, summary=excluded.summary,
                       updated=excluded.updated""",
                    (kind, name, data.get("status", "complete"), self._relative(kind, folder),
                     _dumps(data.get("config")), _dumps(data.get("provenance")),
                     _dumps(data.get("summary")), now, now))
        return Reindexed(len(found), skipped)

    # -- jobs --------------------------------------------------------------------------------
    def start_job(self, kind: str, target: str, params: dict[str, Any]) -> int:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO jobs (kind, target, status, params, pid, started) VALUES (?,?,?,?,?,?)",
                (kind, target, "running", _dumps(params), os.getpid(), time.time()),
            )
        return int(cur.lastrowid)

    def finish_job(self, job_id: int, status: str, message: str = "") -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET status=?, message=?, finished=? WHERE id=?",
                (status, message, time.time(), job_id),
            )

    def running(self, kind: str) -> list[Job]:
        """Jobs of ``kind`` running now (their process is alive)."""
        rows = self._db.execute("SELECT * FROM jobs WHERE status='running' AND kind=?",
                                (kind,)).fetchall()
        return [job for job in map(_job, rows) if _alive(job.pid)]

    def jobs(self, limit: int = 50) -> list[Job]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        jobs = [_job(r) for r in rows]
        # A 'running' job whose process is gone was interrupted (crash, kill, power loss).
        return [j._replace(status="interrupted") if j.status == "running" and not _alive(j.pid)
                else j for j in jobs]


def _job(r: tuple) -> Job:
    return Job(r[0], r[1], r[2], r[3], _loads(r[4], "job", str(r[0])), r[5], r[6], r[7], r[8])


def _artifact(row: tuple) -> Artifact:
    kind, name = row[0], row[1]
    return Artifact(kind, name, row[2], row[3], _loads(row[4], kind, name),
                    provenance_type(kind).from_json(_loads(row[5], kind, name)),
                    summary_type(kind).from_json(_loads(row[6], kind, name)), row[7], row[8])


def _dumps(value: Record | dict[str, Any] | None) -> str:
    if isinstance(value, Record):
        value = value.to_json()
    return json.dumps(value or {}, sort_keys=True, default=str)


def _loads(text: str, kind: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise CorruptedError(f"The catalog row for {kind} {name!r} is corrupted ({err}).",
                             REBUILD_FIX) from err
    if not isinstance(value, dict):
        raise CorruptedError(f"The catalog row for {kind} {name!r} is corrupted.", REBUILD_FIX)
    return value


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reindexed(NamedTuple):
    """What a re-index found."""

    count: int
    """Artifacts indexed."""
    skipped: list[tuple[str, str]]
    """(folder, why) of every folder that could not be indexed."""


def scan_manifests(root: Path) -> tuple[dict[tuple[str, str], tuple[Path, dict[str, Any]]],
                                        list[tuple[str, str]]]:
    """Every artifact folder with a readable manifest of the right kind, keyed by (kind, name),
    and the folders that could not be read, each with the reason."""
    found: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    skipped: list[tuple[str, str]] = []
    for kind, sub in ARTIFACT_DIRS.items():
        for folder in sorted((root / sub).glob("*")):
            if folder.name.startswith(".") or not folder.is_dir():
                continue  # builds in progress, old copies, stray files
            rel = f"{sub}/{folder.name}"
            manifest = folder / MANIFEST
            if not manifest.is_file():
                skipped.append((rel, "no manifest.json"))
                continue
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                skipped.append((rel, f"manifest.json cannot be read ({err})"))
                continue
            if not isinstance(data, dict) or data.get("kind") != kind:
                skipped.append((rel, f"manifest.json is not a {kind} manifest"))
                continue
            found[(kind, folder.name)] = (folder, data)
    return found, skipped


def rebuild_catalog(root: Path) -> tuple[Path | None, Reindexed]:
    """Re-index the workspace from its manifests. Returns (backup of a damaged file, result).

    A healthy catalog is re-indexed in place (job history kept). A damaged one is replaced: the
    new file is built beside it and renamed over it only when complete, and the damaged file is
    moved aside, never deleted (so a full disk can never leave an empty catalog behind).
    """
    path = root / "metadata" / "catalog.sqlite"
    try:
        catalog = Catalog(path)
        try:
            if catalog._db.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return None, catalog.reindex()
        finally:
            catalog.close()
    except CorruptedError:
        pass
    except sqlite3.DatabaseError as err:
        if disk_full(err):
            raise unwritable_error(FULL, f"the workspace catalog {path}") from err
    new = path.with_name("catalog.sqlite.new")
    for f in (new, new.with_name(new.name + "-wal"), new.with_name(new.name + "-shm")):
        f.unlink(missing_ok=True)
    try:
        fresh = Catalog(new)  # indexes the manifests as it is created
        result = fresh.reindex()
        _salvage_jobs(path, fresh)
        fresh._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fresh.close()
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    backup = path.with_name(f"catalog.sqlite.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    if path.exists():
        os.replace(path, backup)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, backup.with_name(backup.name + suffix))
    os.replace(new, path)
    return (backup if backup.exists() else None), result


def _salvage_jobs(damaged: Path, into: Catalog) -> None:
    """Copy what job history can still be read from a damaged catalog (best effort)."""
    if not damaged.exists():
        return
    try:
        old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        try:
            rows = old.execute("SELECT kind, target, status, params, message, pid, started, "
                               "finished FROM jobs ORDER BY id").fetchall()
        finally:
            old.close()
    except sqlite3.DatabaseError:
        return
    with into._write() as db:
        db.executemany("INSERT INTO jobs (kind, target, status, params, message, pid, started, "
                       "finished) VALUES (?,?,?,?,?,?,?,?)", rows)
