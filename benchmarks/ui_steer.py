"""Steering from the app against steering called directly, in one process (offscreen Qt).

The app's Steering tab must generate as fast as ``mistudio steer``: the same prompt,
intervention and 40 greedy tokens per side, with the model and SAE loaded once outside the
timing (the tab keeps them loaded in its generation process after its first run), timed
called directly on the main thread (what the CLI does) and through the tab's Generate button
with the whole window live (system monitor, catalog watch, streamed tokens painted),
interleaved, medians of 3. Prints one JSON object with ``steer_app_vs_cli_ratio``
(target at most 1.10) and ms per token of each.

    python benchmarks/ui_steer.py [--tokens 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare_sae
except ImportError:  # run as a script from benchmarks/
    from quality import prepare_sae  # type: ignore[no-redef]

PROMPT = "The most important thing about Python is"


def measure_steering(win: Any, ws: Workspace, sae: str, tokens: int = 40,
                     repeats: int = 3) -> dict[str, Any]:
    """The ratio of the Steering tab's generation time to a direct call's, in an open window."""
    from mistudio.core.runtime.tasks import silent_task
    from mistudio.core.steering.session import Steerer

    panel = win.steering
    win.show_panel(panel)
    panel.refresh()
    panel.clear_features()
    panel.units.setCurrentIndex(panel.units.findData("max"))
    panel.add_feature(sae, 3, 2.0)
    panel.prompt.setPlainText(PROMPT)
    panel.max_tokens.setValue(tokens)
    spec = panel.spec()
    steerer = Steerer(ws, spec, "cpu")
    steerer.run(PROMPT, spec, silent_task())  # warm: weights paged in, caches built

    def direct() -> float:
        t = time.perf_counter()
        r = steerer.run(PROMPT, spec, silent_task())
        assert len(r.steered.token_ids) > 0
        return time.perf_counter() - t

    def in_app() -> float:
        loop = QEventLoop()
        panel.runner.running_changed.connect(lambda running: running or loop.quit())
        t = time.perf_counter()
        panel.generate()
        loop.exec()
        elapsed = time.perf_counter() - t
        panel.runner.running_changed.disconnect()
        panel.runner.running_changed.connect(panel._running)
        assert panel.result is not None and panel.steered.tokens, "the app generated nothing"
        return elapsed

    first_app_s = in_app()  # the tab's first run loads the model in its generation process
    cli, gui = [], []
    for _ in range(repeats):
        cli.append(direct())
        gui.append(in_app())
    n = 2 * tokens  # both sides
    c, g = statistics.median(cli), statistics.median(gui)
    return {"steer_tokens_per_side": tokens, "steer_repeats": repeats,
            "cli_ms_per_token": round(c / n * 1000, 1),
            "app_ms_per_token": round(g / n * 1000, 1),
            "steer_app_vs_cli_ratio": round(g / c, 3), "steer_target": 1.10,
            "app_first_run_s": round(first_app_s, 2),
            "cli_s": [round(x, 2) for x in cli], "app_s": [round(x, 2) for x in gui]}


def open_window(root: str) -> Any:
    """The main window on ``root`` at 1280x720, shown and settled."""
    app = QApplication.instance() or QApplication([])
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(root, monitor_interval=0.5)
    win.resize(1280, 720)
    win.show()
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)
    return win


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ws = Workspace(args.workspace)
    _, sae = prepare_sae(ws)
    win = open_window(args.workspace)
    print(json.dumps(measure_steering(win, ws, sae, args.tokens, args.repeats), indent=2))
    win.close()


if __name__ == "__main__":
    main()
