"""The workspace folder: where every dataset, model cache, activation set and SAE lives.

Layout (the spec's, plus caches)::

    raw/          ingested text datasets (Arrow)
    tokenized/    fixed-length token sequences (memory-mapped Arrow)
    activations/  chunked activation sets with a JSON manifest
    metadata/     the SQLite catalog
    models/       dequantized / converted model caches
    saes/         trained sparse autoencoders
    features/     feature analyses

Every artifact is built under a hidden temporary name (``.NAME.partial``) and renamed into
place when complete, so a crash or a cancel never leaves something that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mistudio.core.errors import CorruptedError, InvalidInputError, ResourceError

SUBDIRS = ("raw", "tokenized", "activations", "metadata", "models", "saes", "features")
ARTIFACT_DIRS = {
    "dataset": "raw",
    "tokenized": "tokenized",
    "activations": "activations",
    "model": "models",
    "sae": "saes",
    "features": "features",
}
MANIFEST = "manifest.json"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def default_workspace_path() -> Path:
    """``$MISTUDIO_HOME``, else the per-user data folder of this platform."""
    env = os.environ.get("MISTUDIO_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "mistudio"


def validate_name(name: str, what: str = "name") -> str:
    """Artifact names become folder names: keep them portable."""
    if not name or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise InvalidInputError(
            f"{what} {name!r} is not a valid name.",
            "Use letters, digits, '-', '_' and '.', not starting with '.'.",
        )
    return name


class Workspace:
    """A workspace folder and its catalog. Cheap to create; opens the catalog lazily."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_workspace_path()
        try:
            for sub in SUBDIRS:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InvalidInputError(
                f"Cannot create the workspace at {self.root}: {err.strerror}.",
                "Choose a writable folder with --workspace or MISTUDIO_HOME.",
            ) from err
        self._catalog = None

    @property
    def catalog(self):  # -> Catalog; imported lazily to keep this module dependency-free
        if self._catalog is None:
            from mistudio.core.catalog import Catalog

            self.recover_interrupted_swaps()
            self._catalog = Catalog(self.root / "metadata" / "catalog.sqlite")
        return self._catalog

    def recover_interrupted_swaps(self) -> None:
        """Finish what a crash between :func:`building`'s two renames left: the old artifact
        waits under ``.NAME.old`` with no ``NAME`` beside it (put it back), or the swap was done
        but the old copy not yet deleted (delete it). Skipped for artifacts a job holds."""
        from mistudio.core.locks import BusyError

        for kind, sub in ARTIFACT_DIRS.items():
            for old in (self.root / sub).glob(".*.old"):
                name = old.name[1:-len(".old")]
                final = old.with_name(name)
                try:
                    with self.writer(kind, name, "recover"):
                        if not final.exists():
                            os.replace(old, final)
                        else:
                            shutil.rmtree(old, ignore_errors=True)
                except (BusyError, InvalidInputError, OSError):
                    continue

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def artifact_path(self, kind: str, name: str) -> Path:
        return self.root / ARTIFACT_DIRS[kind] / validate_name(name)

    def partial_path(self, kind: str, name: str) -> Path:
        return self.root / ARTIFACT_DIRS[kind] / f".{validate_name(name)}.partial"

    def register(self, manifest: dict[str, Any], path: Path | None = None) -> None:
        """Index an artifact whose manifest is already on disk (kind and name in the manifest)."""
        kind, name = manifest["kind"], manifest["name"]
        self.catalog.put(kind, name, path or self.artifact_path(kind, name),
                         manifest.get("status", "complete"), manifest.get("config"),
                         manifest.get("provenance"), manifest.get("summary"))

    def remove(self, kind: str, name: str) -> None:
        """Delete an artifact's folder (complete or partial) and its catalog row; refused while a
        job writes it, and never outside this workspace's own folder for that kind."""
        art = self.catalog.get(kind, name)  # a clear error if unknown
        folder = Path(art.path).resolve()
        if folder.parent != (self.root / ARTIFACT_DIRS[kind]).resolve():
            raise CorruptedError(f"The catalog row of {kind} {name!r} points outside this "
                                 f"workspace ({art.path}); nothing was deleted.",
                                 "Run `mistudio catalog rebuild`.")
        with self.writer(kind, name, "remove"):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(self.partial_path(kind, name), ignore_errors=True)
            self.catalog.delete(kind, name)

    def writer(self, kind: str, name: str, job: str) -> Any:
        """The one-writer lock of an artifact (:mod:`mistudio.core.locks`), as a context."""
        from mistudio.core.locks import writer_lock

        return writer_lock(self.root, kind, validate_name(name), job)

    def refuse_existing(self, kind: str, name: str, overwrite: bool) -> None:
        """Never replace a folder that is on disk unless the user said so, whether the catalog
        lists it or not (a lost catalog or a damaged manifest must not make data fair game)."""
        final = self.artifact_path(kind, name)
        if overwrite or not final.exists():
            return
        what = {"sae": "An SAE", "features": "An analysis", "activations": "An activation set",
                "tokenized": "A tokenized set", "dataset": "A dataset",
                "model": "A model"}.get(kind, kind)
        if self.catalog.find(kind, name) is not None:
            raise InvalidInputError(f"{what} named {name!r} already exists.",
                                    "Choose another name, or pass --overwrite to replace it.")
        raise InvalidInputError(
            f"{what} folder named {name!r} is already on disk ({final}), though the catalog "
            "does not list it (its manifest may be damaged).",
            "Choose another name; `mistudio catalog rebuild` says why it is not listed; "
            "--overwrite replaces it.")

    @contextmanager
    def job(self, kind: str, target: str, params: dict[str, Any]) -> Iterator[int]:
        """Record a job in the catalog: running, then done, cancelled or failed."""
        from mistudio.core.errors import Cancelled

        job_id = self.catalog.start_job(kind, target, params)
        try:
            yield job_id
        except Cancelled:
            self.catalog.finish_job(job_id, "cancelled")
            raise
        except BaseException as err:
            self.catalog.finish_job(job_id, "failed", str(err) or type(err).__name__)
            raise
        self.catalog.finish_job(job_id, "done")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def require_free_space(self, needed: int, what: str) -> None:
        """Refuse early, with a clear message, when ``what`` will not fit on the disk."""
        free = self.free_bytes()
        if needed > free:
            raise ResourceError(
                f"Not enough disk space for {what}: needs about {human_bytes(needed)}, "
                f"{human_bytes(free)} free under {self.root}.",
                "Free some space, lower --max-tokens, or use another --workspace.",
            )


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

    with atomic_write(path) as fh:
        np.save(fh, array)


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """Read a manifest, turning a missing or damaged file into one clear message."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as err:  # the folder went away outside miStudio: re-index, never
        # suggest rebuilding it (--overwrite would replace whatever is left of it)
        raise CorruptedError(f"The {what} is missing its manifest ({path}); its folder was "
                             "moved, renamed or deleted outside miStudio.",
                             "Run `mistudio catalog rebuild` to re-index the workspace.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptedError(f"The {what} manifest {path} is corrupted ({err}).", fix) from err
    if not isinstance(data, dict):
        raise CorruptedError(f"The {what} manifest {path} is not a JSON object.", fix)
    return data


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
