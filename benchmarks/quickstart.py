"""Quick start as a first-time user meets it: a fresh workspace, the app's window (offscreen),
Help > Quick start, Start; the clock stops when the Feature browser shows the labelled
features of the new SAE. Everything runs on the embedded model and the built-in corpus.

Prints one JSON object: ``wall_s`` (Start to browser filled), ``features_score_ge_0_7`` (labels
scoring >= 0.7 on held-out text), the spec's bar (600 s) and the stages' figures.

    python benchmarks/quickstart.py [--workspace DIR]   (default: a new temporary folder)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TARGET_S = 600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", help="workspace folder (default: a fresh temporary one)")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()
    tmp = None
    if args.workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="mistudio-qs-")
        args.workspace = str(Path(tmp.name) / "ws")
    os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="mistudio-qs-settings-"))

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(args.workspace)
    win.resize(1280, 720)
    win.show()
    dialog = win.quick_start()
    errors: list[str] = []
    dialog.runner.failed.connect(lambda message, _details: errors.append(message))
    t0 = time.perf_counter()
    dialog.start_button.click()

    def browser_filled() -> bool:
        return (dialog.result is not None and win.features.analysis == "quickstart-topk"
                and win.features.model.rowCount() > 0 and win.features.detail.feature >= 0)

    while not browser_filled() and not errors and time.perf_counter() - t0 < args.timeout:
        app.processEvents()
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    result = dialog.result
    win.close()
    if errors or result is None:
        print(json.dumps({"error": errors[0] if errors else "timed out", "wall_s": round(wall, 1)}))
        sys.exit(1)
    f, sae, steer = result.features, result.sae, result.steering
    print(json.dumps({
        "wall_s": round(wall, 1), "target_s": TARGET_S, "meets_target": wall < TARGET_S,
        "features_score_ge_0_7": f.score_ge_0_7, "features_labelled": f.labelled,
        "mean_label_score": f.mean_score, "core_seconds": result.seconds,
        "tokens_extracted": result.activations.tokens,
        "explained_variance": sae.explained_variance, "l0": sae.l0,
        "dead_fraction": sae.dead_fraction, "ce_loss_score": sae.ce_loss_score,
        "steering_feature": steer.feature if steer else None,
        "steering_label": steer.label if steer else None,
        "cpu_count": os.cpu_count()}, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
