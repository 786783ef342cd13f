"""Labels outlive the analysis they were written in.

An analysis is derived data: it can always be recomputed. Its labels are not: a person wrote
some of them, and the automatic ones cost minutes to hours. When an analysis is redone
(analysing again under the same name, from the CLI, the app or the quick start):

- if the SAE's weights are the same (same checksum), every label is carried over to the new
  analysis unchanged: the features are the same features;
- otherwise the previous labels database is archived inside the new analysis
  (``archived-labels/labels-TIME.sqlite``, with the checksum of the weights it described), since
  feature 1234 of new weights is a different feature, and the count is reported.

Archives of earlier runs are carried forward too, so nothing is ever dropped.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from mistudio.core.features.store import LABELS_FILE, FeatureStore, Label
from mistudio.core.store.locks import BusyError

ARCHIVE_DIR = "archived-labels"


def weights_checksum(sae_folder: Path) -> str | None:
    """sha256 of an SAE's weights file (what decides whether two analyses share features).
    Hashed once per version of the file (its size and modification time), so the Features
    tab's staleness check costs a stat when it opens an analysis again."""
    from mistudio.core.sae.io import WEIGHTS_FILE

    path = sae_folder / WEIGHTS_FILE
    try:
        st = path.stat()
    except OSError:
        return None
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stale_reason(ws: Any, analysis: str) -> str | None:
    """Why ``analysis`` no longer describes its SAE's weights (the SAE was trained again, or
    removed), or None. Cheap in the usual case: the weights are hashed only when the SAE's
    manifest is newer than the analysis."""
    art = ws.catalog.get("features", analysis)
    sae_name, made_from = art.provenance.sae, art.provenance.sae_checksum
    sae = ws.catalog.find("sae", sae_name)
    if sae is None:
        return f"its SAE {sae_name!r} is no longer in the workspace"
    if made_from is None or (sae.provenance.created or 0) <= (art.provenance.created or 0):
        return None  # unknown (an analysis older than checksums), or the SAE is older
    if weights_checksum(Path(sae.path)) == made_from:
        return None  # trained again to the same weights
    return (f"SAE {sae_name!r} was trained again after it was made: its statistics, examples "
            "and labels describe the earlier weights")


def _read_labels(db: Path) -> list[Label]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT feature, label, source, scorer, score, status, detail "
                           "FROM labels").fetchall()
    finally:
        con.close()
    return [Label(*r) for r in rows]


def carry_labels(old: Path, new: Path, old_checksum: str | None, new_checksum: str | None,
                 n_features: int) -> dict[str, Any]:
    """Carry or archive the labels of the analysis in ``old`` into the one built in ``new``
    (whose labels database exists and is empty). Returns what was done, for the manifest."""
    report: dict[str, Any] = {}
    if (old / ARCHIVE_DIR).is_dir():
        shutil.copytree(old / ARCHIVE_DIR, new / ARCHIVE_DIR, dirs_exist_ok=True)
        report["archives"] = sorted(p.name for p in (new / ARCHIVE_DIR).glob("*.sqlite"))
    db = old / LABELS_FILE
    if not db.is_file():
        return report
    try:
        labels = _read_labels(db)
    except sqlite3.DatabaseError:
        labels = None  # unreadable: archive the file as it is, never drop it
    if labels == []:
        return report
    human = sum(1 for lb in labels if lb.source == "human") if labels else None
    same = old_checksum is not None and old_checksum == new_checksum
    if labels and same and all(0 <= lb.feature < n_features for lb in labels):
        FeatureStore(new).set_labels(labels)
        report.update(carried_over=len(labels), human=human)
        return report
    (new / ARCHIVE_DIR).mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = new / ARCHIVE_DIR / f"labels-{stamp}-{(old_checksum or 'unknown')[:12]}.sqlite"
    _copy_db(db, target)
    report.update(archived=target.relative_to(new).as_posix(),
                  archived_labels=len(labels) if labels is not None else None,
                  human=human,
                  archives=sorted(p.name for p in (new / ARCHIVE_DIR).glob("*.sqlite")))
    return report


def describe(report: dict[str, Any] | None) -> str:
    """One line for the CLI and the app, or "" when there was nothing to keep."""
    if not report:
        return ""
    if report.get("carried_over"):
        return (f"{report['carried_over']:,} labels of the previous analysis (same weights) "
                f"were carried over ({report.get('human') or 0:,} written by hand).")
    if report.get("archived"):
        n = report.get("archived_labels")
        return (f"The SAE's weights changed: the previous analysis's {n:,} labels "
                f"({report.get('human') or 0:,} written by hand) are archived in "
                f"{report['archived']} inside the analysis." if n is not None else
                f"The previous labels database could not be read; it is archived as "
                f"{report['archived']}.")
    return ""


def remove_sae(ws: Any, name: str) -> dict[str, Any]:
    """Remove an SAE with the analyses made of it (derived data), after copying each analysis's
    labels to ``archive/labels/`` in the workspace: deleting an SAE on purpose must not silently
    delete the labels people wrote for it. Returns what was removed and archived."""
    ws.catalog.get("sae", name)  # a clear error if unknown
    for job in ws.catalog.running("analyze"):
        if job.params.get("sae") == name:
            raise BusyError(f"Analysis {job.target!r} of SAE {name!r} is being made (process "
                            f"{job.pid}); removing the SAE now would leave it without the "
                            "weights it describes.", "Wait for it to finish, or cancel it, "
                            "then remove the SAE.")
    removed, archived = [], []
    for art in ws.catalog.list("features"):
        if art.provenance.sae != name:
            continue
        db = Path(art.path) / LABELS_FILE
        if db.is_file() and _read_labels_or_none(db) != []:
            folder = ws.root / "archive" / "labels"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{art.name}-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
            _copy_db(db, target)
            archived.append(str(target))
        ws.remove("features", art.name)
        removed.append(art.name)
    ws.remove("sae", name)
    return {"removed": name, "analyses_removed": removed, "labels_archived": archived}


def _read_labels_or_none(db: Path) -> list[Label] | None:
    try:
        return _read_labels(db)
    except sqlite3.DatabaseError:
        return None


def _copy_db(db: Path, target: Path) -> None:
    """A consistent copy of an SQLite file, whatever its WAL holds."""
    try:
        src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
    except sqlite3.DatabaseError:
        shutil.copy2(db, target)
