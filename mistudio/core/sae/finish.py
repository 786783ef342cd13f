"""The end of a training run: evaluation on the held-out rows, the SAE saved in the SAELens
layout, and its manifest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mistudio import __version__
from mistudio.core.activations.store import ActivationSet
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.sae.architectures import architecture
from mistudio.core.sae.checkpoints import CHECKPOINT
from mistudio.core.sae.io import save_sae
from mistudio.core.sae.metrics import evaluate
from mistudio.core.sae.run import SAERun
from mistudio.core.sae.train_config import TrainConfig
from mistudio.core.store.manifests import Histogram, SAEManifest, SAEProvenance, SAESummary, made_now


class Scales(NamedTuple):
    """Training runs on activations scaled to mean norm sqrt(d); the saved weights fold it in."""

    scale_in: float
    scale_out: float


def sample_targets(acts: ActivationSet, key: str, scale: float, exclude: np.ndarray,
                   n: int = 8192) -> torch.Tensor:
    """The first ``n`` rows that training uses (for the data mean and initial thresholds)."""
    stop = min(n + len(exclude), acts.n_rows)
    rows = acts.rows(key, 0, stop)[np.isin(np.arange(stop), exclude, invert=True)][:n]
    return torch.from_numpy(rows) * scale


def eval_batches(acts: ActivationSet, key: str, cfg: TrainConfig, scales: Scales,
                 device: torch.device, n_eval: int) -> Iterator[tuple[Any, Any, Any]]:
    """The held-out last ``n_eval`` rows, scaled like the training data, with the mask of the
    rows the SAE is meant for (massive ones left out unless ``keep_massive``)."""
    for start in range(acts.n_rows - n_eval, acts.n_rows, cfg.batch_size):
        stop = min(start + cfg.batch_size, acts.n_rows)
        x = torch.from_numpy(acts.rows(key, start, stop)).to(device) * scales.scale_in
        y = (torch.from_numpy(acts.rows(cfg.target_hook, start, stop)).to(device)
             * scales.scale_out if cfg.target_hook else None)
        keep = torch.from_numpy(acts.kept_mask(start, stop, cfg.keep_massive,
                                               (key, cfg.target_hook))).to(device)
        yield x, y, keep


def finish_run(run: SAERun, folder: Path, acts: ActivationSet, key: str, scales: Scales,
               n_eval: int, device: torch.device, summary: SAESummary,
               task: TaskState) -> SAEManifest:
    """Evaluate on the held-out rows, save the SAE into ``folder``, return its manifest."""
    cfg, sae = run.cfg, run.sae
    task.set_status(f"Evaluating {run.name}")
    result = evaluate(sae, eval_batches(acts, key, cfg, scales, device, n_eval))
    summary = summary.replace(
        mse=result.mse, explained_variance=result.explained_variance,
        explained_variance_all_tokens=result.explained_variance_all,
        mse_all_tokens=result.mse_all, massive_excluded=result.n_tokens_all - result.n_tokens,
        keep_massive=cfg.keep_massive, l0=result.l0, dead_fraction=result.dead_fraction,
        dense_fraction=result.dense_fraction, eval_tokens=result.n_tokens,
        d_in=run.sae_cfg.d_in, d_sae=run.sae_cfg.d_sae, architecture=cfg.architecture, hook=key,
        target_hook=cfg.target_hook, optimizer=cfg.optimizer, lr=run.lr,
        sparsity_coefficient=run.sparsity.coefficient(cfg.steps)
        if architecture(cfg.architecture).penalty != "none" else None)
    config = asdict(cfg)
    save_sae(folder, sae.cpu(), saelens_metadata(acts, key, cfg),
             {"train_config": config, "summary": summary.to_json(),
              "normalization": scales._asdict(), "mistudio": __version__},
             scales.scale_in, scales.scale_out, torch.from_numpy(result.log10_density))
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return SAEManifest(
        run.name, config=config, summary=summary,
        provenance=SAEProvenance(**made_now(), activations=cfg.activations, model=acts.model,
                                 model_quantization=acts.config.get("quantize", "none")),
        density_histogram=Histogram(**result.density_histogram))


def saelens_metadata(acts: ActivationSet, key: str, cfg: TrainConfig) -> dict[str, Any]:
    """The ``metadata`` of the SAE's cfg.json (SAELens's keys, and how it meets massive tokens)."""
    conf = acts.config
    hook = acts.massive.by_hook.get(key)
    return {"model_name": conf["model"], "hook_name": key,
            "hook_name_out": cfg.target_hook, "context_size": conf.get("context_length"),
            "prepend_bos": acts.manifest.provenance.prepend_bos,
            "dataset_path": conf.get("tokenized"),
            "model_quantization": conf.get("quantize", "none"),
            # the SAE is applied inside the model only to tokens under this input norm
            "keep_massive": cfg.keep_massive,
            "massive_factor": acts.massive.factor,
            "massive_norm_threshold": hook.threshold if hook is not None else None,
            "activation_set": cfg.activations, "sae_lens_training_version": None,
            "mistudio_version": __version__}
