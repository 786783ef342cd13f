"""The self-test: proof that an installation (or a PyInstaller bundle) works offline.

In a temporary workspace it registers the embedded model, reads the built-in corpus, and runs a
tiny version of every core step: tokenize, extract a middle layer, train a TopK SAE and evaluate
it inside the model (in a child process), analyse and label its features, steer with one. Each
step's figures are returned; any failure raises with the core's message. Nothing is written
outside the temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mistudio.core.runtime.tasks import SubTask, TaskState, silent_task
from mistudio.core.store.workspace import Workspace

SELFTEST_TOKENS = 2048
"""Activations extracted and analysed: enough for every step to have something to chew on."""


def self_test(task: TaskState | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Run every core step at toy size on the embedded model; returns seconds and figures per
    step. ``keep``: use this workspace folder instead of a temporary one (it is kept)."""
    task = task or silent_task()
    if keep is not None:
        return _run(Workspace(keep), task)
    with tempfile.TemporaryDirectory(prefix="mistudio-selftest-") as tmp:
        return _run(Workspace(Path(tmp) / "ws"), task)


def _run(ws: Workspace, task: TaskState) -> dict[str, Any]:
    from mistudio.core.activations.extraction import ExtractConfig, default_layer, extract_activations
    from mistudio.core.data.datasets import DatasetConfig, add_dataset
    from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.labels import LabelConfig, label_features
    from mistudio.core.jobs.center import JobCenter
    from mistudio.core.models.registry import ensure_embedded_model, load_model, model_info
    from mistudio.core.sae.trainer import TrainConfig, train_sae
    from mistudio.core.steering.generate import GenerationConfig
    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.session import Steerer, SteeringSpec

    steps: dict[str, Any] = {}

    def step(name: str, start: float, end: float, fn: Callable[[TaskState], Any]) -> Any:
        task.set_status(f"Self-test: {name}")
        t = time.perf_counter()
        out = fn(SubTask(task, start, end))
        steps[name] = {"seconds": round(time.perf_counter() - t, 2)}
        return out

    try:
        model = step("model", 0.0, 0.3, lambda t: ensure_embedded_model(ws))
        info = model_info(ws, model)
        loaded = step("load", 0.3, 0.45, lambda t: load_model(ws, model, device="cpu",
                                                             dtype="float32", task=t))
        steps["model"].update(name=model, layers=info.n_layers, d_model=info.d_model)
        step("dataset", 0.45, 0.5, lambda t: add_dataset(
            ws, "pydoc", DatasetConfig("builtin:pydoc", max_samples=60), t))
        tok = step("tokenize", 0.5, 0.55, lambda t: tokenize_dataset(
            ws, TokenizeConfig("pydoc", model, 64), task=t))
        layer = default_layer(info.n_layers)
        acts = step("extract", 0.55, 0.7, lambda t: extract_activations(
            ws, ExtractConfig(model, tok.name, (layer,), ("resid_post",), 64,
                              max_tokens=SELFTEST_TOKENS, device="cpu"), "acts", t))
        steps["extract"]["tokens"] = acts.summary.tokens
        sae = step("train", 0.7, 0.85, lambda t: train_sae(
            ws, TrainConfig("acts", expansion=4, k=16, steps=40, batch_size=256,
                            eval_tokens=256, device="cpu"), "sae", t))
        steps["train"].update(explained_variance=round(sae.summary.explained_variance, 3),
                              l0=sae.summary.l0)
        # In a model service, as the app does it: in a bundle this checks that a spawned
        # process runs the job (multiprocessing.freeze_support) and not a second app.
        center = JobCenter(ws.root)
        try:
            evaluation = step("evaluate", 0.85, 0.87, lambda t: center.run(
                "evaluate_in_model", "sae", 2, "cpu", task=t))
        finally:
            center.shutdown()
        steps["evaluate"].update(kl_div=round(evaluation.kl_div, 3))
        step("analyze", 0.87, 0.92, lambda t: analyze(ws, AnalyzeConfig(
            "sae", tokens=SELFTEST_TOKENS, top_contexts=5), "sae", t))
        labels = step("label", 0.92, 0.96, lambda t: label_features(
            ws, "sae", LabelConfig(top=10), t))
        steps["label"].update(labelled=labels.labelled_now)
        spec = SteeringSpec(("sae",), (Intervention(0, 20.0),), units="activation",
                            generation=GenerationConfig(max_tokens=6))
        comparison = step("steer", 0.96, 1.0, lambda t: Steerer(ws, spec, loaded=loaded).run(
            "The most important thing about Python is", task=t))
        steps["steer"].update(tokens=len(comparison.steered.token_ids),
                              diverges_at=comparison.diverges_at)
    finally:
        ws.close()
    task.set_progress(1.0)
    return {"ok": True, "workspace": str(ws.root), "steps": steps,
            "seconds": round(sum(s["seconds"] for s in steps.values()), 1)}
