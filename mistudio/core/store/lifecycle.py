"""One artifact lifecycle for every producer: the steps between "make NAME" and a finished,
indexed folder, written once.

:meth:`Workspace.build` (this module's :func:`build`) owns, in order:

1. the name check, and the refusal of a folder already on disk unless ``overwrite``;
2. the artifact's writer lock (one writer per artifact, across processes);
3. a job record in the catalog: running, then done, cancelled or failed;
4. the partial folder ``.NAME.partial``: emptied first (``fresh``), or kept as it is for a
   resumable producer to continue from;
5. on success, the manifest written into it, the folder swapped into place and the catalog
   row written;
6. on a cancel or an error, the partial folder removed, or (``resumable``) kept and shown in
   the catalog as partial, unless a complete artifact of that name is still in place: an
   ``--overwrite`` that did not finish never hides the artifact it would have replaced.

Producers only fill :attr:`Build.folder` and set :attr:`Build.manifest`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mistudio.core.store.files import building, write_json_atomic
from mistudio.core.store.layout import MANIFEST, validate_name
from mistudio.core.store.manifests import Manifest

if TYPE_CHECKING:
    from mistudio.core.store.workspace import Workspace


class Build:
    """One artifact being made: where to write, and the manifest to finish it with."""

    def __init__(self, ws: Workspace, kind: str, name: str, job_id: int, resumable: bool) -> None:
        self.ws, self.kind, self.name, self.job_id = ws, kind, name, job_id
        self.resumable = resumable
        self.folder: Path = ws.partial_path(kind, name)
        """The partial folder: everything the producer writes goes here."""
        self.final: Path = ws.artifact_path(kind, name)
        """Where the artifact lands when complete (it may hold the one being replaced)."""
        self.manifest: Manifest | None = None
        """Set by the producer before the build ends; written as ``manifest.json``."""

    @property
    def replacing(self) -> bool:
        """Whether a complete artifact of this name is in place (an overwrite is running)."""
        art = self.ws.catalog.find(self.kind, self.name)
        return self.final.is_dir() and art is not None and art.status == "complete"

    def show_partial(self, manifest: Manifest) -> None:
        """List the resumable build in the catalog (status partial, its summary so far), unless
        the artifact it replaces is still in place: that one stays listed as it is."""
        if self.replacing:
            return
        self.ws.catalog.put(self.kind, self.name, self.folder, "partial", manifest.config,
                            manifest.provenance, manifest.summary)

    def discard(self) -> None:
        """Give up on this build: the partial folder and its catalog row go (before raising
        the reason; an artifact being replaced stays as it is)."""
        if not self.replacing:
            self.ws.catalog.delete(self.kind, self.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.manifest = None

    def write_manifest(self, manifest: Manifest) -> None:
        """Write ``manifest`` into the partial folder now (a resumable producer's progress)."""
        write_json_atomic(self.folder / MANIFEST, manifest.to_json())


@contextmanager
def build(ws: Workspace, kind: str, name: str, job: str, params: dict[str, Any],
          overwrite: bool = False, resumable: bool = False,
          fresh: bool | None = None) -> Iterator[Build]:
    """Make artifact ``kind``/``name`` (see the module's docstring). ``job`` names the job in
    the catalog's history and the lock's message; ``params`` are its settings. ``fresh``
    (default: not resumable, or overwrite) empties the partial folder first."""
    validate_name(name, f"{kind.capitalize()} name")
    ws.refuse_existing(kind, name, overwrite)
    with ws.writer(kind, name, job), ws.job(job, name, params) as job_id:
        b = Build(ws, kind, name, job_id, resumable)
        if fresh if fresh is not None else (not resumable or overwrite):
            shutil.rmtree(b.folder, ignore_errors=True)
        existed = b.folder.is_dir()
        with building(b.final, b.folder, keep_partial=resumable) as folder:
            try:
                yield b
            except BaseException:
                if resumable and b.manifest is not None and folder.is_dir():
                    b.show_partial(b.manifest)
                elif not existed:  # refused before anything worth resuming was written
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            if b.manifest is None:
                raise RuntimeError(f"The {kind} {name!r} was built without a manifest.")
            b.manifest.name, b.manifest.status = name, "complete"
            b.write_manifest(b.manifest)
        ws.register(b.manifest)
