"""Model services: one child process per loaded model, shared by every part of the app.

Generation (the Steering tab, the lesson), ablation and text probes (the Features tab) and the
in-model evaluation after training all need the same model loaded; each model (with its device
and quantization) gets one :class:`~mistudio.core.runtime.processes.ChildService`, so it is
loaded once however many tabs use it, and never in the app's own process. A call runs
``fn(ctx, *args, task=...)`` in the service, where ``ctx`` (:class:`ServiceContext`) holds the
workspace handle, the loaded model and what calls built on it (a steerer, a probe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from mistudio.core.runtime.processes import ChildService


class ModelKey(NamedTuple):
    """Which model a service holds."""

    model: str
    device: str = "auto"
    quantize: str = "none"


class ModelServices:
    """The model services of this app, by workspace and model."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, ModelKey], ChildService] = {}
        self._lock = threading.Lock()

    def get(self, root: str, key: ModelKey) -> ChildService:
        with self._lock:
            return self._services.setdefault((root, ModelKey(*key)), ChildService())

    def alive(self) -> list[ModelKey]:
        """The models loaded now."""
        return list(self.processes())

    def processes(self) -> dict[ModelKey, int]:
        """The process id of each model service running now."""
        with self._lock:
            return {key: s.pid for (_, key), s in self._services.items() if s.alive}

    def close_all(self) -> None:
        with self._lock:
            services, self._services = list(self._services.values()), {}
        for service in services:
            service.close()


class ServiceContext:
    """What a call in a model service sees: the workspace, the model, objects kept for reuse."""

    def __init__(self, state: dict[str, Any], root: str) -> None:
        from mistudio.core.store.workspace import service_workspace

        self.state = state
        self.ws = service_workspace(state, root)

    def model(self, name: str, device: str = "auto", quantize: str = "none") -> Any:
        """The service's model, loaded on first use (a service holds one)."""
        from mistudio.core.models.registry import load_model

        return self.kept("model", (name, device, quantize),
                         lambda: load_model(self.ws, name, device=device, quantize=quantize))

    def kept(self, kind: str, key: Any, make: Callable[[], Any]) -> Any:
        """The ``kind`` object built for ``key``; a different key drops the old one first (the
        old model goes before a new one loads)."""
        held = self.state.get(kind)
        if held is None or held[0] != key:
            self.state.pop(kind, None)
            self.state[kind] = (key, make())
        return self.state[kind][1]


def in_service(state: dict[str, Any], root: str, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any], task: Any = None) -> Any:
    """``fn(ctx, *args, task=task, **kwargs)`` in a model service (its state lives between
    calls)."""
    return fn(ServiceContext(state, root), *args, task=task, **kwargs)
