"""Time from an empty workspace to the first steered text in lesson mode (offscreen Qt).

Opens the app on a new, empty workspace, opens Help > Lesson, presses Start (the embedded
model is registered and its GGUF dequantized, the corpus tokenized, activations extracted, a
warm-up times training and sizes the run to about 4.5 minutes, the SAE is trained, analysed
and labelled, and the quick start's sweep picks a fluent strength), goes to the steering page
and presses Generate. Target: the first steered text in under 10 minutes on 2 CPU cores.
Prints one JSON object (seconds to each point, training steps and seconds, both texts).

``first_curve_s`` is when the first training row reached the curves. Given a workspace where the
quick start ran, the lesson reuses its activations and trains its own SAE afresh: that is the
time from Start to live curves a class waits for in a prepared room.

    python benchmarks/lesson.py [--workspace DIR] [--seconds 270]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=None,
                   help="an empty folder, or one where the quick start ran (default: a new "
                        "temporary one)")
    p.add_argument("--seconds", type=float, default=None,
                   help="training time to aim for (default: the lesson's)")
    args = p.parse_args()
    root = args.workspace or tempfile.mkdtemp(prefix="mistudio-lesson-")
    _app = QApplication.instance() or QApplication([])  # kept alive for the run
    t0 = time.perf_counter()
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(root, monitor_interval=1.0)
    win.resize(1280, 720)
    win.show()
    lesson = win.open_lesson({"seconds": args.seconds} if args.seconds else {})
    marks: dict[str, float] = {"window_open_s": time.perf_counter() - t0}
    statuses: list[tuple[float, str]] = []
    lesson.runner.status.connect(lambda s: statuses.append((time.perf_counter() - t0, s)))
    started: list[float] = []
    lesson.runner.partial.connect(lambda rows: not marks.get("first_curve_s") and any(
        isinstance(r, dict) and "step" in r for r in rows) and marks.update(
        first_curve_s=time.perf_counter() - started[0]))
    loop = QEventLoop()
    lesson.runner.finished.connect(lambda _: loop.quit())
    lesson.runner.failed.connect(lambda m, d: (print(m, d), loop.quit()))
    started.append(time.perf_counter())
    lesson.start_button.click()
    loop.exec()
    marks["trained_analysed_s"] = time.perf_counter() - t0
    lesson.pages.setCurrentIndex(2)
    loop = QEventLoop()
    lesson.steered.connect(lambda *_: loop.quit())
    lesson.steer_runner.failed.connect(lambda m, d: (print(m, d), loop.quit()))
    lesson.generate_button.click()
    loop.exec()
    marks["first_steered_text_s"] = time.perf_counter() - t0
    from mistudio.core.store.workspace import Workspace

    ws = Workspace(root)
    from mistudio.core.workflows.lesson import LESSON_SAE

    sae = ws.catalog.get("sae", LESSON_SAE)
    from pathlib import Path

    from mistudio.core.sae.checkpoints import read_metrics

    last = read_metrics(Path(sae.path) / "metrics.jsonl")[-1]  # cumulative rate: time trained
    print(json.dumps({
        **{k: round(v, 1) for k, v in marks.items()},
        "target_s": 600, "training_steps": sae.config["steps"],
        "training_s": round(last["tokens"] / last["tokens_per_s"], 1),
        "explained_variance": sae.summary.explained_variance,
        "feature": int(lesson.features.currentItem().data(256)),
        "strength": lesson.strength.value() / 10,
        "unsteered": lesson.plain_text.toPlainText(),
        "steered": lesson.steered_text.toPlainText(),
        "stages": _stage_starts(statuses)}, indent=2))
    ws.close()
    win.close()


def _stage_starts(statuses: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """When each kind of status first appeared (its first word), to see where the time went."""
    out, seen = [], set()
    for t, s in statuses:
        if s.split(" ")[0] not in seen:
            seen.add(s.split(" ")[0])
            out.append((round(t, 1), s[:80]))
    return out


if __name__ == "__main__":
    main()
