"""One writer per artifact, across processes: the CLI, the app and a second terminal.

Before a job touches an artifact's folder (its partial build, its checkpoint, its labels) it takes
an exclusive lock on ``metadata/locks/KIND.NAME.lock``. A second job for the same artifact is
refused at once with one line naming the job that holds it and its process id, instead of
resuming from a checkpoint that is still being written or deleting a folder under a running job.

The locks are operating-system file locks (``filelock``: ``flock`` on Unix, ``LockFileEx`` on
Windows): they belong to the process, so the kernel releases them when it dies, kill -9 included.
A lock left by a dead process is therefore simply free, and the next job takes it over; the
``.owner.json`` beside it only says who holds it, for the message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mistudio.core.runtime.errors import MiStudioError

LOCK_DIR = "locks"


class BusyError(MiStudioError):
    """Another job is writing the same artifact."""


def _paths(root: Path, kind: str, name: str) -> tuple[Path, Path]:
    folder = root / "metadata" / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}.{name}.lock", folder / f"{kind}.{name}.owner.json"


_held: dict[str, tuple[FileLock, int, int]] = {}
"""Locks this process holds: path -> (lock, holding thread, depth)."""
_held_guard = threading.Lock()


@contextmanager
def writer_lock(root: Path, kind: str, name: str, job: str) -> Iterator[None]:
    """Hold the write lock of artifact ``kind``/``name`` for ``job`` (e.g. "train"), or raise
    :class:`BusyError` naming the holder: another process, or another thread of this one (the
    app runs jobs on worker threads). Re-entrant within one thread."""
    lock_path, owner_path = _paths(root, kind, name)
    key = str(lock_path.resolve())
    me = threading.get_ident()
    with _held_guard:
        held = _held.get(key)
        if held is not None and held[1] != me:
            raise _busy(kind, name, owner_path)
        if held is None:
            lock = FileLock(key, timeout=0, thread_local=False)
            try:
                lock.acquire()
            except Timeout:
                raise _busy(kind, name, owner_path) from None
            owner_path.write_text(json.dumps({"pid": os.getpid(), "job": job,
                                              "started": time.time()}))
            held = (lock, me, 0)
        _held[key] = (held[0], me, held[2] + 1)
    try:
        yield
    finally:
        with _held_guard:
            lock, _, depth = _held[key]
            if depth > 1:
                _held[key] = (lock, me, depth - 1)
            else:
                del _held[key]
                owner_path.unlink(missing_ok=True)
                lock.release()


def _busy(kind: str, name: str, owner_path: Path) -> BusyError:
    return BusyError(f"{_label(kind)} {name!r} is being written by another job "
                     f"({_holder(owner_path)}).",
                     "Wait for it to finish or cancel it, then run this again.")


def _holder(owner_path: Path) -> str:
    try:
        owner = json.loads(owner_path.read_text())
        started = time.strftime("%H:%M:%S", time.localtime(owner["started"]))
        return f"{owner['job']}, pid {owner['pid']}, started {started}"
    except (OSError, ValueError, KeyError):
        return "process unknown"


def _label(kind: str) -> str:
    return {"sae": "SAE", "features": "Analysis", "activations": "Activation set",
            "tokenized": "Tokenized set", "dataset": "Dataset", "model": "Model"}.get(kind, kind)
