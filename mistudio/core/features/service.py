"""The Features tab's model-holding work (ablation effects, "Analyze this text"), run in a
:class:`mistudio.core.runtime.processes.ChildService` so that the model's forward passes and the Python
around them never share an interpreter with the UI thread (measured on the quick start's
SAE: an ablation took 13.9 s from a worker thread against 8.5 s called directly).

The service's ``state`` keeps one workspace handle, one loaded model per (model, device),
shared by the ablation and the text probe, and the objects built on it, rebuilt when the
analysis folder is rebuilt (its ``stamp``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mistudio.core.features.ablation import AblationEffect, FeatureModel
from mistudio.core.features.probe import TextActivations, TextProbe
from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.store.files import read_manifest
from mistudio.core.store.workspace import Workspace, service_workspace


def _kept(state: dict[str, Any], kind: str, key: Any, make: Callable[[], Any]) -> Any:
    """The ``kind`` object built for ``key``; a different key drops the old one first."""
    held = state.get(kind)
    if held is None or held[0] != key:
        state.pop(kind, None)
        state[kind] = (key, make())
    return state[kind][1]


def _model(state: dict[str, Any], ws: Workspace, folder: Path, device: str) -> LoadedModel:
    model = read_manifest(folder, f"analysis at {folder}").provenance.model
    return _kept(state, "model", (model, device), lambda: load_model(ws, model, device=device))


def ablate_in_service(state: dict[str, Any], root: str, folder: str, stamp: Any,
                      feature: int, device: str = "auto",
                      task: TaskState | None = None) -> AblationEffect:
    """The effect of removing ``feature`` from its top contexts (see :class:`FeatureModel`)."""
    ws = service_workspace(state, root)
    loaded = _model(state, ws, Path(folder), device)
    model = _kept(state, "ablation", (folder, stamp, device),
                  lambda: FeatureModel(ws, Path(folder), loaded=loaded))
    if task is not None:
        task.set_status(f"Ablating feature {feature}")
    return model.ablate(feature)


def probe_in_service(state: dict[str, Any], root: str, analysis: str, folder: str, stamp: Any,
                     text: str, watch: tuple[int, ...], device: str = "auto",
                     task: TaskState | None = None) -> TextActivations:
    """The analysis's features on ``text`` (see :class:`TextProbe`)."""
    ws = service_workspace(state, root)
    loaded = _model(state, ws, Path(folder), device)
    probe = _kept(state, "probe", (analysis, stamp, device),
                  lambda: TextProbe(ws, analysis, device, loaded=loaded))
    return probe.run(text, k=8, watch=watch)
