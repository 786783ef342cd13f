"""Published SAEs by name: the registry shipped in ``pretrained_saes.json`` and ``pull``.

Most interpretability work starts from a published SAE (Gemma Scope, Llama Scope, GPT-2 small
res-jb, Pythia-70M). The registry lists each release's Hugging Face repository, the path of every
SAE in it, the hook point it reads, its width and its L0 where published. :func:`pull_sae`
downloads the files into the Hugging Face cache with ``huggingface_hub`` (only in online mode),
or finds them there when they were downloaded before, then converts and imports them as
:func:`mistudio.core.sae.formats.import_sae` does for a folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.workspace import Workspace

REGISTRY_FILE = Path(__file__).with_name("pretrained_saes.json")


@dataclass(frozen=True)
class PretrainedSAE:
    """One published SAE."""

    release: str
    sae_id: str
    title: str
    """The release's description."""
    model: str
    """Hugging Face id of the model it was trained on."""
    repo_id: str
    path: str
    """Folder of the SAE inside the repository."""
    files: tuple[str, ...]
    """Files to fetch, relative to ``path``."""
    format: str
    """How to read them (mistudio.core.sae.formats): gemmascope, saelens, llamascope."""
    hook: str
    """miStudio hook key: layers.L.HOOK."""
    d_sae: int
    architecture: str
    l0: float | None = None
    """Published mean number of active latents, where the release gives one."""
    center_writing_weights: bool = False
    """Trained on TransformerLens activations with centred writing weights (folded on import)."""

    @property
    def default_name(self) -> str:
        """A workspace name: the release and id, with '/' as '.'."""
        return f"{self.release}.{self.sae_id}".replace("/", ".")


@cache
def _registry() -> tuple[PretrainedSAE, ...]:
    data = json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))
    out = []
    for rel in data["releases"]:
        for s in rel["saes"]:
            out.append(PretrainedSAE(
                rel["release"], s["id"], rel["title"], rel["model"], rel["repo_id"], s["path"],
                tuple(rel["files"]), rel["format"], f"layers.{s['layer']}.{s['hook']}",
                int(s["d_sae"]), rel["architecture"], s.get("l0"),
                bool(rel.get("center_writing_weights", False))))
    return tuple(out)


def list_saes(model: str | None = None, release: str | None = None,
              search: str | None = None) -> list[PretrainedSAE]:
    """Published SAEs, optionally for one model (any part of its id: gemma-2-2b, gpt2, pythia),
    one release, or matching words of the release, id, title or hook."""
    out = list(_registry())
    if model:
        m = model.lower()
        out = [s for s in out if m in s.model.lower()]
    if release:
        out = [s for s in out if s.release == release]
    if search:
        words = search.lower().split()
        out = [s for s in out if all(w in f"{s.release} {s.sae_id} {s.title} {s.hook}".lower()
                                     for w in words)]
    return out


def releases() -> list[dict[str, Any]]:
    """One row per release: name, title, model, repository, number of SAEs, hook points."""
    rows: dict[str, dict[str, Any]] = {}
    for s in _registry():
        row = rows.setdefault(s.release, {"release": s.release, "title": s.title,
                                          "model": s.model, "repo_id": s.repo_id, "saes": 0,
                                          "hooks": set()})
        row["saes"] += 1
        row["hooks"].add(s.hook.split(".")[-1])
    return [{**r, "hooks": sorted(r["hooks"])} for r in rows.values()]


def find_sae(release: str, sae_id: str) -> PretrainedSAE:
    """One published SAE, or one clear line naming the nearest ids."""
    in_release = [s for s in _registry() if s.release == release]
    if not in_release:
        known = ", ".join(sorted({s.release for s in _registry()}))
        raise NotFoundError(f"There is no published release {release!r}.",
                            f"Known releases: {known} («do:list_releases»).")
    for s in in_release:
        if s.sae_id == sae_id:
            return s
    prefix = sae_id.split("/")[0]
    near = [s.sae_id for s in in_release if s.sae_id.startswith(prefix)][:6] or \
        [s.sae_id for s in in_release][:6]
    raise NotFoundError(f"Release {release!r} has no SAE {sae_id!r}.",
                        f"For example: {', '.join(near)} («do:list_releases={release}»).")


def fetch_files(sae: PretrainedSAE, task: TaskState | None = None) -> Path:
    """The SAE's files from the Hugging Face cache, downloaded first in online mode. Returns
    the local folder holding them (``path`` inside the cached snapshot)."""
    from mistudio.core.models.hf import HF_IMPORT_LOCK
    from mistudio.core.runtime.online import is_online, offline_hint

    with HF_IMPORT_LOCK:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

    task = task or silent_task()
    online = is_online()
    folder: Path | None = None
    for i, rel in enumerate(sae.files):
        check_cancelled(task)
        task.set_status(f"{'Downloading' if online else 'Looking up'} {sae.repo_id}/"
                        f"{sae.path}/{rel}")
        try:
            local = Path(hf_hub_download(sae.repo_id, f"{sae.path}/{rel}",
                                         local_files_only=not online))
        except LocalEntryNotFoundError as err:
            raise NotFoundError(f"{sae.release} {sae.sae_id} is not in the local Hugging Face "
                                f"cache ({sae.repo_id}/{sae.path}/{rel}).", offline_hint()) from err
        except (EntryNotFoundError, RepositoryNotFoundError) as err:
            raise NotFoundError(f"{sae.repo_id} has no file {sae.path}/{rel} (the release may "
                                f"have moved it): {err}.",
                                "Download the folder by hand, then «do:import_sae».") from err
        except OSError as err:
            raise InvalidInputError(f"Could not download {sae.repo_id}/{sae.path}/{rel} "
                                    f"({err}).", "Check the network connection, then try "
                                    "again; completed files are kept in the cache.") from err
        folder = Path(str(local)[: -len(rel) - 1])  # the snapshot's folder for ``path``
        task.set_progress((i + 1) / len(sae.files))
    assert folder is not None
    return folder


def pull_sae(ws: Workspace, release: str, sae_id: str, name: str | None = None,
             model: str | None = None, task: TaskState | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Download (online) or find (offline) a published SAE and import it into the workspace.
    ``model``: the workspace model to attach it to; default: the one the release was trained on
    (matched by name or Hugging Face id)."""
    from mistudio.core.runtime.tasks import SubTask
    from mistudio.core.sae.formats import import_sae
    from mistudio.core.sae.hooknames import match_model

    task = task or silent_task()
    sae = find_sae(release, sae_id)
    name = name or sae.default_name
    ws.refuse_existing("sae", name, overwrite)
    model = model or match_model(ws, sae.model)
    if model is None:
        short = sae.model.split("/")[-1]
        raise InvalidInputError(
            f"{release} was trained on {sae.model}, which this workspace has not registered.",
            f"«do:add_model={short}» first (source hf:{sae.model}, «online»; or a local "
            "folder), or attach the SAE to another («model=NAME»).")
    folder = fetch_files(sae, SubTask(task, 0.0, 0.9))
    task.set_status(f"Importing {sae.release} {sae.sae_id}")
    manifest = import_sae(ws, folder, name, model, sae.hook, overwrite,
                          fold_centering=sae.center_writing_weights)
    task.set_progress(1.0)
    return manifest
