"""One SAE being trained: its weights, optimiser, sparsity schedule and dead-latent counters.

The trainer feeds every run of a sweep the same batches; a run does its own forward and backward
(:meth:`SAERun.accumulate`), its own update (:meth:`SAERun.apply_step`) and its own metrics.
Its whole state is one dict (:meth:`SAERun.state_dict`), written into the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae import SAEConfig, SparseCoder, build_sae
from mistudio.core.sae.architectures import architecture
from mistudio.core.sae.distributed import Ranks
from mistudio.core.sae.jumprelu import JumpReLUSAE
from mistudio.core.sae.metrics import batch_explained_variance
from mistudio.core.sae.optim import SAEOptimizer
from mistudio.core.sae.resample import resample_dead
from mistudio.core.sae.sparsity import SparsityController
from mistudio.core.sae.train_config import TrainConfig

WEIGHTED_LOSSES = {"mse", "l1", "l0_penalty", "aux"}
"""Loss terms the trainer weighs; any other term a coder returns is added unweighted."""
THRESHOLD_LR_SCALE = 30.0
"""JumpReLU log-thresholds learn this many times faster than the weights."""


class SAERun:
    def __init__(self, cfg: TrainConfig, name: str, d_in: int, d_out: int,
                 sample_BD: Tensor, sample_BO: Tensor, device: torch.device, ranks: Ranks) -> None:
        self.cfg, self.name, self.device, self.ranks = cfg, name, device, ranks
        self.sae_cfg = SAEConfig(cfg.architecture, d_in, cfg.expansion * d_in,
                                 d_out if d_out != d_in else None, cfg.k, cfg.skip,
                                 transcoder=cfg.target_hook is not None)
        torch.manual_seed(cfg.seed)
        self.sae: SparseCoder = build_sae(self.sae_cfg)
        self.sae.reset_parameters(seed=cfg.seed)
        self.sae.init_b_dec(sample_BO)
        if cfg.unit_norm_decoder:
            self.sae.normalize_decoder()
        if isinstance(self.sae, JumpReLUSAE):  # start at the L0 we aim for
            self.sae.init_threshold_for_l0(sample_BD, cfg.target_l0 or cfg.k)
        self.sae.to(device).train()
        self.params = [p for p in self.sae.parameters() if p.requires_grad]
        self.lr = cfg.peak_lr(self.sae_cfg.d_sae)
        groups: list[dict[str, Any]] = [{"params": [p for n, p in self.sae.named_parameters()
                                                    if n != "log_threshold_F"]}]
        if isinstance(self.sae, JumpReLUSAE):
            # Each step moves log(threshold) by about lr; thresholds must follow pre-activations
            # that grow several-fold during a run of a few hundred steps.
            groups.append({"params": [self.sae.log_threshold_F],
                           "lr": self.lr * THRESHOLD_LR_SCALE})
        self.opt = SAEOptimizer(cfg.optimizer, groups, self.lr, cfg.warmup_steps, cfg.steps,
                                cfg.lr_end_fraction)
        self.sparsity = SparsityController(cfg.default_coefficient(),
                                           max(1, int(cfg.sparsity_warmup_fraction * cfg.steps)),
                                           cfg.target_l0)
        d_sae = self.sae_cfg.d_sae
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.window_fires = torch.zeros(d_sae, dtype=torch.float64, device=device)
        """Tokens each latent fired on since the last density histogram."""
        self.window_tokens = 0
        self.dead_window = cfg.dead_window()
        self.active = True  # False once early stopping ends the run
        self.steps_done, self.tokens_done = 0, 0
        self.best_mse, self.stale = math.inf, 0
        self._sums: dict[str, float] = {}
        self._fires_F = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self._last: tuple[Tensor, Tensor | None, Tensor] | None = None

    # -- one optimiser step ---------------------------------------------------------------------
    def accumulate(self, x: Tensor, y: Tensor | None, step: int, want_l0: bool,
                   amp: torch.dtype | None) -> None:
        """Forward and backward of one micro-batch (a 1/grad_accumulation share of the step)."""
        cfg = self.cfg
        dead = self.since_fired >= self.dead_window if cfg.uses_dead_mask() else None
        want_l0 = want_l0 or cfg.target_l0 is not None
        own = self.sae.handles_precision  # it chooses where lower precision is safe
        self.sae.select_dtype = amp if own else None
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None and not own):
            out = self.sae(x, y, dead_F=dead, want_l0=want_l0)
        losses = out.losses
        loss = losses["mse"] + self.sparsity.coefficient(step) * (
            losses.get("l1", 0) + losses.get("l0_penalty", 0)) + cfg.aux_weight() * losses.get("aux", 0)
        for name in losses.keys() - WEIGHTED_LOSSES:  # an architecture's own terms, as they are
            loss = loss + losses[name]
        if not torch.isfinite(loss):
            last = step - step % cfg.checkpoint_every
            kept = (f"the last checkpoint (step {last}) is kept" if last > 0 else
                    "no checkpoint had been written yet")
            raise InvalidInputError(
                f"The loss of {self.name} became {float(loss)} at step {step}; {kept}.",
                "Lower the learning rate, or check the activations for outliers.")
        (loss / cfg.grad_accumulation).backward()
        self._fires_F += out.fires_F
        share = 1.0 / cfg.grad_accumulation
        for n, v in losses.items():
            self._sums[n] = self._sums.get(n, 0.0) + float(v.detach()) * share
        self._sums["l0"] = self._sums.get("l0", 0.0) + float(out.l0) * share
        self._last = (x, y, out.x_hat.detach())

    def apply_step(self, step: int, tokens_per_step: int) -> None:
        """Average gradients over ranks, clip, update, constrain; update the dead counters."""
        self.ranks.average_gradients(self.params)
        if self.cfg.unit_norm_decoder:
            self.sae.remove_parallel_decoder_grad()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.cfg.unit_norm_decoder:
            self.sae.normalize_decoder()
        self.ranks.average_buffers(self.sae)
        fires_F = self.ranks.sum_over_ranks(self._fires_F)
        self.since_fired += tokens_per_step
        self.since_fired[fires_F > 0] = 0
        self.window_fires += fires_F
        self.window_tokens += tokens_per_step
        self._fires_F.zero_()
        self.steps_done += 1
        self.tokens_done += tokens_per_step
        if self.cfg.target_l0 is not None:
            self.sparsity.observe(step, self.ranks.mean_of({"l0": self._sums["l0"]})["l0"])

    def metrics(self, step: int, tokens: int, run_tokens: int, elapsed: float) -> dict[str, Any]:
        """The step's metric line (then forgets the step's sums)."""
        assert self._last is not None
        x, y, x_hat = self._last
        target = x if y is None else y
        values = {k: v for k, v in self._sums.items() if math.isfinite(v)}
        values["explained_variance"] = batch_explained_variance(target, x_hat)
        values = self.ranks.mean_of(values)
        row: dict[str, Any] = {"step": step, "tokens": tokens,
                               **{k: round(v, 6) for k, v in values.items()}}
        ev = values["explained_variance"]
        row["explained_variance"] = round(ev, 5) if math.isfinite(ev) else None  # JSON null
        row["dead_fraction"] = float((self.since_fired >= self.dead_window).float().mean())
        row["lr"] = self.opt.lr
        if architecture(self.sae_cfg.architecture).penalty != "none":
            row["sparsity_coefficient"] = self.sparsity.coefficient(step - 1)
        row["tokens_per_s"] = round(run_tokens / elapsed, 1) if elapsed > 0 else None
        if step % self.cfg.histogram_every == 0:
            row["density_histogram"] = self._window_histogram()
        return row

    def end_step(self) -> None:
        self._sums = {}

    def check_plateau(self, mse: float) -> None:
        """Early stopping: no 1% improvement of the logged MSE for ``patience`` log intervals."""
        if not self.cfg.early_stop_patience:
            return
        if mse < self.best_mse * 0.99:
            self.best_mse, self.stale = mse, 0
        else:
            self.stale += 1
            self.active = self.stale < self.cfg.early_stop_patience

    def maybe_resample(self, step: int) -> int:
        every = self.cfg.resample_dead_every
        if not every or step % every or step >= self.cfg.steps or self._last is None:
            return 0
        x, y, _ = self._last
        if self.ranks.distributed:  # the same surgery on every rank: rank 0's batch
            x = self.ranks.from_main(x.cpu()).to(self.device)
            y = None if y is None else self.ranks.from_main(y.cpu()).to(self.device)
        dead_now = self.since_fired >= self.dead_window
        revived = resample_dead(self.sae, self.opt, dead_now, x, x if y is None else y,
                                self.cfg.seed + step)
        self.since_fired[dead_now] = 0
        return revived

    def _window_histogram(self) -> dict[str, list[float]]:
        """log10 of the fraction of recent training tokens on which each latent fired (per-token
        density, as SAELens and the papers plot it; never fired: log10 of 1 / (tokens + 1))."""
        freq = self.window_fires.cpu() / max(self.window_tokens, 1)
        log10 = torch.log10(freq.clamp_min(1.0 / (self.window_tokens + 1))).numpy()
        counts, edges = np.histogram(log10, bins=40, range=(min(-7.0, float(log10.min())), 0.0))
        self.window_fires.zero_()
        self.window_tokens = 0
        return {"counts": counts.tolist(), "edges": edges.tolist()}

    # -- checkpoint state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"sae": self.sae.state_dict(), "optimizer": self.opt.state_dict(),
                "sparsity": self.sparsity.state_dict(), "since_fired": self.since_fired,
                "window_fires": self.window_fires, "window_tokens": self.window_tokens,
                "early_stop": [self.best_mse, self.stale, self.active],
                "done": [self.steps_done, self.tokens_done]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["optimizer"])
        self.sparsity.load_state_dict(state["sparsity"])
        self.since_fired = state["since_fired"].to(self.device)
        if "window_tokens" in state:
            self.window_fires = state["window_fires"].to(self.device, torch.float64)
            self.window_tokens = int(state["window_tokens"])
        # else: a checkpoint that counted batches, not tokens: its window starts afresh
        self.best_mse, self.stale, self.active = state["early_stop"]
        self.steps_done, self.tokens_done = state["done"]
