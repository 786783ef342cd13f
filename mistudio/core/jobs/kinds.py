"""Every long operation of the app, declared once: what it runs, and where.

The rule (measured in ``benchmarks/jobs.py``): work that runs torch, a tokenizer, a model or a
long Python loop runs in a child process, since on a thread of the app's process its Python
competes with the UI thread for the interpreter (extraction on a thread stalled the window for
310 ms and took 7.1 s; in the window's spare process, 29 ms and 5.8 s);
work that needs a model already loaded runs in that model's service; only reading what is on
disk runs on a thread. Functions are named by their import path, so that declaring the jobs
imports nothing heavy, and a child process imports only the module of its own job.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Placement(enum.Enum):
    THREAD = "thread"
    """A thread of the app's process: reading the workspace (numpy, Arrow, SQLite)."""
    PROCESS = "process"
    """A fresh child process: torch, tokenizers, models, long Python loops."""
    SERVICE = "service"
    """The service of the model the job needs (one child per loaded model, kept)."""


@dataclass(frozen=True)
class JobKind:
    """One kind of job: a function, where it runs, and how the app titles it."""

    name: str
    function: str
    """``module:function``; called ``fn(ws, *args, task=...)`` (thread, process) or
    ``fn(ctx, *args, task=...)`` in a model service."""
    placement: Placement
    title: str
    """What the status bar says while it runs (a caller may give a more precise one)."""
    model: str | None = None
    """``module:function`` telling, from ``(root, *args)``, which model a service job needs."""

    @property
    def fn(self) -> Callable[..., Any]:
        return resolve(self.function)

    @property
    def model_of(self) -> Callable[..., Any] | None:
        return resolve(self.model) if self.model else None


def resolve(path: str) -> Callable[..., Any]:
    """The function a ``module:function`` path names (importing its module)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


P, T, S = Placement.PROCESS, Placement.THREAD, Placement.SERVICE
_C = "mistudio.core."
_M = _C + "jobs.model_jobs:"
JOBS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("add_dataset", _C + "data.datasets:add_dataset", P, "Adding a dataset"),
    JobKind("add_builtin_dataset", _C + "data.datasets:ensure_builtin_dataset", P,
            "Adding the built-in corpus"),
    JobKind("preview_source", _C + "jobs.adapters:preview_source", P, "Previewing"),
    JobKind("tokenize", _C + "data.tokenization:tokenize_dataset", P, "Tokenizing"),
    JobKind("preview_tokenized", _C + "jobs.adapters:preview_tokenized", T,
            "Reading a tokenized set"),
    JobKind("store_tokenized_preview", _C + "jobs.adapters:store_tokenized_preview", P,
            "Reading a tokenized set"),
    JobKind("add_model", _C + "models.registry:add_model", P, "Registering a model"),
    JobKind("add_builtin_models", _C + "models.registry:ensure_bundled_models", P,
            "Registering the built-in models"),
    JobKind("extract", _C + "activations.extraction:extract_activations", P,
            "Extracting activations"),
    JobKind("import_activations", _C + "activations.importing:import_activations", P,
            "Importing activations"),
    JobKind("faithfulness", _C + "activations.faithfulness:quantization_faithfulness", P,
            "Checking a quantization"),
    JobKind("train", _C + "sae.trainer:train_sae", P, "Training"),
    JobKind("evaluate_in_model", _M + "evaluate_in_model", S, "Evaluating inside the model",
            _M + "model_of_sae"),
    JobKind("analyze", _C + "features.analysis:analyze", P, "Analysing"),
    JobKind("label", _C + "features.labels:label_features", P, "Describing features"),
    JobKind("label_evidence", _C + "features.evidence:label_evidence", P,
            "Reading a label's evidence"),
    JobKind("feature_map", _C + "features.feature_map:feature_map", P,
            "Computing the feature map"),
    JobKind("read_feature_map", _C + "jobs.adapters:read_feature_map", T,
            "Reading the feature map"),
    JobKind("token_texts", _C + "jobs.adapters:token_texts", T, "Reading token texts"),
    JobKind("store_token_texts", _C + "jobs.adapters:store_token_texts", P,
            "Storing token texts"),
    JobKind("correlate", _C + "jobs.adapters:correlate", T, "Correlating features"),
    JobKind("ablate", _M + "ablate", S, "Ablating a feature", _M + "model_of_ablation"),
    JobKind("probe_text", _M + "probe_text", S, "Analysing a text", _M + "model_of_probe"),
    JobKind("steer", _M + "steer", S, "Steering", _M + "model_of_spec"),
    JobKind("evaluate_steering", _M + "evaluate_steering", S, "Evaluating steering",
            _M + "model_of_spec"),
    JobKind("import_sae", _C + "sae.formats:import_sae", P, "Importing an SAE"),
    JobKind("pull_sae", _C + "jobs.adapters:pull_sae", P, "Pulling a published SAE"),
    JobKind("export_sae", _C + "sae.formats:export_sae", P, "Exporting an SAE"),
    JobKind("doctor", _C + "workflows.doctor:doctor", P, "Doctor"),
    JobKind("rebuild_catalog", _C + "jobs.adapters:rebuild_catalog", T,
            "Rebuilding the catalog"),
    JobKind("quickstart", _C + "workflows.quickstart:run_quickstart", P, "Quick start"),
    JobKind("lesson", _C + "workflows.lesson:run_lesson", P, "Lesson"),
)}
"""The app's jobs by name."""
