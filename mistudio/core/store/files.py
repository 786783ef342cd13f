"""Files written all or nothing: an artifact's folder renamed into place when complete, and
single files through a temporary name, fsynced, then renamed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mistudio.core.runtime.errors import CorruptedError
from mistudio.core.store.manifests import manifest_of


@contextmanager
def building(final: Path, partial: Path, keep_partial: bool = False) -> Iterator[Path]:
    """Build an artifact in ``partial`` and rename it to ``final`` on success.

    On any error the partial folder is removed, unless ``keep_partial`` (resumable jobs keep
    their completed chunks). An existing ``final`` is only replaced once the new one is complete.
    """
    partial.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except BaseException:
        if not keep_partial:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_write(path: Path, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[Any]:
    """Write ``path`` all or nothing: a temporary file in the same folder, flushed and fsynced,
    renamed over ``path``, then the folder fsynced so the rename itself survives a power loss.
    On any error (a full disk included) the temporary file is removed and ``path`` is untouched."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON with :func:`atomic_write`."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


def write_npy_atomic(path: Path, array: Any) -> None:
    """Write a ``.npy`` file with :func:`atomic_write`."""
    import numpy as np

    with atomic_write(path) as fh:  # a short write (full disk) is runtime.errors.is_disk_full's
        np.save(fh, array)


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """Read a manifest, turning a missing or damaged file into one clear message."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as err:  # the folder went away outside miStudio: re-index, never
        # suggest making it again (that would replace whatever is left of it)
        raise CorruptedError(f"The {what} is missing its manifest ({path}); its folder was "
                             "moved, renamed or deleted outside miStudio.",
                             "«do:rebuild_catalog» to re-index the workspace.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptedError(f"The {what} manifest {path} is corrupted ({err}).", fix) from err
    if not isinstance(data, dict):
        raise CorruptedError(f"The {what} manifest {path} is not a JSON object.", fix)
    return data


def read_manifest(folder: Path, what: str, fix: str | None = None) -> Any:
    """The typed manifest (:mod:`mistudio.core.store.manifests`) in ``folder``."""
    return manifest_of(read_json(folder / "manifest.json", what, fix or
                                 "Make it again («overwrite»), or «do:rebuild_catalog» if its "
                                 "folder was changed by hand."))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
