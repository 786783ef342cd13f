"""Training sparse coders on a stored activation set: one plain, resumable function.

Several SAEs (a sweep over architecture, width, k, sparsity, optimiser or learning rate) train
in one pass over the data: each batch is read once and fed to all of them. Every
``checkpoint_every`` steps each run's whole state (weights, optimiser, schedule, data position,
dead-latent counters) is written atomically, so a cancelled or crashed run resumes and produces
exactly the loss curve an uninterrupted run would (tested). Under ``torchrun`` the ranks share
the work (:mod:`mistudio.core.sae.distributed`).
"""

from __future__ import annotations

import errno
import io
import json
import shutil
import time
from contextlib import ExitStack, closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from mistudio import __version__
from mistudio.core.activations.store import ActivationSet, open_activations
from mistudio.core.models.devices import available_memory, resolve_device
from mistudio.core.runtime.errors import Cancelled, InvalidInputError, ResourceError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.sae import SparseCoder
from mistudio.core.sae.data import ActivationBatches
from mistudio.core.sae.distributed import Ranks, tensors_checksum
from mistudio.core.sae.io import export_tensors, save_sae
from mistudio.core.sae.metrics import evaluate
from mistudio.core.sae.run import SAERun
from mistudio.core.sae.train_config import TrainConfig, check_sweep, training_bytes
from mistudio.core.store.files import atomic_write, building, human_bytes, write_json_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.workspace import Workspace

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"

__all__ = ["CHECKPOINT", "METRICS", "TrainConfig", "open_sae", "read_metrics", "train_sae",
           "train_saes"]


def train_sae(ws: Workspace, cfg: TrainConfig, name: str, task: TaskState | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate and save ``saes/NAME``; resumes a partial run of the same settings."""
    return train_saes(ws, [(cfg, name)], task, overwrite)[0]


def train_saes(ws: Workspace, runs: list[tuple[TrainConfig, str]], task: TaskState | None = None,
               overwrite: bool = False) -> list[dict[str, Any]]:
    """Train several SAEs on the same batches in one pass; returns their manifests."""
    task = task or silent_task()
    configs, names = [c for c, _ in runs], [n for _, n in runs]
    if not runs:
        raise InvalidInputError("Nothing to train.", "Give at least one SAE configuration.")
    if len(set(names)) != len(names):
        raise InvalidInputError("Two SAEs of the sweep have the same name.", "Name each one.")
    check_sweep(configs)
    for name in names:
        ws.refuse_existing("sae", name, overwrite)
    ranks = Ranks()
    with ExitStack() as locks:
        if ranks.is_main:  # rank 0 alone writes; the lock is taken before the partial folders
            for name in names:  # are read (resume) or deleted (--overwrite)
                locks.enter_context(ws.writer("sae", name, "train"))
        return _train(ws, runs, task, overwrite, ranks)


def _train(ws: Workspace, runs: list[tuple[TrainConfig, str]], task: TaskState, overwrite: bool,
           ranks: Ranks) -> list[dict[str, Any]]:
    configs, names = [c for c, _ in runs], [n for _, n in runs]
    cfg0 = configs[0]
    acts = open_activations(ws, cfg0.activations)
    key = cfg0.hook or acts.keys[0]
    for k in filter(None, (key, cfg0.target_hook)):
        if k not in acts.keys:
            raise InvalidInputError(f"Activation set {cfg0.activations!r} has no hook point {k!r}.",
                                    f"It has: {', '.join(acts.keys)}.")
    if cfg0.batch_size % ranks.world:
        raise InvalidInputError(f"--batch-size {cfg0.batch_size} does not split over "
                                f"{ranks.world} processes.",
                                f"Use a multiple of {ranks.world}.")
    device = ranks.device(resolve_device(cfg0.device))
    need = sum(training_bytes(c, acts.d_model) for c in configs)
    have = available_memory(device)
    if need > have:
        raise ResourceError(
            f"Training {'these SAEs' if len(configs) > 1 else 'this SAE'} needs about "
            f"{human_bytes(need)} on {device.type}, but only {human_bytes(have)} is free.",
            "Use a smaller --batch-size (with --grad-accumulation for the same tokens per "
            "step) or --expansion, train fewer SAEs at once, or close other programs.")
    scale_in = acts.norm_stats(key).scale_to_sqrt_d if cfg0.normalize_activations else 1.0
    scale_out = (acts.norm_stats(cfg0.target_hook).scale_to_sqrt_d
                 if cfg0.target_hook and cfg0.normalize_activations else scale_in)
    n_eval = min(cfg0.eval_tokens, acts.n_rows // 10)
    exclude = acts.excluded_rows(cfg0.keep_massive)
    sample_in = _sample_targets(acts, key, scale_in, exclude)
    sample_out = (_sample_targets(acts, cfg0.target_hook, scale_out, exclude)
                  if cfg0.target_hook else sample_in)
    states = [SAERun(c, n, acts.d_model, acts.d_model, sample_in, sample_out, device, ranks)
              for c, n in runs]
    loader = ActivationBatches(acts, key, cfg0.target_hook, cfg0.batch_size // ranks.world,
                               cfg0.seed, scale_in, scale_out, device, rank=ranks.rank,
                               world_size=ranks.world, n_rows=acts.n_rows - n_eval,
                               exclude=exclude)
    partials = [ws.partial_path("sae", n) for n in names]
    if overwrite and ranks.is_main:
        for p in partials:
            shutil.rmtree(p, ignore_errors=True)
    ranks.barrier()
    step, tokens = _resume(states, partials, loader, ranks, device)
    if ranks.is_main:
        for run, partial in zip(states, partials, strict=True):
            _truncate_metrics(partial / METRICS, step)
            partial.mkdir(parents=True, exist_ok=True)
            _catalog_partial(ws, run, partial, step)

    amp = _autocast_dtype(cfg0, device)
    tokens_per_step = cfg0.batch_size * cfg0.grad_accumulation
    t0, t0_tokens = time.perf_counter(), tokens

    def checkpoint(at_step: int, at_tokens: int, loader_state: dict[str, int]) -> None:
        loaders = ranks.gather(loader_state)
        if not ranks.is_main:
            return
        for run, partial in zip(states, partials, strict=True):
            state = {"run": run.state_dict(), "loaders": loaders, "step": at_step,
                     "tokens": at_tokens, "world": ranks.world,
                     "config": json.loads(json.dumps(asdict(run.cfg)))}
            # the previous checkpoint stays in place until this one is complete on disk
            # serialised in memory first: torch's zip writer turns a full disk into an opaque
            # RuntimeError, a plain write gives OSError(ENOSPC) that is reported as such
            buffer = io.BytesIO()
            torch.save(state, buffer)
            with atomic_write(partial / CHECKPOINT) as fh:
                fh.write(buffer.getbuffer())

    with ExitStack() as stack:
        stack.enter_context(closing(loader))
        logs: list[TextIO | None] = [None] * len(states)
        if ranks.is_main:
            for i, (run, final, partial) in enumerate(zip(states, _finals(ws, names), partials,
                                                          strict=True)):
                stack.enter_context(ws.job("train", run.name, asdict(run.cfg)))
                stack.enter_context(building(final, partial, keep_partial=True))
                logs[i] = stack.enter_context(open(partial / METRICS, "a", encoding="utf-8"))
        step_start = loader.state_dict()
        try:
            while step < cfg0.steps and any(r.active for r in states):
                check_cancelled(task)
                step_start = loader.state_dict()
                log_now = (step + 1) % cfg0.log_every == 0 or step + 1 == cfg0.steps
                active = [r for r in states if r.active]
                for _ in range(cfg0.grad_accumulation):
                    x, y = next(loader)
                    for run in active:
                        run.accumulate(x, y, step, log_now, amp)
                for run in active:
                    run.apply_step(step, tokens_per_step)
                step += 1
                tokens += tokens_per_step
                for run, log in zip(states, logs, strict=True):
                    if run.active and log_now:
                        _log_step(run, log, task, step, tokens, tokens - t0_tokens,
                                  time.perf_counter() - t0, len(states) > 1)
                    if run.active:
                        run.end_step()
                        revived = run.maybe_resample(step)
                        if revived:
                            task.emit_partial({"event": "resampled", "sae": run.name,
                                               "step": step, "latents": revived})
                if log_now:
                    task.set_progress(0.95 * step / cfg0.steps)
                if step % cfg0.checkpoint_every == 0:
                    checkpoint(step, tokens, loader.state_dict())
        except Cancelled:
            if ranks.is_main:
                for run, partial in zip(states, partials, strict=True):
                    _catalog_partial(ws, run, partial, step)
            raise
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            # checkpoints fall on multiples of checkpoint_every; at such a step the failed
            # write was this step's log or checkpoint, so the one before it is what is kept
            last = (step - 1) - (step - 1) % cfg0.checkpoint_every
            kept = (f"the checkpoint of step {last} is kept" if last else
                    "no checkpoint had been written yet")
            raise ResourceError(f"The disk filled up while training at step {step}; {kept}.",
                                "Free some space and run the same command again to resume.") \
                from err
        except RuntimeError as err:
            if not _is_out_of_memory(err):
                raise
            for run in states:
                run.opt.zero_grad()
            # the last completed step, with the data position before the failed one
            checkpoint(step, tokens, step_start)
            if ranks.is_main:
                for run, partial in zip(states, partials, strict=True):
                    _catalog_partial(ws, run, partial, step)
            half = max(1, cfg0.batch_size // 2)
            raise ResourceError(
                f"Out of memory at step {step} with batches of {cfg0.batch_size:,} tokens on "
                f"{device.type}; the run is saved at step {step}.",
                f"Resume it with the same command plus --batch-size {half} --grad-accumulation "
                f"{cfg0.grad_accumulation * 2} (the same tokens per step).") from err
        task.set_status("Evaluating")
        manifests = []
        # what each rank would save: equal on every rank when they stayed in sync
        checksums = ranks.gather([_final_checksum(r, scale_in, scale_out) for r in states])
        for i, (run, partial) in enumerate(zip(states, partials, strict=True)):
            run.opt.eval_mode()  # schedule-free: the averaged weights are the model
            summary = {"steps": run.steps_done, "tokens": run.tokens_done,
                       "world_size": ranks.world,
                       "rank_checksums": [c[i] for c in checksums]}
            if ranks.is_main:
                manifests.append(_finish(ws, run, partial, acts, key, scale_in, scale_out,
                                         n_eval, device, summary, task))
    ranks.barrier()
    if ranks.is_main:
        for m in manifests:
            ws.register(m)
    task.set_progress(1.0)
    return manifests if ranks.is_main else [{"name": n, "rank": ranks.rank} for n in names]


def _finals(ws: Workspace, names: list[str]) -> list[Path]:
    return [ws.artifact_path("sae", n) for n in names]


def _final_checksum(run: SAERun, scale_in: float, scale_out: float) -> float:
    run.opt.eval_mode()
    return tensors_checksum(export_tensors(run.sae, scale_in, scale_out))


def _resume(states: list[SAERun], partials: list[Path], loader: ActivationBatches, ranks: Ranks,
            device: torch.device) -> tuple[int, int]:
    """Load each run's checkpoint; all runs of a sweep must be at the same step."""
    ckpts = [ranks.load_checkpoint(p / CHECKPOINT, device) for p in partials]
    found = [c for c in ckpts if c is not None]
    if not found:
        return 0, 0
    if len(found) != len(ckpts) or len({c["step"] for c in found}) > 1:
        raise InvalidInputError("The interrupted runs of this sweep stopped at different steps.",
                                "Resume them one by one, or pass --overwrite to start again.")
    for run, ckpt in zip(states, ckpts, strict=True):
        if _resume_key(ckpt["config"]) != _resume_key(json.loads(json.dumps(asdict(run.cfg)))):
            raise InvalidInputError(f"An interrupted training run named {run.name!r} with "
                                    "different settings exists.", "Run it with its original "
                                    "settings to resume, or pass --overwrite.")
        if ckpt.get("world", 1) != ranks.world:
            raise InvalidInputError(
                f"{run.name!r} was interrupted while training on {ckpt.get('world', 1)} "
                f"processes; this run has {ranks.world}.",
                "Resume it with the same number of processes, or pass --overwrite.")
        run.load_state_dict(ckpt["run"])
    loader.load_state_dict(found[0]["loaders"][ranks.rank])
    return int(found[0]["step"]), int(found[0]["tokens"])


def _log_step(run: SAERun, log: TextIO | None, task: TaskState, step: int, tokens: int,
              run_tokens: int, elapsed: float, sweep: bool) -> None:
    row = run.metrics(step, tokens, run_tokens, elapsed)
    run.check_plateau(row["mse"])
    if log is None:  # ranks other than 0 only take part in the reductions
        return
    log.write(json.dumps(row) + "\n")
    log.flush()
    task.emit_partial({"sae": run.name, **row} if sweep else row)
    prefix = f"{run.name}: " if sweep else ""
    ev = row["explained_variance"]
    task.set_status(f"{prefix}step {step:,}/{run.cfg.steps:,}  mse {row['mse']:.4f}  "
                    f"L0 {row['l0']:.1f}  EV {'n/a' if ev is None else f'{ev:.3f}'}  "
                    f"dead {row['dead_fraction']:.1%}")


def _catalog_partial(ws: Workspace, run: SAERun, partial: Path, step: int) -> None:
    ws.catalog.put("sae", run.name, partial, "partial", asdict(run.cfg),
                   {"activations": run.cfg.activations}, {"step": step})


def _finish(ws: Workspace, run: SAERun, partial: Path, acts: ActivationSet, key: str,
            scale_in: float, scale_out: float, n_eval: int, device: torch.device,
            summary: dict[str, Any], task: TaskState) -> dict[str, Any]:
    """Evaluate on the held-out rows, save in the SAELens layout, write the manifest."""
    cfg, sae = run.cfg, run.sae
    task.set_status(f"Evaluating {run.name}")
    result = evaluate(sae, _eval_batches(acts, key, cfg, scale_in, scale_out, device, n_eval))
    summary = {**summary, "mse": result.mse, "explained_variance": result.explained_variance,
               # the same over every held-out token, massive ones included (comparison only)
               "explained_variance_all_tokens": result.explained_variance_all,
               "mse_all_tokens": result.mse_all,
               "massive_excluded": result.n_tokens_all - result.n_tokens,
               "keep_massive": cfg.keep_massive,
               "l0": result.l0, "dead_fraction": result.dead_fraction,
               "dense_fraction": result.dense_fraction, "eval_tokens": result.n_tokens,
               "d_in": run.sae_cfg.d_in, "d_sae": run.sae_cfg.d_sae,
               "architecture": cfg.architecture, "hook": key, "target_hook": cfg.target_hook,
               "optimizer": cfg.optimizer, "lr": run.lr}
    if cfg.architecture in ("relu", "jumprelu"):
        summary["sparsity_coefficient"] = run.sparsity.coefficient(cfg.steps)
    config = asdict(cfg)
    save_sae(partial, sae.cpu(), _saelens_metadata(acts, key, cfg),
             {"train_config": config, "summary": summary,
              "normalization": {"scale_in": scale_in, "scale_out": scale_out},
              "mistudio": __version__},
             scale_in, scale_out, torch.from_numpy(result.log10_density))
    manifest = {"kind": "sae", "name": run.name, "status": "complete", "config": config,
                "provenance": {"activations": cfg.activations,
                               "model": acts.manifest["config"]["model"],
                               # the weights the activations came from: an SAE of an int4 model
                               # says so, and is steered and evaluated on the same weights
                               "model_quantization": acts.manifest["config"].get("quantize",
                                                                                 "none"),
                               "mistudio": __version__, "created": time.time()},
                "summary": summary, "density_histogram": result.density_histogram}
    write_json_atomic(partial / MANIFEST, manifest)
    (partial / CHECKPOINT).unlink(missing_ok=True)
    return manifest


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.mixed_precision == "none" or device.type != "cuda":
        return None
    if cfg.mixed_precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return getattr(torch, cfg.mixed_precision)


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: everything but how a step's tokens are split into batches."""
    key = {k: v for k, v in config.items() if k not in ("batch_size", "grad_accumulation")}
    key.setdefault("keep_massive", True)  # runs started before the flag trained on every row
    key["tokens_per_step"] = config["batch_size"] * config["grad_accumulation"]
    return key


def _is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or \
        "can't allocate memory" in text


def _sample_targets(acts: Any, key: str, scale: float, exclude: Any,
                    n: int = 8192) -> torch.Tensor:
    """The first ``n`` rows that training uses (for the data mean and initial thresholds)."""
    stop = min(n + len(exclude), acts.n_rows)
    rows = acts.rows(key, 0, stop)[np.isin(np.arange(stop), exclude, invert=True)][:n]
    return torch.from_numpy(rows) * scale


def _eval_batches(acts: Any, key: str, cfg: TrainConfig, scale_in: float, scale_out: float,
                  device: torch.device, n_eval: int) -> Any:
    """The held-out last ``n_eval`` rows, scaled like the training data, with the mask of the
    rows the SAE is meant for (massive ones left out unless ``keep_massive``)."""
    for start in range(acts.n_rows - n_eval, acts.n_rows, cfg.batch_size):
        stop = min(start + cfg.batch_size, acts.n_rows)
        x = torch.from_numpy(acts.rows(key, start, stop)).to(device) * scale_in
        y = (torch.from_numpy(acts.rows(cfg.target_hook, start, stop)).to(device) * scale_out
             if cfg.target_hook else None)
        keep = torch.from_numpy(acts.kept_mask(start, stop, cfg.keep_massive)).to(device)
        yield x, y, keep


def _saelens_metadata(acts: Any, key: str, cfg: TrainConfig) -> dict[str, Any]:
    conf = acts.manifest["config"]
    massive = acts.massive
    return {"model_name": conf["model"], "hook_name": key,
            "hook_name_out": cfg.target_hook, "context_size": conf.get("context_length"),
            "prepend_bos": acts.manifest.get("provenance", {}).get("prepend_bos"),
            "dataset_path": conf.get("tokenized"),
            "model_quantization": conf.get("quantize", "none"),
            # the SAE is applied inside the model only to tokens under this input norm
            "keep_massive": cfg.keep_massive,
            "massive_factor": massive.get("factor"),
            "massive_norm_threshold": massive.get("by_hook", {}).get(key, {}).get("threshold"),
            "activation_set": cfg.activations, "sae_lens_training_version": None,
            "mistudio_version": __version__}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint being resumed (they will be redone)."""
    if not path.exists():
        return
    keep = [json.dumps(row) for row in read_metrics(path) if row["step"] <= step]
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{line}\n" for line in keep))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metric lines of a run. A line cut short by a crash or a full disk (the tail of an
    append-only log) is skipped, not an error: the checkpoint decides where a run resumes."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def open_sae(ws: Workspace, name: str, device: str = "cpu") -> tuple[SparseCoder, dict[str, Any]]:
    """A trained or imported SAE from the workspace, ready for inference on raw activations."""
    from mistudio.core.sae.io import load_sae

    art = ws.catalog.get("sae", name)
    if art.status != "complete":
        raise InvalidInputError(f"SAE {name!r} has not finished training (step "
                                f"{art.summary.get('step', 0)}).",
                                "Run the same `mistudio train` command again to resume it.")
    return load_sae(Path(art.path), device)
