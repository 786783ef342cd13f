"""One artifact lifecycle for every producer: the steps between "make NAME" and a finished,
indexed folder, written once.

:meth:`Workspace.build` owns, in order:

1. the name check, and the refusal of a folder already on disk unless ``overwrite``;
2. the artifact's writer lock (one writer per artifact, across processes);
3. a job record in the catalog: running, then done, cancelled or failed;
4. the partial folder ``.NAME.partial``: emptied first (``fresh``), or kept as it is for a
   resumable producer to continue from;
5. on success, the manifest written into it, the folder swapped into place and the catalog
   row written;
6. on a cancel or an error, the partial folder removed, or (``resumable``) kept and shown in
   the catalog as partial, unless a complete artifact of that name is still in place: an
   overwrite that did not finish never hides the artifact it would have replaced.

Producers only fill :attr:`Build.folder` and set :attr:`Build.manifest`. The steps that need
the workspace (1 to 3, and the catalog row) are :meth:`Workspace.build`'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mistudio.core.store.catalog import Catalog
from mistudio.core.store.files import building, write_json_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.manifests import Manifest


class Build:
    """One artifact being made: where to write, and the manifest to finish it with."""

    def __init__(self, catalog: Catalog, kind: str, name: str, folder: Path, final: Path,
                 job_id: int, resumable: bool) -> None:
        self.catalog, self.kind, self.name, self.job_id = catalog, kind, name, job_id
        self.resumable = resumable
        self.folder = folder
        """The partial folder: everything the producer writes goes here."""
        self.final = final
        """Where the artifact lands when complete (it may hold the one being replaced)."""
        self.manifest: Manifest | None = None
        """Set by the producer before the build ends; written as ``manifest.json``."""

    @property
    def replacing(self) -> bool:
        """Whether a complete artifact of this name is in place (an overwrite is running)."""
        art = self.catalog.find(self.kind, self.name)
        return self.final.is_dir() and art is not None and art.status == "complete"

    def show_partial(self, manifest: Manifest) -> None:
        """List the resumable build in the catalog (status partial, its summary so far), unless
        the artifact it replaces is still in place: that one stays listed as it is."""
        if self.replacing:
            return
        self.catalog.put(self.kind, self.name, self.folder, "partial", manifest.config,
                         manifest.provenance, manifest.summary)

    def discard(self) -> None:
        """Give up on this build: the partial folder and its catalog row go (before raising
        the reason; an artifact being replaced stays as it is)."""
        if not self.replacing:
            self.catalog.delete(self.kind, self.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.manifest = None

    def write_manifest(self, manifest: Manifest) -> None:
        """Write ``manifest`` into the partial folder now (a resumable producer's progress)."""
        write_json_atomic(self.folder / MANIFEST, manifest.to_json())


@contextmanager
def filling(b: Build, fresh: bool) -> Iterator[Build]:
    """Steps 4 to 6 of the lifecycle for a build whose lock and job are held: the partial folder
    made (emptied first when ``fresh``), filled by the caller, then swapped into place with its
    manifest, or kept (resumable) or removed on an error."""
    if fresh:
        shutil.rmtree(b.folder, ignore_errors=True)
    existed = b.folder.is_dir()
    with building(b.final, b.folder, keep_partial=b.resumable) as folder:
        try:
            yield b
        except BaseException:
            if b.resumable and b.manifest is not None and folder.is_dir():
                b.show_partial(b.manifest)
            elif not existed:  # refused before anything worth resuming was written
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if b.manifest is None:
            raise RuntimeError(f"The {b.kind} {b.name!r} was built without a manifest.")
        b.manifest.name, b.manifest.status = b.name, "complete"
        b.write_manifest(b.manifest)
