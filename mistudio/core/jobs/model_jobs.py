"""The jobs that run in a model service (:mod:`.services`): each takes the service's context,
uses the model it holds, and keeps what it builds on it for the next call.

And the functions that tell the center which model a job needs (``model_of``): run in the app's
process, they read the catalog only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mistudio.core.jobs.services import ModelKey, ServiceContext
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.store.files import read_manifest
from mistudio.core.store.workspace import Workspace


def steer(ctx: ServiceContext, spec: Any, prompt: str, device: str,
          task: TaskState | None = None) -> tuple[Any, list[str], list[str]]:
    """Both sides of a steering comparison, and each side's token texts. The steerer (model and
    SAEs) is kept for the next call on the same SAEs (as saved now) and device."""

    steerer = _steerer(ctx, spec, device)
    result = steerer.run(prompt, spec, task)
    tok = steerer.loaded.tokenizer
    return (result, [tok.decode([t]) for t in result.plain.token_ids],
            [tok.decode([t]) for t in result.steered.token_ids])


def evaluate_steering(ctx: ServiceContext, spec: Any, cfg: Any, device: str,
                      task: TaskState | None = None) -> Any:
    """A steering evaluation over prompts, on the service's steerer."""
    import dataclasses

    from mistudio.core.steering.evaluate import evaluate_steering as evaluate

    saes = tuple(dict.fromkeys([*spec.saes, *(s for s, _ in cfg.feature_scorers)]))
    steerer = _steerer(ctx, dataclasses.replace(spec, saes=saes), device)
    return evaluate(ctx.ws, spec, cfg, task, device, steerer)


def _steerer(ctx: ServiceContext, spec: Any, device: str) -> Any:
    from mistudio.core.steering.session import Steerer

    saved = tuple((n, ctx.ws.catalog.get("sae", n).updated) for n in spec.saes)
    key = _sae_model(ctx.ws, spec.saes, spec.model, device)
    loaded = ctx.model(*key)
    return ctx.kept("steerer", (saved, key),
                    lambda: Steerer(ctx.ws, spec, device, loaded=loaded))


def ablate(ctx: ServiceContext, folder: str, stamp: Any, feature: int, device: str,
           task: TaskState | None = None) -> Any:
    """The effect of removing ``feature`` from its top contexts (features.ablation)."""
    from mistudio.core.features.ablation import FeatureModel

    loaded = ctx.model(*_analysis_model(Path(folder), device))
    model = ctx.kept("ablation", (folder, stamp, device),
                     lambda: FeatureModel(ctx.ws, Path(folder), loaded=loaded))
    if task is not None:
        task.set_status(f"Ablating feature {feature}")
    return model.ablate(feature)


def probe_text(ctx: ServiceContext, analysis: str, folder: str, stamp: Any, text: str,
               watch: tuple[int, ...], device: str, task: TaskState | None = None) -> Any:
    """The analysis's features on ``text``, with the rows the app lists (features.probe)."""
    from mistudio.core.features.probe import TextProbe, describe

    loaded = ctx.model(*_analysis_model(Path(folder), device))
    probe = ctx.kept("probe", (analysis, stamp, device),
                     lambda: TextProbe(ctx.ws, analysis, device, loaded=loaded))
    acts = probe.run(text, k=8, watch=watch)
    return acts, describe(acts, None, n=15)


def evaluate_in_model(ctx: ServiceContext, sae: str, n_sequences: int, device: str,
                      task: TaskState | None = None) -> Any:
    """CE loss score and KL of an SAE spliced into the service's model (sae.evaluation)."""
    from mistudio.core.sae.evaluation import evaluate_in_model as evaluate

    loaded = ctx.model(*sae_model_key(ctx.ws, sae, device))
    return evaluate(ctx.ws, sae, n_sequences, device, task, loaded=loaded)


# -- which model a job needs (run in the app's process) ------------------------------------------

def model_of_spec(root: str, spec: Any, *rest: Any, **kw: Any) -> ModelKey:
    ws = Workspace(root)
    try:
        return _sae_model(ws, spec.saes, spec.model, rest[-1] if rest else "auto")
    finally:
        ws.close()


def model_of_ablation(root: str, folder: str, stamp: Any, feature: int, device: str,
                      **kw: Any) -> ModelKey:
    return _analysis_model(Path(folder), device)


def model_of_probe(root: str, analysis: str, folder: str, stamp: Any, text: str,
                   watch: tuple[int, ...], device: str, **kw: Any) -> ModelKey:
    return _analysis_model(Path(folder), device)


def model_of_sae(root: str, sae: str, n_sequences: int, device: str, **kw: Any) -> ModelKey:
    ws = Workspace(root)
    try:
        return sae_model_key(ws, sae, device)
    finally:
        ws.close()


def sae_model_key(ws: Workspace, sae: str, device: str) -> ModelKey:
    art = ws.catalog.get("sae", sae)
    return ModelKey(art.provenance.model or "", device, art.provenance.model_quantization)


def _sae_model(ws: Workspace, saes: tuple[str, ...], model: str | None,
               device: str) -> ModelKey:
    """The model (and the weights' quantization) the SAEs were trained on."""
    art = ws.catalog.get("sae", saes[0])
    return ModelKey(model or art.provenance.model or "", device,
                    art.provenance.model_quantization or "none")


def _analysis_model(folder: Path, device: str) -> ModelKey:
    return ModelKey(read_manifest(folder, f"analysis at {folder}").provenance.model, device)
