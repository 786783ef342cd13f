"""Where the app's jobs should run: a thread of the app's process, or a child process?

With the main window open and live (offscreen), the same job runs through the job center once
placed on a thread, in a fresh child process, and in a spare process started ahead
(``JobCenter(spare=True)``), alternating and repeated: extraction (the
embedded model over the built-in corpus) and SAE training. Measured for each: the job's wall
time from Start to its result on the UI thread, and the longest gap of a 10 ms timer on the UI
thread while it ran (what a person sees as a stall). Prints one JSON object with the medians and
the ratios process / thread; the job center's rule (kinds.py) follows from them.

    python benchmarks/jobs.py [--tokens 6000] [--steps 120] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication

try:
    from benchmarks.ui_steer import open_window
    from benchmarks.ui_timing import UiGaps, settle
except ImportError:  # run as a script from benchmarks/
    from ui_steer import open_window  # type: ignore[no-redef]
    from ui_timing import UiGaps, settle  # type: ignore[no-redef]


def prepare(root: Path, tokens: int, steps: int) -> tuple[Any, Any]:
    """The embedded model and the built-in corpus, tokenized; a small activation set for
    training. Returns the extraction and training configs."""
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations
    from mistudio.core.data.datasets import ensure_builtin_dataset
    from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset
    from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model
    from mistudio.core.sae.train_config import TrainConfig
    from mistudio.core.store.workspace import Workspace

    ws = Workspace(root)
    try:
        ensure_embedded_model(ws)
        ensure_builtin_dataset(ws)
        tok = tokenize_dataset(ws, TokenizeConfig("pydoc", EMBEDDED_NAME, 128)).name
        extract = ExtractConfig(EMBEDDED_NAME, tok, (15,), max_tokens=tokens, device="cpu")
        if ws.catalog.find("activations", "jobs-train") is None:
            extract_activations(ws, dataclasses.replace(extract, max_tokens=4 * tokens),
                                "jobs-train")
    finally:
        ws.close()
    return extract, TrainConfig("jobs-train", steps=steps, batch_size=1024, device="cpu",
                                eval_tokens=1024)


def timed(app: QApplication, jobs: Any, kind: str, *args: Any, **kw: Any) -> tuple[float, float]:
    """(wall seconds, longest UI gap in ms) of one job started through ``jobs``."""
    runner = jobs.runner(kind)
    done: list[Any] = []
    runner.finished.connect(done.append)
    runner.failed.connect(lambda m, d: done.append(RuntimeError(m + d)))
    gaps = UiGaps()
    t0 = time.perf_counter()
    gaps.start()
    runner.start(kind, *args, **kw)
    while not done:
        app.processEvents()
        time.sleep(0.002)
    gaps.stop()
    if isinstance(done[0], Exception):
        raise done[0]
    return time.perf_counter() - t0, gaps.max_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-jobs"))
    p.add_argument("--tokens", type=int, default=6000)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds the window idles before each job (a spare gets ready)")
    args = p.parse_args()
    from mistudio.core.jobs.kinds import JOBS, Placement
    from mistudio.gui.jobs import AppJobs

    app = QApplication.instance() or QApplication([])
    root = Path(args.workspace)
    extract, train = prepare(root, args.tokens, args.steps)
    win = open_window(str(root))
    runs: dict[str, list[tuple[float, float]]] = {}
    variants = {"thread": (Placement.THREAD, False), "process": (Placement.PROCESS, False),
                "spare": (Placement.PROCESS, True)}
    for rep in range(args.repeats):
        for name, (place, spare) in variants.items():
            kinds = {k: dataclasses.replace(v, placement=place) for k, v in JOBS.items()}
            jobs = AppJobs(root, kinds=kinds, spare=spare)
            for job, cfg in (("extract", extract), ("train", train)):
                settle(args.settle)  # as a person between clicks: the spare gets ready
                runs.setdefault(f"{job}_{name}", []).append(timed(
                    app, jobs, job, cfg, f"jobs-{job[0]}{rep}{name}", overwrite=True))
            jobs.shutdown()
    win.close()
    out: dict[str, Any] = {"tokens": args.tokens, "train_steps": train.steps,
                           "repeats": args.repeats, "cpu_count": os.cpu_count()}
    for name, values in runs.items():
        out[f"{name}_wall_s"] = round(statistics.median(v[0] for v in values), 2)
        out[f"{name}_max_gap_ms"] = round(statistics.median(v[1] for v in values), 1)
    for job in ("extract", "train"):
        for name in ("process", "spare"):
            out[f"{job}_{name}_vs_thread_wall"] = round(
                out[f"{job}_{name}_wall_s"] / out[f"{job}_thread_wall_s"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
