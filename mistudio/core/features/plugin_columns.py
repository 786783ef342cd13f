"""Feature analyses that installed plugins add: their columns join the feature table.

A package declares an entry point in the ``mistudio.feature_analyses`` group naming a
:class:`FeatureAnalysis`: an object (or a class, instantiated with no arguments) that, given an
:class:`AnalysisContext` (the SAE, the built-in columns and every token each feature fires on),
returns one number per feature for each column it adds. The columns are written into
``features.arrow`` with the built-in ones, so the browser shows, sorts and filters them and the
CLI's ``feature`` command prints them. A plugin that fails or returns the wrong shape is left
out with a warning naming it: the analysis a person waited for is never lost to a plugin.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mistudio.core.runtime.errors import MiStudioWarning
from mistudio.core.runtime.plugins import plugins

PLUGIN_COLUMNS_KEY = b"mistudio.plugin_columns"
"""Arrow schema metadata of ``features.arrow``: JSON {column: plugin} of the plugins' columns."""


@dataclass(frozen=True)
class AnalysisContext:
    """What a feature analysis may read (everything is already on disk or in memory)."""

    sae: Any
    """The :class:`~mistudio.core.sae.coder.SparseCoder` analysed (``W_enc_DF``, ``W_dec_FO``)."""
    columns: dict[str, np.ndarray]
    """The built-in columns, [d_sae] or [d_sae, k]: frequency, max_activation, mean_activation,
    dead, dense, logit lens, neighbours..."""
    csc_indptr: np.ndarray
    """[d_sae + 1]: feature f fires on rows ``csc_rows[csc_indptr[f]:csc_indptr[f + 1]]``."""
    csc_rows: np.ndarray
    csc_values: np.ndarray
    """Its activation on each of those rows."""
    rows: np.ndarray
    """[n_rows, 3]: the sequence, position and token id of every analysed row."""

    @property
    def d_sae(self) -> int:
        return len(self.csc_indptr) - 1

    def firing(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows where ``feature`` fires, and its activations there."""
        lo, hi = int(self.csc_indptr[feature]), int(self.csc_indptr[feature + 1])
        return np.asarray(self.csc_rows[lo:hi]), np.asarray(self.csc_values[lo:hi])


@runtime_checkable
class FeatureAnalysis(Protocol):
    """Adds columns to the feature table."""

    def __call__(self, ctx: AnalysisContext) -> dict[str, np.ndarray]:
        """Column name -> one number per feature ([d_sae])."""
        ...


def plugin_analyses() -> dict[str, FeatureAnalysis]:
    """The feature analyses of installed plugins, by name."""
    out: dict[str, FeatureAnalysis] = {}
    for name, obj in plugins("mistudio.feature_analyses").items():
        analysis = obj() if isinstance(obj, type) else obj
        if isinstance(analysis, FeatureAnalysis):
            out[name] = analysis
    return out


def plugin_columns(ctx: AnalysisContext) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every installed analysis's columns, and which plugin wrote each one."""
    columns: dict[str, np.ndarray] = {}
    owners: dict[str, str] = {}
    for name, analysis in plugin_analyses().items():
        try:
            added = analysis(ctx)
            checked = {col: _checked(col, values, ctx, columns) for col, values in added.items()}
        except Exception as err:  # a plugin's failure never costs the user the analysis
            warnings.warn(f"The feature analysis {name!r} failed and its columns are left out: "
                          f"{type(err).__name__}: {err}", MiStudioWarning, stacklevel=2)
            continue
        columns.update(checked)
        owners.update(dict.fromkeys(checked, name))
    return columns, owners


def _checked(col: str, values: Any, ctx: AnalysisContext,
             taken: dict[str, np.ndarray]) -> np.ndarray:
    arr = np.asarray(values)
    if col in ctx.columns or col in taken or col in ("feature", "label", "score"):
        raise ValueError(f"column {col!r} already exists")
    if arr.shape != (ctx.d_sae,) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"column {col!r} has shape {arr.shape} and dtype {arr.dtype}; "
                         f"one number per feature ({ctx.d_sae}) is needed")
    return arr.astype(np.float32)
