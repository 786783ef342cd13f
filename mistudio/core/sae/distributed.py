"""Data-parallel training across processes and machines (torch.distributed, started by torchrun).

Every rank holds the whole SAE and reads its own shard of the activation set; after each step's
backward the gradients are averaged with one all-reduce (gloo on CPU, NCCL on GPUs), so the
ranks apply identical updates and stay identical, as DistributedDataParallel would. Rank 0 alone
writes checkpoints, metrics, the catalog and the saved SAE. How to start such a run on one or
several machines: docs/cli.md (multi-process training). Each machine needs the activation set
under the same name in its workspace.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class Ranks:
    """This process's place in the run; a single process is rank 0 of 1 and every call is a
    no-op."""

    def __init__(self) -> None:
        if not dist.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            self.rank, self.world = 0, 1
            return
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and \
                os.environ.get("MISTUDIO_DIST_BACKEND") != "gloo" else "gloo"
            dist.init_process_group(backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per local rank."""
        if self.distributed and requested.type == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return requested

    def average_gradients(self, params: list[Tensor]) -> None:
        """Mean of every parameter's gradient over the ranks, in one flat all-reduce."""
        if not self.distributed:
            return
        grads = []
        for p in params:
            if p.grad is None:  # a rank whose batch left a parameter unused still takes part
                p.grad = torch.zeros_like(p)
            grads.append(p.grad.reshape(-1))
        flat = torch.cat(grads)
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Running statistics (BatchTopK's threshold) estimated from each rank's own batches."""
        if not self.distributed:
            return
        for buf in module.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.world

    def sum_over_ranks(self, counts: Tensor) -> Tensor:
        """Element-wise sum of a tensor over the ranks (how often latents fired anywhere)."""
        if not self.distributed:
            return counts
        total = counts.clone()
        dist.all_reduce(total)
        return total

    def mean_of(self, values: dict[str, float]) -> dict[str, float]:
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t, strict=True)}

    def gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def load_checkpoint(self, path: Any, device: torch.device) -> Any:
        """Rank 0 reads the checkpoint and sends its bytes, so that resuming works without a
        shared file system; every rank loads them with ``weights_only=True``."""
        data = path.read_bytes() if self.is_main and path.is_file() else None
        data = self.from_main(data)
        if data is None:
            return None
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def tensors_checksum(tensors: dict[str, Tensor]) -> float:
    """A float64 fingerprint of named tensors (equal on ranks that are in sync, and equal to
    that of the saved file when computed on the saved tensors)."""
    total = 0.0
    for i, name in enumerate(sorted(tensors)):
        t = tensors[name].detach().double().cpu()
        total += float(t.sum()) * (i + 1) + float(t.abs().sum())
    return total
