"""How long a person waits for the window, and whether it then stalls (offscreen Qt).

Run in a fresh process (``benchmarks/ui.py`` starts it): from the process's start to the main
window drawn on a workspace (``startup_s``; target under 3 s on a quiet machine), then a 10 ms
timer on the UI thread for ``--watch`` seconds while the tabs fill in and the spare process
starts; ``max_stall_ms`` is the longest gap between its ticks (target under 250 ms). Prints
one JSON object.

    python benchmarks/ui_startup.py --workspace WS [--watch 10]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

try:
    from benchmarks.ui_timing import UiGaps, settle
except ImportError:  # run as a script from benchmarks/
    from ui_timing import UiGaps, settle  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--watch", type=float, default=10.0)
    args = p.parse_args()
    import psutil
    from PySide6.QtWidgets import QApplication

    from mistudio.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow(args.workspace)
    win.resize(1280, 720)
    win.show()
    app.processEvents()
    win.grab()  # drawn, as a person would see it
    startup = time.time() - psutil.Process().create_time()
    gaps = UiGaps()
    gaps.start()
    settle(args.watch)
    gaps.stop()
    win.close()
    print(json.dumps({"startup_s": round(startup, 2), "startup_target_s": 3,
                      "max_stall_ms": round(gaps.max_ms, 1),
                      "stall_target_ms": 250, "watch_s": args.watch}))


if __name__ == "__main__":
    main()
