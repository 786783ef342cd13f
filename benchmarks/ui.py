"""UI responsiveness while a training job runs in the app (offscreen Qt).

Opens the main window on a workspace with a small activation set (made here from the toy-sized
built-in corpus and the embedded model's layer 15 if missing), waits for start-up to settle,
starts a training run from the Training panel's widgets, and records the interval between
ticks of a 10 ms timer on the UI thread until the run ends. Target: no gap over 100 ms.
Prints one JSON object (gap percentiles in ms, the number of ticks, training steps).

    python benchmarks/ui.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from mistudio.core.workspace import Workspace

try:
    from benchmarks.quality import prepare
except ImportError:  # run as a script from benchmarks/
    from quality import prepare  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    acts = prepare(Workspace(args.workspace))
    app = QApplication.instance() or QApplication([])
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(args.workspace, monitor_interval=0.5)
    win.resize(1280, 720)
    win.show()
    while win.warmup.running:
        app.processEvents()
        time.sleep(0.01)
    panel = win.training
    win.show_panel(panel)
    panel.refresh()
    panel.activations.setCurrentText(acts)
    panel.preset.setCurrentText("Quick demo")
    panel.steps.setValue(args.steps)
    panel.name.setText("ui-bench")
    panel.runner.finished.connect(lambda _: app.quit())
    panel.runner.failed.connect(lambda m, d: (print(m), app.quit()))
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:  # let the form and tab paint first
        app.processEvents()
        time.sleep(0.01)
    gaps: list[float] = []
    last = [time.perf_counter()]

    steps_seen: list[int] = [0]
    panel.runner.partial.connect(lambda rows: steps_seen.__setitem__(
        0, max([steps_seen[0], *[r.get("step", 0) for r in rows]])))
    at_step: list[int] = []

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        at_step.append(steps_seen[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    from mistudio.core.sae.trainer import TrainConfig  # noqa: F401  (already loaded by the app)

    ws_overwrite = Workspace(args.workspace)
    if ws_overwrite.catalog.find("sae", "ui-bench") is not None:
        ws_overwrite.remove("sae", "ui-bench")
    ws_overwrite.close()
    panel.start_btn.click()
    app.exec()
    timer.stop()
    g = np.array(gaps) * 1000
    print(json.dumps({"steps": args.steps, "ticks": len(g), "timer_ms": 10,
                      "max_gap_ms": round(float(g.max()), 1),
                      "p99_gap_ms": round(float(np.percentile(g, 99)), 1),
                      "median_gap_ms": round(float(np.median(g)), 1),
                      "gaps_over_100ms": int((g > 100).sum()), "target_max_gap_ms": 100,
                      "worst_gaps": [{"ms": round(float(g[i]), 1), "after_step": at_step[i]}
                                     for i in np.argsort(-g)[:5]]},
                     indent=2))
    win.close()


if __name__ == "__main__":
    main()
