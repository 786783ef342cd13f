"""Training sparse coders on a stored activation set: one plain, resumable function.

Several SAEs (a sweep over architecture, width, k, sparsity, optimiser or learning rate) train
in one pass over the data: each batch is read once and fed to all of them. Each SAE is one
artifact built through the workspace's lifecycle (lock, job, partial folder, swap); its
checkpoints (:mod:`.checkpoints`) let a cancelled or crashed run resume exactly where it was.
Under ``torchrun`` the ranks share the work (:mod:`mistudio.core.sae.distributed`).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, closing
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np
import torch

from mistudio.core.activations.store import ActivationSet, open_activations
from mistudio.core.models.devices import (
    available_memory,
    cpu_has_native_bfloat16,
    resolve_device,
)
from mistudio.core.runtime.errors import (
    Cancelled,
    InvalidInputError,
    ResourceError,
    is_disk_full,
)
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.sae.checkpoints import (
    CHECKPOINT,
    METRICS,
    open_log,
    read_metrics,
    resume,
    save_checkpoints,
)
from mistudio.core.sae.data import ActivationBatches
from mistudio.core.sae.distributed import Ranks, tensors_checksum
from mistudio.core.sae.finish import Scales, finish_run, sample_targets
from mistudio.core.sae.io import export_tensors, open_sae
from mistudio.core.sae.run import SAERun
from mistudio.core.sae.train_config import TrainConfig, check_sweep, training_bytes
from mistudio.core.store.files import human_bytes
from mistudio.core.store.lifecycle import Build
from mistudio.core.store.manifests import SAEManifest, SAEProvenance, SAESummary
from mistudio.core.store.workspace import Workspace

__all__ = ["CHECKPOINT", "METRICS", "TrainConfig", "open_sae", "read_metrics", "train_sae",
           "train_saes"]


def train_sae(ws: Workspace, cfg: TrainConfig, name: str, task: TaskState | None = None,
              overwrite: bool = False) -> SAEManifest:
    """Train, evaluate and save ``saes/NAME``; resumes a partial run of the same settings."""
    return train_saes(ws, [(cfg, name)], task, overwrite)[0]


def train_saes(ws: Workspace, runs: list[tuple[TrainConfig, str]], task: TaskState | None = None,
               overwrite: bool = False) -> list[SAEManifest]:
    """Train several SAEs on the same batches in one pass; returns their manifests (on the
    main rank; other ranks of a distributed run get theirs from it)."""
    task = task or silent_task()
    names = [n for _, n in runs]
    if not runs:
        raise InvalidInputError("Nothing to train.", "Give at least one SAE configuration.")
    if len(set(names)) != len(names):
        raise InvalidInputError("Two SAEs of the sweep have the same name.", "Name each one.")
    check_sweep([c for c, _ in runs])
    for name in names:
        ws.refuse_existing("sae", name, overwrite)
    ranks = Ranks()
    setup = _prepare(ws, runs, ranks)
    with ExitStack() as stack:
        # rank 0 alone writes: its builds hold the locks and empty the partial folders of an
        # overwrite before any rank reads a checkpoint from them
        builds = [stack.enter_context(ws.build("sae", n, "train", asdict(c), overwrite,
                                               resumable=True)) if ranks.is_main else None
                  for c, n in runs]
        ranks.barrier()
        _Loop(setup, builds, [ws.partial_path("sae", n) for n in names], ranks, task).run()
    ranks.barrier()
    task.set_progress(1.0)
    if ranks.is_main:
        return [b.manifest for b in builds]  # type: ignore[union-attr,misc]
    return [SAEManifest(n) for n in names]


class _Setup(NamedTuple):
    """What every run of a sweep shares: the data, its scaling, the device, the held-out rows."""

    acts: ActivationSet
    key: str
    device: torch.device
    scales: Scales
    n_eval: int
    runs: list[SAERun]
    loader: ActivationBatches
    train_rows: int
    """Rows training draws from: the set minus its held-out tail and the massive tokens."""


def _prepare(ws: Workspace, runs: list[tuple[TrainConfig, str]], ranks: Ranks) -> _Setup:
    """Open the activations, check that the sweep fits, build its runs and the batch loader."""
    cfg0 = runs[0][0]
    acts = open_activations(ws, cfg0.activations)
    key = cfg0.hook or acts.keys[0]
    for k in filter(None, (key, cfg0.target_hook)):
        if k not in acts.keys:
            raise InvalidInputError(f"Activation set {cfg0.activations!r} has no hook point {k!r}.",
                                    f"It has: {', '.join(acts.keys)}.")
    if cfg0.batch_size % ranks.world:
        raise InvalidInputError(f"«batch_size» {cfg0.batch_size} does not split over "
                                f"{ranks.world} processes.",
                                f"Use a multiple of {ranks.world}.")
    device = ranks.device(resolve_device(cfg0.device))
    _check_memory([c for c, _ in runs], acts.d_model, device)
    scale_in = acts.norm_stats(key).scale_to_sqrt_d if cfg0.normalize_activations else 1.0
    scale_out = (acts.norm_stats(cfg0.target_hook).scale_to_sqrt_d
                 if cfg0.target_hook and cfg0.normalize_activations else scale_in)
    n_eval = min(cfg0.eval_tokens, acts.n_rows // 10)
    exclude = acts.excluded_rows(cfg0.keep_massive, (key, cfg0.target_hook))
    sample_in = sample_targets(acts, key, scale_in, exclude)
    sample_out = (sample_targets(acts, cfg0.target_hook, scale_out, exclude)
                  if cfg0.target_hook else sample_in)
    states = [SAERun(c, n, acts.d_model, acts.d_model, sample_in, sample_out, device, ranks)
              for c, n in runs]
    loader = ActivationBatches(acts, key, cfg0.target_hook, cfg0.batch_size // ranks.world,
                               cfg0.seed, scale_in, scale_out, device, rank=ranks.rank,
                               world_size=ranks.world, n_rows=acts.n_rows - n_eval,
                               exclude=exclude)
    train_rows = acts.n_rows - n_eval - int(np.count_nonzero(exclude < acts.n_rows - n_eval))
    return _Setup(acts, key, device, Scales(scale_in, scale_out), n_eval, states, loader,
                  train_rows)


def _check_memory(configs: list[TrainConfig], d_in: int, device: torch.device) -> None:
    need = sum(training_bytes(c, d_in) for c in configs)
    have = available_memory(device)
    if need > have:
        raise ResourceError(
            f"Training {'these SAEs' if len(configs) > 1 else 'this SAE'} needs about "
            f"{human_bytes(need)} on {device.type}, but only {human_bytes(have)} is free.",
            "Use a smaller «batch_size» (with «grad_accumulation» for the same tokens per "
            "step) or «expansion», train fewer SAEs at once, or close other programs.")


class _Loop:
    """The steps of a sweep: batches in, every run's update, logs, checkpoints; then each run
    evaluated and saved into its build."""

    def __init__(self, setup: _Setup, builds: list[Build | None], partials: list[Path],
                 ranks: Ranks, task: TaskState) -> None:
        self.setup, self.builds, self.partials = setup, builds, partials
        self.ranks, self.task = ranks, task
        self.runs = setup.runs
        self.cfg0 = self.runs[0].cfg
        self.step, self.tokens = resume(self.runs, partials, setup.loader, ranks, setup.device)
        self.tokens_per_step = self.cfg0.batch_size * self.cfg0.grad_accumulation
        self.amp = _autocast_dtype(self.cfg0, setup.device)
        passes = self.cfg0.steps * self.tokens_per_step / max(setup.train_rows, 1)
        if passes > MANY_PASSES:
            task.set_status(passes_note(passes, setup.train_rows, self.cfg0.steps,
                                        self.tokens_per_step))
        for run, b in zip(self.runs, builds, strict=True):
            if b is not None:
                b.manifest = SAEManifest(run.name, "partial", asdict(run.cfg),
                                         SAEProvenance(activations=run.cfg.activations),
                                         SAESummary(steps=self.step))
                b.show_partial(b.manifest)

    def run(self) -> None:
        try:
            with ExitStack() as stack:
                stack.enter_context(closing(self.setup.loader))
                logs: list[TextIO | None] = [
                    stack.enter_context(open_log(p, self.step)) if b is not None else None
                    for b, p in zip(self.builds, self.partials, strict=True)]
                self._train(logs)
        except BaseException:
            self._discard_unresumable()
            raise
        self._finish()

    def _discard_unresumable(self) -> None:
        """A run stopped before its first checkpoint has nothing to resume from: its partial
        folder and catalog row go (an SAE it would replace stays as it is)."""
        for b, partial in zip(self.builds, self.partials, strict=True):
            if b is not None and not (partial / CHECKPOINT).is_file():
                b.discard()

    def _train(self, logs: list[TextIO | None]) -> None:
        t0, t0_tokens = time.perf_counter(), self.tokens
        step_start = self.setup.loader.state_dict()
        try:
            while self.step < self.cfg0.steps and any(r.active for r in self.runs):
                check_cancelled(self.task)
                step_start = self.setup.loader.state_dict()
                self._one_step(logs, t0, t0_tokens)
        except OSError as err:
            if not is_disk_full(err):
                raise
            # checkpoints fall on multiples of checkpoint_every; at such a step the failed
            # write was this step's log or checkpoint, so the one before it is what is kept
            every = self.cfg0.checkpoint_every
            last = (self.step - 1) - (self.step - 1) % every
            kept = (f"the checkpoint of step {last} is kept" if last else
                    "no checkpoint had been written yet")
            raise ResourceError(f"The disk filled up while training at step {self.step}; "
                                f"{kept}.", "Free some space and run the same command again "
                                "to resume.") from err
        except RuntimeError as err:
            if not _is_out_of_memory(err):
                raise
            raise self._out_of_memory(step_start) from err
        except Cancelled:
            if self.step > 0 and self.ranks.world == 1:  # a cancel always resumes where it was
                save_checkpoints(self.runs, self.partials, self.ranks, self.step, self.tokens,
                                 self.setup.loader.state_dict())
            raise

    def _one_step(self, logs: list[TextIO | None], t0: float, t0_tokens: int) -> None:
        cfg0, step = self.cfg0, self.step
        log_now = (step + 1) % cfg0.log_every == 0 or step + 1 == cfg0.steps
        active = [r for r in self.runs if r.active]
        for _ in range(cfg0.grad_accumulation):
            x, y = next(self.setup.loader)
            for run in active:
                run.accumulate(x, y, step, log_now, self.amp)
        for run in active:
            run.apply_step(step, self.tokens_per_step)
        self.step += 1
        self.tokens += self.tokens_per_step
        for run, log, b in zip(self.runs, logs, self.builds, strict=True):
            if run.active and log_now:
                _log_step(run, log, self.task, self.step, self.tokens, self.tokens - t0_tokens,
                          time.perf_counter() - t0, len(self.runs) > 1)
            if run.active:
                run.end_step()
                revived = run.maybe_resample(self.step)
                if revived:
                    self.task.emit_partial({"event": "resampled", "sae": run.name,
                                            "step": self.step, "latents": revived})
            if b is not None and b.manifest is not None:
                b.manifest.summary.steps = self.step
        if log_now:
            self.task.set_progress(0.95 * self.step / cfg0.steps)
        if self.step % cfg0.checkpoint_every == 0:
            save_checkpoints(self.runs, self.partials, self.ranks, self.step, self.tokens,
                             self.setup.loader.state_dict())

    def _out_of_memory(self, step_start: dict[str, int]) -> ResourceError:
        """Save the last completed step (with the data position before the failed one) and
        say how to resume with the same tokens per step in smaller batches."""
        for run in self.runs:
            run.opt.zero_grad()
        save_checkpoints(self.runs, self.partials, self.ranks, self.step, self.tokens,
                         step_start)
        cfg0 = self.cfg0
        half = max(1, cfg0.batch_size // 2)
        return ResourceError(
            f"Out of memory at step {self.step} with batches of {cfg0.batch_size:,} tokens on "
            f"{self.setup.device.type}; the run is saved at step {self.step}.",
            f"Resume it with «batch_size={half}» and «grad_accumulation="
            f"{cfg0.grad_accumulation * 2}» (the same tokens per step).")

    def _finish(self) -> None:
        """Evaluate each run on the held-out rows and put its files and manifest in its build."""
        self.task.set_status("Evaluating")
        s = self.setup
        # what each rank would save: equal on every rank when they stayed in sync
        checksums = self.ranks.gather([_final_checksum(r, s.scales) for r in self.runs])
        for i, (run, b) in enumerate(zip(self.runs, self.builds, strict=True)):
            run.opt.eval_mode()  # schedule-free: the averaged weights are the model
            if b is None:
                continue
            summary = SAESummary(steps=run.steps_done, tokens=run.tokens_done,
                                 train_rows=s.train_rows,
                                 passes=round(run.tokens_done / max(s.train_rows, 1), 2),
                                 world_size=self.ranks.world,
                                 rank_checksums=[c[i] for c in checksums])
            b.manifest = finish_run(run, b.folder, s.acts, s.key, s.scales, s.n_eval, s.device,
                                    summary, self.task)


MANY_PASSES = 3
"""More passes over the same training tokens than this, and training says so."""


def passes_note(passes: float, train_rows: int, steps: int, tokens_per_step: int) -> str:
    """What a person should know when training reads each token many times."""
    return (f"{steps:,} steps x {tokens_per_step:,} tokens pass over the {train_rows:,} "
            f"training tokens {passes:.1f} times: an SAE that sees each token this often can "
            f"learn those tokens rather than the model's features. {MANY_PASSES} passes or "
            f"fewer take {steps * tokens_per_step // MANY_PASSES:,} tokens: extract more, or "
            "train fewer steps.")


def _final_checksum(run: SAERun, scales: Scales) -> float:
    run.opt.eval_mode()
    return tensors_checksum(export_tensors(run.sae, *scales))


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
                    f"dead (recent) {row['dead_fraction']:.1%}")


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The lower precision a run may use: bfloat16 on GPUs that support it and on CPUs that
    compute it natively (elsewhere torch emulates it, slower than float32); float16 on GPUs
    when asked."""
    if cfg.mixed_precision == "none":
        return None
    if device.type == "cuda":
        if cfg.mixed_precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return getattr(torch, cfg.mixed_precision)
    if device.type == "cpu" and cfg.mixed_precision in ("auto", "bfloat16") \
            and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None


def _is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or \
        "can't allocate memory" in text
