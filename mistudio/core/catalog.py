"""The SQLite catalog: an index of every artifact and job in a workspace.

Each artifact's own ``manifest.json`` is the source of truth; the catalog indexes them so the
CLI and the app can list and look things up instantly, and :func:`rebuild_catalog` recreates it
from the manifests if it is ever lost or damaged. WAL mode lets the app read while a CLI job
writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from mistudio.core.errors import CorruptedError, NotFoundError

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
REBUILD_FIX = "Run `mistudio catalog rebuild` to re-index the workspace from its manifests."


class Artifact(NamedTuple):
    """One catalog row."""

    kind: str
    """dataset, tokenized, activations, model, sae or features."""
    name: str
    status: str
    """complete, partial (resumable) or failed."""
    path: str
    config: dict[str, Any]
    """How it was made (the arguments)."""
    provenance: dict[str, Any]
    """What it was made from (names of other artifacts, versions)."""
    summary: dict[str, Any]
    """Numbers to show in lists (documents, tokens, shape)."""
    created: float
    updated: float


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
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise CorruptedError(f"The workspace catalog {path} is damaged ({err}).", REBUILD_FIX) from err

    def close(self) -> None:
        self._db.close()

    # -- artifacts ---------------------------------------------------------------------------
    def put(
        self,
        kind: str,
        name: str,
        path: Path | str,
        status: str = "complete",
        config: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self._db:
            self._db.execute(
                """INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(kind, name) DO UPDATE SET status=excluded.status,
                   path=excluded.path, config=excluded.config, provenance=excluded.provenance,
                   summary=excluded.summary, updated=excluded.updated""",
                (kind, name, status, str(path), _dumps(config), _dumps(provenance),
                 _dumps(summary), now, now),
            )

    def get(self, kind: str, name: str) -> Artifact:
        row = self._db.execute(
            "SELECT * FROM artifacts WHERE kind=? AND name=?", (kind, name)
        ).fetchone()
        if row is None:
            known = ", ".join(a.name for a in self.list(kind)) or "none yet"
            raise NotFoundError(
                f"There is no {kind} named {name!r} in this workspace (known: {known}).",
                f"Check the name with `mistudio {_list_command(kind)}`.",
            )
        return _artifact(row)

    def find(self, kind: str, name: str) -> Artifact | None:
        row = self._db.execute(
            "SELECT * FROM artifacts WHERE kind=? AND name=?", (kind, name)
        ).fetchone()
        return _artifact(row) if row else None

    def list(self, kind: str | None = None) -> list[Artifact]:
        if kind is None:
            rows = self._db.execute("SELECT * FROM artifacts ORDER BY kind, name")
        else:
            rows = self._db.execute("SELECT * FROM artifacts WHERE kind=? ORDER BY name", (kind,))
        return [_artifact(r) for r in rows.fetchall()]

    def delete(self, kind: str, name: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM artifacts WHERE kind=? AND name=?", (kind, name))

    # -- jobs --------------------------------------------------------------------------------
    def start_job(self, kind: str, target: str, params: dict[str, Any]) -> int:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO jobs (kind, target, status, params, pid, started) VALUES (?,?,?,?,?,?)",
                (kind, target, "running", _dumps(params), os.getpid(), time.time()),
            )
        return int(cur.lastrowid)

    def finish_job(self, job_id: int, status: str, message: str = "") -> None:
        with self._db:
            self._db.execute(
                "UPDATE jobs SET status=?, message=?, finished=? WHERE id=?",
                (status, message, time.time(), job_id),
            )

    def jobs(self, limit: int = 50) -> list[Job]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        jobs = [Job(r[0], r[1], r[2], r[3], _loads(r[4], "job", str(r[0])), r[5], r[6], r[7], r[8])
                for r in rows]
        # A 'running' job whose process is gone was interrupted (crash, kill, power loss).
        return [j._replace(status="interrupted") if j.status == "running" and not _alive(j.pid)
                else j for j in jobs]


def _artifact(row: tuple) -> Artifact:
    kind, name = row[0], row[1]
    return Artifact(kind, name, row[2], row[3], _loads(row[4], kind, name),
                    _loads(row[5], kind, name), _loads(row[6], kind, name), row[7], row[8])


def _dumps(value: dict[str, Any] | None) -> str:
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


def _list_command(kind: str) -> str:
    return {"dataset": "datasets list", "model": "models list", "tokenized": "tokenized list",
            "activations": "activations list", "sae": "saes list"}.get(kind, f"{kind} list")


def rebuild_catalog(root: Path) -> tuple[Path | None, int]:
    """Recreate the catalog from the manifests on disk. Returns (backup of old file, rows).

    A damaged catalog file is moved aside (never deleted), so nothing is lost.
    """
    from mistudio.core.workspace import ARTIFACT_DIRS, MANIFEST

    path = root / "metadata" / "catalog.sqlite"
    backup = None
    if path.exists():
        backup = path.with_name(f"catalog.sqlite.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        os.replace(path, backup)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, backup.with_name(backup.name + suffix))
    catalog = Catalog(path)
    count = 0
    try:
        for kind, sub in ARTIFACT_DIRS.items():
            for folder in sorted((root / sub).glob("*")):
                manifest = folder / MANIFEST
                if folder.name.startswith(".") or not manifest.is_file():
                    continue
                try:
                    data = json.loads(manifest.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue  # a damaged manifest is reported when the artifact is used
                if data.get("kind") != kind:
                    continue
                catalog.put(kind, folder.name, folder, data.get("status", "complete"),
                            data.get("config"), data.get("provenance"), data.get("summary"))
                count += 1
    finally:
        catalog.close()
    return backup, count
