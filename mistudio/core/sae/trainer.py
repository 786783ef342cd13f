"""Training a sparse coder on a stored activation set: one plain, resumable function.

Every ``checkpoint_every`` steps the whole training state (weights, optimiser, schedule, data
position, dead-latent counters) is written atomically, so a cancelled or crashed run resumes and
produces exactly the loss curve an uninterrupted run would (tested).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mistudio import __version__
from mistudio.core.activations import open_activations
from mistudio.core.devices import resolve_device
from mistudio.core.errors import Cancelled, InvalidInputError, ResourceError
from mistudio.core.jobs import TaskState, check_cancelled, silent_task
from mistudio.core.sae import SAEConfig, SparseCoder, build_sae
from mistudio.core.sae.data import ActivationBatches
from mistudio.core.sae.io import save_sae
from mistudio.core.sae.metrics import batch_explained_variance, evaluate
from mistudio.core.sae.resample import resample_dead
from mistudio.core.workspace import MANIFEST, Workspace, building, write_json_atomic

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the SAE's ``mistudio.json``. Defaults suit the embedded model."""

    activations: str
    """Activation set to train on."""
    hook: str | None = None
    """Hook point of the set to encode (layers.L.HOOK); None = the set's first."""
    target_hook: str | None = None
    """Hook point to reconstruct (a transcoder); None = the input itself (an SAE)."""
    architecture: Literal["relu", "topk", "batchtopk", "jumprelu"] = "topk"
    """Activation function; TopK with AuxK needs no sparsity tuning and keeps latents alive."""
    expansion: int = 8
    """d_sae = expansion * d_in."""
    k: int = 32
    """Active latents per token (topk, batchtopk)."""
    skip: Literal["none", "fixed", "learned", "affine"] = "none"
    """Skip connection (the spec's skip SAE is relu + fixed)."""
    sparsity_coefficient: float | None = None
    """L1 (relu) or L0 (jumprelu) weight; None = the architecture's default."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (topk, batchtopk)."""
    steps: int = 1000
    """Optimiser steps (1000 x 2048 tokens: about 5 minutes on two CPU cores)."""
    batch_size: int = 2048
    """Tokens per step (before gradient accumulation)."""
    grad_accumulation: int = 1
    """Batches per optimiser step."""
    lr: float | None = None
    """Peak learning rate; None = 3e-3 * sqrt(4608 / d_sae): measured best of 1e-3, 3e-3, 1e-2
    for 8x SAEs on the embedded model (the 2e-4 / sqrt(d_sae / 16384) of long GPU runs is far
    too slow for runs of a few hundred steps)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up."""
    lr_end_fraction: float = 0.1
    """Cosine decay ends at this fraction of the peak learning rate."""
    sparsity_warmup_fraction: float = 0.05
    """The sparsity coefficient grows linearly from 0 over this fraction of the steps."""
    grad_clip: float = 1.0
    """Clip the gradient norm (0 = off)."""
    dead_after_tokens: int | None = None
    """A latent that has not fired for this many tokens is dead (AuxK trains it); None = a tenth
    of the training tokens, at most 1M (OpenAI's 10M suits far longer runs)."""
    normalize_activations: bool = True
    """Scale inputs to mean norm sqrt(d_in) while training; folded into the saved weights."""
    mixed_precision: Literal["auto", "none", "bfloat16", "float16"] = "auto"
    """Autocast dtype; auto = bfloat16 on GPUs that support it, none on the CPU."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    log_every: int = 10
    """Steps between metric lines (and progress updates)."""
    histogram_every: int = 200
    """Steps between feature-density histograms in the live metrics."""
    early_stop_patience: int = 0
    """Stop when the logged MSE has not improved by 1% over this many log intervals (0 = off)."""
    resample_dead_every: int = 0
    """Give dead latents new directions from badly reconstructed inputs every this many steps
    (0 = off; AuxK already keeps TopK latents alive, this helps ReLU and JumpReLU)."""
    eval_tokens: int = 16384
    """Tokens held out at the end of the set for the final evaluation (at most a tenth of it)."""
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for field in ("steps", "batch_size", "grad_accumulation", "expansion", "checkpoint_every",
                      "log_every"):
            if getattr(self, field) <= 0:
                raise InvalidInputError(f"{field.replace('_', '-')} must be positive.",
                                        f"Got {getattr(self, field)}.")

    def dead_window(self) -> int:
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        total = self.steps * self.batch_size * self.grad_accumulation
        return max(2 * self.batch_size, min(1_000_000, total // 10))

    def default_coefficient(self) -> float:
        if self.sparsity_coefficient is not None:
            return self.sparsity_coefficient
        return {"relu": 0.01, "jumprelu": 0.001}.get(self.architecture, 0.0)


def _lr_lambda(cfg: TrainConfig) -> Any:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr_end_fraction + (1 - cfg.lr_end_fraction) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.mixed_precision == "none" or device.type != "cuda":
        return None
    if cfg.mixed_precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return getattr(torch, cfg.mixed_precision)


def train_sae(ws: Workspace, cfg: TrainConfig, name: str, task: TaskState | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate and save ``saes/NAME``; resumes a partial run of the same settings."""
    task = task or silent_task()
    final, partial = ws.artifact_path("sae", name), ws.partial_path("sae", name)
    if final.exists() and not overwrite:
        raise InvalidInputError(f"An SAE named {name!r} already exists.",
                                "Choose another --name, or pass --overwrite to replace it.")
    acts = open_activations(ws, cfg.activations)
    key = cfg.hook or acts.keys[0]
    for k in filter(None, (key, cfg.target_hook)):
        if k not in acts.keys:
            raise InvalidInputError(f"Activation set {cfg.activations!r} has no hook point {k!r}.",
                                    f"It has: {', '.join(acts.keys)}.")
    device = resolve_device(cfg.device)
    scale_in = acts.norm_stats(key).scale_to_sqrt_d if cfg.normalize_activations else 1.0
    scale_out = (acts.norm_stats(cfg.target_hook).scale_to_sqrt_d
                 if cfg.target_hook and cfg.normalize_activations else scale_in)
    d_in = acts.d_model
    sae_cfg = SAEConfig(cfg.architecture, d_in, cfg.expansion * d_in, None, cfg.k, cfg.skip,
                        transcoder=cfg.target_hook is not None)
    torch.manual_seed(cfg.seed)
    sae = build_sae(sae_cfg)
    sae.reset_parameters(seed=cfg.seed)
    lr = cfg.lr or 3e-3 * math.sqrt(4608 / sae_cfg.d_sae)
    config_dict = asdict(cfg)
    if overwrite:
        shutil.rmtree(partial, ignore_errors=True)
    ckpt_path = partial / CHECKPOINT
    ckpt = None
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if _resume_key(ckpt["config"]) != _resume_key(json.loads(json.dumps(config_dict))):
            raise InvalidInputError(f"An interrupted training run named {name!r} with different "
                                    "settings exists.", "Run it with its original settings to "
                                    "resume, or pass --overwrite.")
    n_eval = min(cfg.eval_tokens, acts.n_rows // 10)
    loader = ActivationBatches(acts, key, cfg.target_hook, cfg.batch_size, cfg.seed, scale_in,
                               scale_out, device, n_rows=acts.n_rows - n_eval)
    sae.init_b_dec(_sample_targets(acts, cfg.target_hook or key, scale_out))
    sae.to(device).train()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=device)
    window_fires = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=device)
    step, tokens, window_batches = 0, 0, 0
    if ckpt is not None:
        sae.load_state_dict(ckpt["sae"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        loader.load_state_dict(ckpt["loader"])
        since_fired, window_fires = ckpt["since_fired"], ckpt["window_fires"]
        step, tokens, window_batches = ckpt["step"], ckpt["tokens"], ckpt["window_batches"]
        _truncate_metrics(partial / METRICS, step)
    partial.mkdir(parents=True, exist_ok=True)
    ws.catalog.put("sae", name, partial, "partial", config_dict, {"activations": cfg.activations},
                   {"step": step})

    amp = _autocast_dtype(cfg, device)
    dead_window = cfg.dead_window()
    coef = cfg.default_coefficient()
    sparsity_warmup = max(1, int(cfg.sparsity_warmup_fraction * cfg.steps))
    best_mse, stale = float("inf"), 0
    t0, t0_tokens = time.perf_counter(), tokens

    def checkpoint(loader_state: dict[str, int] | None = None) -> None:
        state = {"sae": sae.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "loader": loader_state or loader.state_dict(),
                 "since_fired": since_fired, "window_fires": window_fires, "step": step,
                 "tokens": tokens, "window_batches": window_batches,
                 "config": json.loads(json.dumps(config_dict))}
        tmp = partial / f".{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    with ws.job("train", name, config_dict), building(final, partial, keep_partial=True), \
            open(partial / METRICS, "a", encoding="utf-8") as log, closing(loader):
        try:
            while step < cfg.steps:
                check_cancelled(task)
                step_start = loader.state_dict()
                warm = min(1.0, (step + 1) / sparsity_warmup)
                log_now = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
                sums: dict[str, float] = {}
                for _ in range(cfg.grad_accumulation):
                    x, y = next(loader)
                    dead = since_fired >= dead_window
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        out = sae(x, y, dead_F=dead, want_l0=log_now)
                    losses = out.losses
                    loss = losses["mse"] + coef * warm * (losses.get("l1", 0) + losses.get("l0", 0)) \
                        + cfg.aux_coefficient * losses.get("aux", 0)
                    if not torch.isfinite(loss):
                        raise InvalidInputError(
                            f"The loss became {float(loss)} at step {step}; the last checkpoint "
                            f"(step {step - step % cfg.checkpoint_every}) is kept.",
                            "Lower --lr, or check the activations for outliers.")
                    (loss / cfg.grad_accumulation).backward()
                    since_fired += x.shape[0]
                    since_fired[out.fired_F] = 0
                    for n, v in losses.items():
                        sums[n] = sums.get(n, 0.0) + float(v.detach()) / cfg.grad_accumulation
                    sums["l0"] = sums.get("l0", 0.0) + float(out.l0) / cfg.grad_accumulation
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                step += 1
                tokens += x.shape[0] * cfg.grad_accumulation
                window_fires += out.fired_F  # per batch, cheap: which latents fired at all
                window_batches += 1
                if log_now:
                    row = _metrics_row(step, tokens, sums, x, y, out.x_hat, since_fired, cfg,
                                       sched.get_last_lr()[0], tokens - t0_tokens,
                                       time.perf_counter() - t0)
                    if step % cfg.histogram_every == 0:
                        row["density_histogram"] = _window_histogram(window_fires, window_batches)
                        window_fires.zero_()
                        window_batches = 0
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    task.emit_partial(row)
                    task.set_status(f"step {step:,}/{cfg.steps:,}  mse {row['mse']:.4f}  "
                                    f"L0 {row['l0']:.1f}  EV {row['explained_variance']:.3f}  "
                                    f"dead {row['dead_fraction']:.1%}")
                    task.set_progress(0.95 * step / cfg.steps)
                    if cfg.early_stop_patience:
                        if row["mse"] < best_mse * 0.99:
                            best_mse, stale = row["mse"], 0
                        else:
                            stale += 1
                            if stale >= cfg.early_stop_patience:
                                break
                if cfg.resample_dead_every and step % cfg.resample_dead_every == 0 and \
                        step < cfg.steps:
                    dead_now = since_fired >= dead_window
                    revived = resample_dead(sae, opt, dead_now, x, x if y is None else y,
                                            cfg.seed + step)
                    since_fired[dead_now] = 0
                    if revived:
                        task.emit_partial({"event": "resampled", "step": step, "latents": revived})
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
        except Cancelled:
            ws.catalog.put("sae", name, partial, "partial", config_dict,
                           {"activations": cfg.activations}, {"step": step})
            raise
        except RuntimeError as err:
            if not _is_out_of_memory(err):
                raise
            opt.zero_grad(set_to_none=True)
            checkpoint(step_start)  # the last completed step, with the data position before it
            ws.catalog.put("sae", name, partial, "partial", config_dict,
                           {"activations": cfg.activations}, {"step": step})
            half = max(1, cfg.batch_size // 2)
            raise ResourceError(
                f"Out of memory at step {step} with batches of {cfg.batch_size:,} tokens on "
                f"{device.type}; the run is saved at step {step}.",
                f"Resume it with the same command plus --batch-size {half} --grad-accumulation "
                f"{cfg.grad_accumulation * 2} (the same tokens per step).") from err
        task.set_status("Evaluating")
        result = evaluate(sae, _eval_batches(acts, key, cfg, scale_in, scale_out, device, n_eval))
        metadata = _saelens_metadata(acts, key, cfg)
        summary = {"steps": step, "tokens": tokens, "mse": result.mse,
                   "explained_variance": result.explained_variance, "l0": result.l0,
                   "dead_fraction": result.dead_fraction, "dense_fraction": result.dense_fraction,
                   "eval_tokens": result.n_tokens, "d_in": d_in, "d_sae": sae_cfg.d_sae,
                   "architecture": cfg.architecture, "hook": key, "target_hook": cfg.target_hook}
        save_sae(partial, sae.cpu(), metadata, {"train_config": config_dict, "summary": summary,
                                                "normalization": {"scale_in": scale_in,
                                                                  "scale_out": scale_out},
                                                "mistudio": __version__},
                 scale_in, scale_out,
                 torch.from_numpy(result.log10_density))
        manifest = {"kind": "sae", "name": name, "status": "complete", "config": config_dict,
                    "provenance": {"activations": cfg.activations,
                                   "model": acts.manifest["config"]["model"],
                                   "mistudio": __version__, "created": time.time()},
                    "summary": summary, "density_histogram": result.density_histogram}
        write_json_atomic(partial / MANIFEST, manifest)
        ckpt_path.unlink(missing_ok=True)
    ws.register(manifest)
    task.set_progress(1.0)
    return manifest


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: everything but how a step's tokens are split into batches."""
    key = {k: v for k, v in config.items() if k not in ("batch_size", "grad_accumulation")}
    key["tokens_per_step"] = config["batch_size"] * config["grad_accumulation"]
    return key


def _is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or \
        "can't allocate memory" in text


def _sample_targets(acts: Any, key: str, scale: float, n: int = 8192) -> torch.Tensor:
    return torch.from_numpy(acts.rows(key, 0, min(n, acts.n_rows))) * scale


def _eval_batches(acts: Any, key: str, cfg: TrainConfig, scale_in: float, scale_out: float,
                  device: torch.device, n_eval: int) -> Any:
    """The held-out last ``n_eval`` rows, scaled like the training data."""
    for start in range(acts.n_rows - n_eval, acts.n_rows, cfg.batch_size):
        stop = min(start + cfg.batch_size, acts.n_rows)
        x = torch.from_numpy(acts.rows(key, start, stop)).to(device) * scale_in
        y = (torch.from_numpy(acts.rows(cfg.target_hook, start, stop)).to(device) * scale_out
             if cfg.target_hook else None)
        yield x, y


def _metrics_row(step: int, tokens: int, losses: dict[str, float], x: torch.Tensor,
                 y: torch.Tensor | None, x_hat: torch.Tensor, since_fired: torch.Tensor,
                 cfg: TrainConfig, lr: float, run_tokens: int, elapsed: float) -> dict[str, Any]:
    target = x if y is None else y
    return {"step": step, "tokens": tokens, **{k: round(v, 6) for k, v in losses.items()},
            "explained_variance": round(batch_explained_variance(target, x_hat.detach()), 5),
            "dead_fraction": float((since_fired >= cfg.dead_window()).float().mean()),
            "lr": lr, "tokens_per_s": round(run_tokens / elapsed, 1) if elapsed > 0 else None}


def _window_histogram(fires: torch.Tensor, batches: int) -> dict[str, list[float]]:
    """log10 of the fraction of recent batches in which each latent fired at all."""
    import numpy as np

    freq = fires.double().cpu() / max(batches, 1)
    log10 = torch.log10(freq.clamp_min(1.0 / (batches + 1))).numpy()
    counts, edges = np.histogram(log10, bins=30, range=(min(-5.0, float(log10.min())), 0.0))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _saelens_metadata(acts: Any, key: str, cfg: TrainConfig) -> dict[str, Any]:
    conf = acts.manifest["config"]
    return {"model_name": conf["model"], "hook_name": key,
            "hook_name_out": cfg.target_hook, "context_size": conf.get("context_length"),
            "prepend_bos": None, "dataset_path": conf.get("tokenized"),
            "activation_set": cfg.activations, "sae_lens_training_version": None,
            "mistudio_version": __version__}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint being resumed (they will be redone)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)


def open_sae(ws: Workspace, name: str, device: str = "cpu") -> tuple[SparseCoder, dict[str, Any]]:
    """A trained or imported SAE from the workspace, ready for inference on raw activations."""
    from mistudio.core.sae.io import load_sae

    art = ws.catalog.get("sae", name)
    if art.status != "complete":
        raise InvalidInputError(f"SAE {name!r} has not finished training (step "
                                f"{art.summary.get('step', 0)}).",
                                "Run the same `mistudio train` command again to resume it.")
    return load_sae(Path(art.path), device)
