"""How good a sparse coder is: one place for every metric, each formula written down.

Over an evaluation set of N tokens with inputs x_n, targets y_n (= x_n for an SAE) and
reconstructions y_hat_n:

- ``mse``: (1 / (N * d_out)) * sum_n ||y_n - y_hat_n||^2;
- ``explained_variance``: 1 - sum_n ||y_n - y_hat_n||^2 / sum_n ||y_n - mean(y)||^2, the
  variance taken about the mean of the whole evaluation set (SAELens >= 6.45.1 and SAEBench's
  "conventional" formula; not per batch, not about zero). FVU = 1 - explained variance;
- ``l0``: mean number of non-zero latents per token;
- ``dead_fraction``: latents that never fired on the evaluation set; ``dense_fraction``: latents
  firing on more than 10% of tokens;
- ``log10_density``: log10 of each latent's firing frequency (floor 1 / (N + 1)).

The N tokens are the ones the SAE is meant for: massive tokens (attention sinks, see
:mod:`mistudio.core.activations.massive`) are left out unless the SAE was trained with them, because one of
them can carry most of a set's variance. ``explained_variance_all`` and ``mse_all`` are the
same formulas over every token, reported beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mistudio.core.sae.coder import SparseCoder

DENSE_THRESHOLD = 0.1


class EvalResult(NamedTuple):
    n_tokens: int
    mse: float
    explained_variance: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    log10_density: np.ndarray
    """[d_sae] log10 firing frequency."""
    density_histogram: dict[str, list[float]]
    """Counts of latents per log10-density bin: {"counts", "edges"}."""
    n_tokens_all: int
    """Tokens evaluated including the left-out massive ones."""
    explained_variance_all: float
    """Explained variance over every token, massive ones included (for comparison only)."""
    mse_all: float


class ReconstructionStats:
    """Streaming sums behind mse and explained variance (float64, so large sets stay exact)."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.d_out = 0
        self.sq_err = 0.0
        self.sum_y: Tensor | None = None
        self.sum_sq_y = 0.0
        self.l0_sum = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    def update(self, y_BO: Tensor, y_hat_BO: Tensor, latents_BF: Tensor) -> None:
        y, y_hat = y_BO.double(), y_hat_BO.double()
        self.n += y.shape[0]
        self.d_out = y.shape[1]
        self.sq_err += float((y - y_hat).pow(2).sum())
        self.sum_y = y.sum(0) if self.sum_y is None else self.sum_y + y.sum(0)
        self.sum_sq_y += float(y.pow(2).sum())
        active = latents_BF != 0
        self.l0_sum += float(active.sum())
        self.fires += active.sum(0).double().cpu()

    def reconstruction(self) -> tuple[float, float]:
        """(explained variance, mse) of what was added so far."""
        n = max(self.n, 1)
        if self.sum_y is None:
            return float("nan"), float("nan")
        # sum ||y - mean||^2 = sum ||y||^2 - N ||mean||^2
        total_var = self.sum_sq_y - float(self.sum_y.pow(2).sum()) / n
        ev = 1.0 - self.sq_err / total_var if total_var > 0 else float("nan")
        return ev, self.sq_err / (n * max(self.d_out, 1))

    def result(self, n_bins: int = 40) -> EvalResult:
        n = max(self.n, 1)
        assert self.sum_y is not None, "no data"
        freq = self.fires / n
        log10 = torch.log10(freq.clamp_min(1.0 / (n + 1))).numpy()
        counts, edges = np.histogram(log10, bins=n_bins, range=(min(-8.0, float(log10.min())), 0.0))
        ev, mse = self.reconstruction()
        return EvalResult(n_tokens_all=self.n, explained_variance_all=ev, mse_all=mse,
            n_tokens=self.n, mse=mse, explained_variance=ev,
            l0=self.l0_sum / n, dead_fraction=float((self.fires == 0).double().mean()),
            dense_fraction=float((freq > DENSE_THRESHOLD).double().mean()),
            log10_density=log10.astype(np.float32),
            density_histogram={"counts": counts.tolist(), "edges": edges.tolist()})


@torch.no_grad()
def evaluate(sae: SparseCoder,
             batches: Iterable[tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None,
                                                                     Tensor | None]]) -> EvalResult:
    """Metrics of ``sae`` (in eval mode, as it will be used) over the given batches: (x, y) or
    (x, y, keep_B), where ``keep_B`` marks the tokens the SAE is meant for (the others count
    only in the ``*_all`` figures)."""
    was_training = sae.training
    sae.eval()
    stats = ReconstructionStats(sae.cfg.d_sae)
    every = ReconstructionStats(sae.cfg.d_sae)
    try:
        for x, y, *rest in batches:
            keep = rest[0] if rest else None
            latents = sae.encode(x)
            y_hat = sae.decode(latents)
            skip = sae.skip_out(x)
            if skip is not None:
                y_hat = y_hat + skip
            target = x if y is None else y
            every.update(target, y_hat, latents)
            if keep is None:
                stats.update(target, y_hat, latents)
            elif bool(keep.any()):
                stats.update(target[keep], y_hat[keep], latents[keep])
    finally:
        sae.train(was_training)
    ev_all, mse_all = every.reconstruction()
    return stats.result()._replace(n_tokens_all=every.n, explained_variance_all=ev_all,
                                   mse_all=mse_all)


def batch_explained_variance(y_BO: Tensor, y_hat_BO: Tensor) -> float:
    """The same formula over one batch (for live training curves); NaN for a batch of fewer than
    two tokens, whose variance about its own mean is zero (1 - error / 1e-12 is meaningless)."""
    if y_BO.shape[0] < 2:
        return float("nan")
    var = (y_BO - y_BO.mean(0)).pow(2).sum()
    return float(1.0 - (y_BO - y_hat_BO).pow(2).sum() / var.clamp_min(1e-12))
