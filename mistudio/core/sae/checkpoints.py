"""A training run's state on disk: checkpoints to resume from, and the metric log.

Every ``checkpoint_every`` steps each run's whole state (weights, optimiser, schedule, data
position, dead-latent counters) is written atomically, the previous checkpoint staying in place
until the new one is complete; a resumed run then produces exactly the loss curve of an
uninterrupted one (tested). The metric log is append-only JSON lines; lines written after the
checkpoint being resumed are dropped, since the run writes them again.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import torch

from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.data import ActivationBatches
from mistudio.core.sae.distributed import Ranks
from mistudio.core.sae.run import SAERun
from mistudio.core.store.files import atomic_write

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def config_json(run: SAERun) -> dict[str, Any]:
    """A run's configuration as JSON (what a checkpoint records and a resume compares)."""
    return json.loads(json.dumps(asdict(run.cfg)))


def save_checkpoints(runs: list[SAERun], partials: list[Path], ranks: Ranks, step: int,
                     tokens: int, loader_state: dict[str, int]) -> None:
    """Write each run's checkpoint (rank 0; every rank hands over its data position)."""
    loaders = ranks.gather(loader_state)
    if not ranks.is_main:
        return
    for run, partial in zip(runs, partials, strict=True):
        state = {"run": run.state_dict(), "loaders": loaders, "step": step, "tokens": tokens,
                 "world": ranks.world, "config": config_json(run)}
        # serialised in memory first: torch's zip writer turns a full disk into an opaque
        # RuntimeError, a plain write gives OSError(ENOSPC) that is reported as such
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_write(partial / CHECKPOINT) as fh:
            fh.write(buffer.getbuffer())


def resume(runs: list[SAERun], partials: list[Path], loader: ActivationBatches, ranks: Ranks,
           device: torch.device) -> tuple[int, int]:
    """Load each run's checkpoint; all runs of a sweep must be at the same step. Returns the
    (step, tokens) to go on from: (0, 0) when there is nothing to resume."""
    ckpts = [ranks.load_checkpoint(p / CHECKPOINT, device) for p in partials]
    found = [c for c in ckpts if c is not None]
    if not found:
        return 0, 0
    if len(found) != len(ckpts) or len({c["step"] for c in found}) > 1:
        raise InvalidInputError("The interrupted runs of this sweep stopped at different steps.",
                                "Resume them one by one, or start again («overwrite»).")
    for run, ckpt in zip(runs, ckpts, strict=True):
        if _resume_key(ckpt["config"]) != _resume_key(config_json(run)):
            raise InvalidInputError(f"An interrupted training run named {run.name!r} with "
                                    "different settings exists.", "Run it with its original "
                                    "settings to resume, or start again («overwrite»).")
        if ckpt.get("world", 1) != ranks.world:
            raise InvalidInputError(
                f"{run.name!r} was interrupted while training on {ckpt.get('world', 1)} "
                f"processes; this run has {ranks.world}.",
                "Resume it with the same number of processes, or start again («overwrite»).")
        run.load_state_dict(ckpt["run"])
    loader.load_state_dict(found[0]["loaders"][ranks.rank])
    return int(found[0]["step"]), int(found[0]["tokens"])


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: everything but how a step's tokens are split into batches."""
    key = {k: v for k, v in config.items() if k not in ("batch_size", "grad_accumulation")}
    key.setdefault("keep_massive", True)  # runs started before the flag trained on every row
    key["tokens_per_step"] = config["batch_size"] * config["grad_accumulation"]
    return key


def open_log(partial: Path, step: int) -> TextIO:
    """The run's metric log, opened for appending after the lines of steps up to ``step``."""
    truncate_metrics(partial / METRICS, step)
    return open(partial / METRICS, "a", encoding="utf-8")


def truncate_metrics(path: Path, step: int) -> None:
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
