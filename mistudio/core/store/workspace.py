"""The workspace: a folder holding every dataset, model cache, activation set, SAE and analysis
(:mod:`.layout`), with the catalog that indexes them (:mod:`.catalog`).

Every artifact is built under a hidden temporary name (``.NAME.partial``) and renamed into
place when complete, so a crash or a cancel never leaves something that looks finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mistudio.core.runtime.errors import (
    Cancelled,
    CorruptedError,
    InvalidInputError,
    ResourceError,
)
from mistudio.core.store.catalog import Catalog
from mistudio.core.store.files import human_bytes, read_manifest
from mistudio.core.store.layout import (
    ARTIFACT_DIRS,
    SUBDIRS,
    default_workspace_path,
    validate_name,
)
from mistudio.core.store.lifecycle import Build, filling
from mistudio.core.store.locks import BusyError, writer_lock
from mistudio.core.store.manifests import Manifest


class Workspace:
    """A workspace folder and its catalog. Cheap to create; opens the catalog lazily."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_workspace_path()
        for sub in SUBDIRS:
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                if (self.root / "metadata").is_dir():
                    continue  # an existing workspace that is read-only here: still viewable
                raise InvalidInputError(
                    f"Cannot create the workspace at {self.root}: {err.strerror}.",
                    "«do:choose_workspace» («workspace»).",
                ) from err
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self.recover_interrupted_swaps()
            self._catalog = Catalog(self.root / "metadata" / "catalog.sqlite")
        return self._catalog

    def recover_interrupted_swaps(self) -> None:
        """Finish what a crash between :func:`building`'s two renames left: the old artifact
        waits under ``.NAME.old`` with no ``NAME`` beside it (put it back), or the swap was done
        but the old copy not yet deleted (delete it). Skipped for artifacts a job holds."""
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

    def register(self, manifest: Manifest, path: Path | None = None) -> None:
        """Index an artifact whose manifest is already on disk."""
        self.catalog.put(manifest.kind, manifest.name,
                         path or self.artifact_path(manifest.kind, manifest.name),
                         manifest.status, manifest.config, manifest.provenance, manifest.summary)

    @contextmanager
    def build(self, kind: str, name: str, job: str, params: dict[str, Any],
              overwrite: bool = False, resumable: bool = False,
              fresh: bool | None = None) -> Iterator[Build]:
        """Make an artifact through the one lifecycle (:mod:`mistudio.core.store.lifecycle`):
        name check, refusal of an existing folder unless ``overwrite``, writer lock, job record
        (``job`` with its ``params``), partial folder (emptied first when ``fresh``; default:
        not resumable, or overwrite), manifest, swap and catalog row. Yields the
        :class:`~mistudio.core.store.lifecycle.Build` the producer fills."""
        validate_name(name, f"{kind.capitalize()} name")
        self.refuse_existing(kind, name, overwrite)
        with self.writer(kind, name, job), self.job(job, name, params) as job_id:
            b = Build(self.catalog, kind, name, self.partial_path(kind, name),
                      self.artifact_path(kind, name), job_id, resumable)
            with filling(b, fresh if fresh is not None else (not resumable or overwrite)):
                yield b
            self.register(b.manifest)  # type: ignore[arg-type]

    def manifest(self, kind: str, name: str) -> Any:
        """The typed manifest of a registered artifact (``SAEManifest``, ...), read from its
        folder; one clear line if it is missing or damaged."""
        art = self.catalog.get(kind, name)
        return read_manifest(Path(art.path), f"{kind} {name!r}")

    def remove(self, kind: str, name: str) -> None:
        """Delete an artifact's folder (complete or partial) and its catalog row; refused while a
        job writes it, and never outside this workspace's own folder for that kind."""
        art = self.catalog.get(kind, name)  # a clear error if unknown
        folder = Path(art.path).resolve()
        if folder.parent != (self.root / ARTIFACT_DIRS[kind]).resolve():
            raise CorruptedError(f"The catalog row of {kind} {name!r} points outside this "
                                 f"workspace ({art.path}); nothing was deleted.",
                                 "«do:rebuild_catalog».")
        with self.writer(kind, name, "remove"):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(self.partial_path(kind, name), ignore_errors=True)
            self.catalog.delete(kind, name)

    def writer(self, kind: str, name: str, job: str) -> Any:
        """The one-writer lock of an artifact (:mod:`mistudio.core.store.locks`), as a context."""
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
                                    "Choose another name, or replace it («overwrite»).")
        raise InvalidInputError(
            f"{what} folder named {name!r} is already on disk ({final}), though the catalog "
            "does not list it (its manifest may be damaged).",
            "Choose another name; «do:rebuild_catalog» says why it is not listed; "
            "«overwrite» replaces it.")

    @contextmanager
    def job(self, kind: str, target: str, params: dict[str, Any]) -> Iterator[int]:
        """Record a job in the catalog: running, then done, cancelled or failed."""
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
                "Free some space, lower «max_tokens», or use another «workspace».",
            )


def service_workspace(state: dict[str, Any], root: str) -> Workspace:
    """The workspace handle a service's calls share (opened on the child's own thread); a call
    for another workspace starts from an empty state."""
    ws = state.get("ws")
    if ws is None or str(ws.root) != str(root):
        state.clear()
        ws = state["ws"] = Workspace(root)
    return ws
