"""Random training batches from a stored activation set, without loading it into memory.

Rows are grouped in blocks of ``block_rows`` consecutive rows. Each epoch visits the blocks in a
seeded random order; ``buffer_rows`` worth of blocks are read into a buffer (float16, as stored),
shuffled row by row, and cut into batches; rows listed in ``exclude`` (massive tokens, see
:mod:`mistudio.core.activations.massive`) are dropped from every buffer. The position in this schedule
(epoch, buffer, batch) is the loader's whole state, so a resumed run sees exactly the batches
an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mistudio.core.activations.store import ActivationSet
from mistudio.core.runtime.errors import InvalidInputError


class NonFiniteActivations(InvalidInputError):
    """The activation set holds NaN or Inf values."""


class ActivationBatches:
    """An endless, resumable iterator of (input [B, D], target [B, O] or None) float32 batches."""

    def __init__(self, acts: ActivationSet, key: str, target_key: str | None, batch_size: int,
                 seed: int = 0, scale_in: float = 1.0, scale_out: float = 1.0,
                 device: torch.device | str = "cpu", block_rows: int = 4096,
                 buffer_rows: int = 65536, rank: int = 0, world_size: int = 1,
                 n_rows: int | None = None, exclude: np.ndarray | None = None) -> None:
        self.n_rows = acts.n_rows if n_rows is None else min(n_rows, acts.n_rows)
        """Rows used: the first n_rows of the set (the rest is held out for evaluation)."""
        if self.n_rows < batch_size * world_size:
            raise InvalidInputError(
                f"Activation set {acts.manifest.name!r} has {self.n_rows:,} training tokens, "
                f"fewer than one batch of {batch_size:,}.",
                "Use a smaller «batch_size» or extract more tokens.")
        self.exclude = np.sort(np.asarray(exclude if exclude is not None else [], np.int64))
        """Rows never put in a batch (sorted)."""
        self.acts, self.key, self.target_key = acts, key, target_key
        self.batch_size, self.seed = batch_size, seed
        self.scale_in, self.scale_out = scale_in, scale_out
        self.device = torch.device(device)
        self.block_rows = min(block_rows, max(batch_size, 1))
        n_blocks = -(-self.n_rows // self.block_rows)
        self.blocks = np.arange(n_blocks)[rank::world_size]
        self.blocks_per_buffer = max(1, min(len(self.blocks), -(-max(buffer_rows, batch_size)
                                                                 // self.block_rows)))
        self.epoch, self.buffer_index, self.batch_index = 0, 0, 0
        self._buffer: tuple[np.ndarray, np.ndarray | None] | None = None
        self._pool: Any = None
        self._prefetch: tuple[tuple[int, int], Any] | None = None
        self._start_prefetch((0, 0))  # overlap the first read with the caller's set-up

    # -- resumable state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "buffer_index": self.buffer_index,
                "batch_index": self.batch_index, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off; a different batch size continues at the same row
        (rows are shuffled independently of the batch size)."""
        self.epoch, self.buffer_index = int(state["epoch"]), int(state["buffer_index"])
        rows_done = int(state["batch_index"]) * int(state.get("batch_size", self.batch_size))
        self.batch_index = rows_done // self.batch_size
        self._buffer = None

    @property
    def n_buffers(self) -> int:
        return -(-len(self.blocks) // self.blocks_per_buffer)

    # -- iteration ------------------------------------------------------------------------------
    def _next_position(self, epoch: int, buffer_index: int) -> tuple[int, int]:
        return (epoch, buffer_index + 1) if buffer_index + 1 < self.n_buffers else (epoch + 1, 0)

    def _load_buffer(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The current buffer (prefetched while the previous one was used), and start reading the
        next one in a background thread so disk reads overlap with training."""
        pos = (self.epoch, self.buffer_index)
        if self._prefetch is not None and self._prefetch[0] == pos:
            buffer = self._prefetch[1].result()
        else:
            buffer = self._read(*pos)
        self._start_prefetch(self._next_position(*pos))
        return buffer

    def _start_prefetch(self, pos: tuple[int, int]) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mistudio-batches")
        self._prefetch = (pos, self._pool.submit(self._read, *pos))

    def _read(self, epoch: int, buffer_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.blocks)
        mine = order[buffer_index * self.blocks_per_buffer:
                     (buffer_index + 1) * self.blocks_per_buffer]
        ranges = [(int(b) * self.block_rows, min((int(b) + 1) * self.block_rows, self.n_rows))
                  for b in sorted(mine)]
        row_ids = np.concatenate([np.arange(a, z) for a, z in ranges])
        x = np.concatenate([self.acts.gather(self.key, a, z) for a, z in ranges])
        y = (np.concatenate([self.acts.gather(self.target_key, a, z) for a, z in ranges])
             if self.target_key else None)
        if len(self.exclude):
            hit = np.searchsorted(self.exclude, row_ids)
            keep = ~((hit < len(self.exclude)) & (self.exclude[np.minimum(
                hit, len(self.exclude) - 1)] == row_ids))
            row_ids, x = row_ids[keep], x[keep]
            y = y[keep] if y is not None else None
        for arr, key in ((x, self.key), (y, self.target_key)):
            if arr is not None and not np.isfinite(arr).all():
                bad = row_ids[~np.isfinite(arr).all(axis=1)][:5]
                raise NonFiniteActivations(
                    f"Activation set {self.acts.manifest.name!r} has NaN or Inf values at "
                    f"{key} (rows {', '.join(map(str, bad))}...); training stopped.",
                    "Extract it again (with «model_dtype=float32» if the model ran in float16).")
        perm = np.random.default_rng([self.seed, epoch, buffer_index, 1]).permutation(len(x))
        return x[perm], (y[perm] if y is not None else None)

    def __iter__(self) -> ActivationBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        while True:
            if self._buffer is None:
                self._buffer = self._load_buffer()
            x, y = self._buffer
            start = self.batch_index * self.batch_size
            if start + self.batch_size <= len(x):
                self.batch_index += 1
                return self._to_tensor(x[start:start + self.batch_size], self.scale_in), (
                    self._to_tensor(y[start:start + self.batch_size], self.scale_out)
                    if y is not None else None)
            # The buffer's tail (less than one batch) is skipped; the next epoch reorders rows.
            self._buffer, self.batch_index = None, 0
            self.epoch, self.buffer_index = self._next_position(self.epoch, self.buffer_index)

    def close(self) -> None:
        """Stop the prefetch thread. Call it (or use ``contextlib.closing``) when done; an
        unclosed loader's idle thread only ends with the interpreter."""
        if getattr(self, "_pool", None) is not None:  # __init__ may have failed before it
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._prefetch = None, None

    def _to_tensor(self, rows: np.ndarray, scale: float) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(rows)).to(self.device, torch.float32)
        return t * scale if scale != 1.0 else t
