"""UI responsiveness while a training job runs in the app (offscreen Qt).

Opens the main window on a workspace with a small activation set (made here from the toy-sized
built-in corpus and the embedded model's layer 15 if missing), waits for start-up to settle,
starts a training run from the Training panel's widgets, and records the interval between
ticks of a 10 ms timer on the UI thread until the run ends. Target: no gap over 100 ms.
Then, in the same window, steering from the Steering tab against steering called directly
(``steer_app_vs_cli_ratio``, target at most 1.10; see ``ui_steer.py``) and the quick start
run again from the app on a workspace where it is done (``--quickstart-workspace``): Start
pressed 3 s after the window opens, and at once.
Before all that, the window's start-up in a fresh process and the longest UI stall in the
seconds after it (``startup_s``, target under 3 s quiet; ``max_stall_ms``, target under 250;
``ui_startup.py``). Prints one JSON object (those, gap percentiles in ms, the number of ticks,
training steps, the steering ratio and ms per token, the quick start's re-run time).

    python benchmarks/ui.py [--steps 300] [--quickstart-workspace WS]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare, prepare_sae
    from benchmarks.ui_steer import measure_steering, open_window
    from benchmarks.ui_timing import UiGaps, settle
except ImportError:  # run as a script from benchmarks/
    from quality import prepare, prepare_sae  # type: ignore[no-redef]
    from ui_steer import measure_steering, open_window  # type: ignore[no-redef]
    from ui_timing import UiGaps, settle  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--steer-tokens", type=int, default=40)
    p.add_argument("--quickstart-workspace", default=None,
                   help="a workspace where the quick start has run: time its re-run in the app")
    args = p.parse_args()
    acts = prepare(Workspace(args.workspace))
    startup = measure_startup(args.quickstart_workspace or args.workspace)
    QApplication.instance() or QApplication([])
    win = open_window(args.workspace)
    panel = win.training
    win.show_panel(panel)
    panel.refresh()
    panel.activations.setCurrentText(acts)
    panel.preset.setCurrentText("Quick demo")
    panel.steps.setValue(args.steps)
    panel.name.setText("ui-bench")
    # a loop of its own: QApplication.quit() would close the window (Qt 6), which ends its jobs
    run_loop = QEventLoop()
    panel.runFinished.connect(lambda _: run_loop.quit())  # trained and evaluated in the model
    panel.runner.failed.connect(lambda m, d: (print(m), run_loop.quit()))
    settle(0.5)  # let the form and tab paint first
    steps_seen: list[int] = [0]
    panel.runner.partial.connect(lambda rows: steps_seen.__setitem__(
        0, max([steps_seen[0], *[r.get("step", 0) for r in rows]])))
    at_step: list[int] = []
    gaps = UiGaps(on_tick=lambda: at_step.append(steps_seen[0]))
    gaps.start()
    from mistudio.core.sae.train_config import TrainConfig  # noqa: F401  (already loaded by the app)

    ws_overwrite = Workspace(args.workspace)
    if ws_overwrite.catalog.find("sae", "ui-bench") is not None:
        ws_overwrite.remove("sae", "ui-bench")
    ws_overwrite.close()
    panel.start_btn.click()
    run_loop.exec()
    gaps.stop()
    g = np.array(gaps.gaps_ms)
    steer = measure_steering(win, Workspace(args.workspace),
                             prepare_sae(Workspace(args.workspace))[1], args.steer_tokens)
    qs = args.quickstart_workspace
    rerun = quickstart_rerun_s(win, qs, 3.0) if qs else None
    rerun_at_open = quickstart_rerun_s(win, qs, 0.0) if qs else None
    print(json.dumps({**startup, **steer, "quickstart_rerun_app_s": rerun,
                      "quickstart_rerun_at_open_s": rerun_at_open,
                      "steps": args.steps, "ticks": len(g), "timer_ms": 10,
                      "max_gap_ms": round(float(g.max()), 1),
                      "p99_gap_ms": round(float(np.percentile(g, 99)), 1),
                      "median_gap_ms": round(float(np.median(g)), 1),
                      "gaps_over_100ms": int((g > 100).sum()), "target_max_gap_ms": 100,
                      "worst_gaps": [{"ms": round(float(g[i]), 1), "after_step": at_step[i]}
                                     for i in np.argsort(-g)[:5]]},
                     indent=2))
    win.close()


def measure_startup(root: str) -> dict[str, Any]:
    """``benchmarks/ui_startup.py`` in a fresh process, on ``root`` (a populated workspace where
    there is one): the window's start-up time and the longest stall after it."""
    import subprocess
    import sys

    script = Path(__file__).with_name("ui_startup.py")
    out = subprocess.run([sys.executable, str(script), "--workspace", root],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def quickstart_rerun_s(win: Any, root: str, clicks_s: float) -> float:
    """Seconds from Start to the end of the quick start in a window on ``root``, where it has
    run before (everything is found done: the README's re-run time, here through the app).
    Start is pressed ``clicks_s`` after the window opens (0: at once, before the spare process
    the window starts has imported torch; a person's Help > Quick start > Start takes longer)."""
    from PySide6.QtCore import QEventLoop

    from mistudio.gui.main_window import MainWindow

    other = MainWindow(root, monitor_interval=0.5)
    other.show()
    dialog = other.quick_start()
    settle(clicks_s)
    loop = QEventLoop()
    dialog.runner.running_changed.connect(lambda running: running or loop.quit())
    t = time.perf_counter()
    dialog.start()
    loop.exec()
    elapsed = time.perf_counter() - t
    assert dialog.runner.kind == "quickstart" and dialog.result is not None
    other.close()
    return round(elapsed, 2)

if __name__ == "__main__":
    main()
