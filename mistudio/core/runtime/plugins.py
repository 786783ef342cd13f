"""Plugins: what other packages add to miStudio, found through Python entry points.

A package extends miStudio by declaring entry points in its ``pyproject.toml``; nothing in
miStudio changes. The groups and what each entry point must name:

``mistudio.sae_architectures``
    an :class:`mistudio.core.sae.architectures.Architecture` (a sparse coder class and how it
    trains, saves and exports): it trains, saves, loads and exports like a built-in one, and the
    Training tab offers it;
``mistudio.explainers``
    a label explainer (:class:`mistudio.core.features.explainers.Explainer`);
``mistudio.label_scorers``
    a label scorer (:class:`mistudio.core.features.explainers.LabelScorer`);
``mistudio.steering_scorers``
    a text scorer for steering evaluations (:class:`mistudio.core.steering.scorers.TextScorer`);
``mistudio.feature_analyses``
    a per-feature analysis whose columns join the feature table
    (:class:`mistudio.core.features.store.FeatureAnalysis`).

A plugin that cannot be loaded is left out with a warning naming it; it never stops miStudio.
"""

from __future__ import annotations

import functools
import warnings
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from mistudio.core.runtime.errors import MiStudioWarning

GROUPS = {
    "mistudio.sae_architectures": "SAE architectures",
    "mistudio.explainers": "label explainers",
    "mistudio.label_scorers": "label scorers",
    "mistudio.steering_scorers": "steering scorers",
    "mistudio.feature_analyses": "feature analyses",
}
"""Entry-point group -> what its plugins add."""


class PluginInfo(NamedTuple):
    group: str
    name: str
    package: str
    """The distribution that declares it (and its version)."""


@functools.cache
def _loaded(group: str) -> tuple[tuple[str, Any, str], ...]:
    found = []
    for ep in entry_points(group=group):
        package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        try:
            found.append((ep.name, ep.load(), package))
        except Exception as err:  # a broken plugin is reported, never fatal
            warnings.warn(f"The plugin {ep.name!r} ({package}) for {GROUPS.get(group, group)} "
                          f"could not be loaded and is left out: {type(err).__name__}: {err}",
                          MiStudioWarning, stacklevel=2)
    return tuple(found)


def plugins(group: str) -> dict[str, Any]:
    """The objects the installed plugins add to ``group``, by name."""
    if group not in GROUPS:
        raise KeyError(group)
    return {name: obj for name, obj, _ in _loaded(group)}


def installed() -> list[PluginInfo]:
    """Every plugin found, for the doctor and the About box."""
    return [PluginInfo(group, name, package) for group in GROUPS
            for name, _, package in _loaded(group)]


def installed_names(group: str) -> list[str]:
    """The names of the plugins installed for ``group`` (for a chooser)."""
    return list(plugins(group))


def refresh() -> None:
    """Look for plugins again (after installing one into a running process)."""
    _loaded.cache_clear()
    from importlib import invalidate_caches

    invalidate_caches()
