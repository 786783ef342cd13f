"""The desktop app: worker mechanism, main window, training panel, screenshots, clean exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from mistudio.core.sae.checkpoints import read_metrics
from mistudio.core.store.workspace import Workspace

SHOTS = Path(__file__).parent / "screenshots"  # git-ignored; look at them


@pytest.fixture(autouse=True)
def fresh_settings() -> None:
    """Each test starts from default settings (they live in a temporary folder anyway)."""
    from mistudio.gui.main_window import settings

    settings().clear()


STUBS = {"count": ("job_stubs:count", "thread"), "slow": ("job_stubs:until_cancelled", "process"),
         "bad": ("job_stubs:bad", "thread"), "where": ("job_stubs:where", "process")}


def stub_kinds() -> dict[str, Any]:
    from mistudio.core.jobs.kinds import JobKind, Placement

    return {name: JobKind(name, fn, Placement(place), name) for name, (fn, place) in STUBS.items()}


def test_runner_throttles_reports_cancels_and_words_errors(qtbot: QtBot, tmp_path: Path) -> None:
    from mistudio.gui.jobs import AppJobs

    jobs = AppJobs(tmp_path / "ws", kinds=stub_kinds())
    runner = jobs.runner("test")
    batches: list[list] = []
    progress: list[float] = []
    runner.partial.connect(batches.append)
    runner.progress.connect(progress.append)
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        assert runner.start("count", 20_000)
    assert done.args == ["done"]
    assert [x for b in batches for x in b] == list(range(20_000))  # nothing lost, in order
    assert len(batches) < 200 and len(progress) < 200  # delivered in a few batches
    with qtbot.waitSignal(runner.cancelled, timeout=20_000):
        runner.start("slow")
        qtbot.waitUntil(lambda: runner.running and jobs.active == [runner])
        QTimer.singleShot(300, runner.cancel)
    assert jobs.active == []
    with qtbot.waitSignal(runner.failed, timeout=10_000) as failed:
        runner.start("bad")
    assert failed.args[0] == ("The thing is wrong. Use Batch (tokens) under Training > Advanced "
                              "set to 1024.")  # the app's words, not the command line's
    assert "Traceback" in failed.args[1]
    with qtbot.waitSignal(runner.finished, timeout=20_000) as done:
        runner.start("where")
    import os

    assert done.args[0] != os.getpid()  # a process job ran in a child
    assert jobs.shutdown() == []


def test_training_from_the_panel_feeds_the_dashboard_live(qtbot: QtBot, acts_ws: Workspace) -> None:
    from mistudio.gui.common import apply_theme
    from mistudio.gui.main_window import MainWindow

    apply_theme(QApplication.instance(), "light")  # type: ignore[arg-type]  # as the app starts
    win = MainWindow(str(acts_ws.root), monitor_interval=0.2)
    qtbot.addWidget(win)
    win.show()
    panel = win.training
    win.show_panel(panel)
    panel.refresh()
    assert panel.activations.currentText() == "acts"
    panel.preset.setCurrentText("Quick demo")
    panel.steps.setValue(300)
    panel.batch.setValue(256)
    panel.expansion.setValue(4)
    panel.k.setValue(8)
    panel.name.setText("gui-sae")
    panel.arch.setCurrentText("relu")
    seen_while_running: list[int] = []
    panel.runner.partial.connect(lambda rows: seen_while_running.append(len(rows))
                                 if panel.runner.running else None)
    with qtbot.waitSignal(panel.runFinished, timeout=180_000):
        panel.start_btn.click()
        assert not panel.start_btn.isEnabled() and win.cancel_button.isVisible()
    # the dashboard was fed while the job ran (how smoothly: benchmarks/ui.py, not a test)
    assert len(seen_while_running) >= 2
    assert "gui-sae: held-out explained variance" in panel.result.text()
    assert "in the model: CE loss score" in panel.result.text()
    assert panel.dashboard.buffers.n == 30  # every logged row reached the dashboard
    panel.dashboard.redraw()
    assert len(panel.dashboard.extra["l1"].getData()[0]) == 30  # ReLU's L1 term drawn too
    title = panel.dashboard.plots["mse"].titleLabel.text  # the legend: only ReLU's terms
    assert "MSE" in title and "L1" in title and "L0 penalty" not in title
    # a past run: its held-out figures, its per-token density; another one compared by name
    panel.dashboard.reset(10)
    panel.plot_run(panel.runs.findItems("gui-sae", Qt.MatchFlag.MatchExactly)[0])
    panel.dashboard.redraw()
    assert panel.dashboard.summary.text().startswith("gui-sae: held-out explained")
    assert sum(panel.dashboard.hist.opts["height"]) == acts_ws.catalog.get(
        "sae", "gui-sae").summary.d_sae
    rows = [{**r, "step": r["step"] * 3}
            for r in read_metrics(acts_ws.root / "saes" / "gui-sae" / "metrics.jsonl")]
    panel.dashboard.show_compare(rows, "longer-run")
    panel.dashboard.redraw()
    assert "longer-run" in panel.dashboard.legend.text()
    x_end = panel.dashboard.plots["l0"].viewRange()[0][1]
    assert x_end >= rows[-1]["step"]  # the compared run is drawn over its full length
    # no dead end: the Features tab offers the quick start and Training, then the analysis
    assert win.features.empty.isVisibleTo(win.features) and win.features.analyse_bar.isEnabled()
    with qtbot.waitSignal(win.features.runner.finished, timeout=180_000):
        panel.analyse_btn.click()  # "Analyse its features"
        assert win.current_panel() is win.features
    assert win.features.analysis == "gui-sae" and win.features.store is not None
    assert not win.features.empty.isVisibleTo(win.features)
    assert win.features.analyse_bar.go.text() == "Analyse again"
    assert acts_ws.catalog.get("sae", "gui-sae").status == "complete"
    assert "gui-sae" in [panel.runs.item(i).text() for i in range(panel.runs.count())]
    qtbot.waitUntil(lambda: win.job_label.text() == "Ready", timeout=60_000)
    SHOTS.mkdir(exist_ok=True)
    win.resize(1280, 720)
    win.show_panel(panel)
    qtbot.wait(100)
    assert win.grab().save(str(SHOTS / "training-run.png"))
    win.show_panel(win.features)
    qtbot.wait(100)
    assert win.grab().save(str(SHOTS / "features-analysed-in-app.png"))


def test_cancel_and_resume_from_the_panel(qtbot: QtBot, acts_ws: Workspace) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(acts_ws.root))
    qtbot.addWidget(win)
    panel = win.training
    panel.preset.setCurrentText("Quick demo")
    panel.steps.setValue(400)
    panel.batch.setValue(256)
    panel.expansion.setValue(4)
    panel.name.setText("resumable")
    with qtbot.waitSignal(panel.runner.cancelled, timeout=120_000):
        panel.start_btn.click()
        qtbot.waitUntil(lambda: panel.dashboard.buffers.n >= 3, timeout=60_000)
        win.cancel_button.click()
    assert "Cancelled" in panel.result.text()
    assert acts_ws.catalog.get("sae", "resumable").status == "partial"
    with qtbot.waitSignal(panel.runFinished, timeout=180_000):
        panel.start_btn.click()
    assert acts_ws.catalog.get("sae", "resumable").summary.steps == 400


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_panel_renders(qtbot: QtBot, analysed: Workspace, theme: str,
                             size: tuple[int, int]) -> None:
    from mistudio.gui.common import apply_theme
    from mistudio.gui.main_window import MainWindow

    app = QApplication.instance()
    apply_theme(app, theme)  # type: ignore[arg-type]
    win = MainWindow(str(analysed.root))
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    qtbot.waitUntil(lambda: win.features.detail.feature >= 0, timeout=60_000)  # examples shown
    SHOTS.mkdir(exist_ok=True)
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        qtbot.wait(50)
        name = win.tabs.tabText(i).replace("&", "").lower()
        image = win.grab()
        assert (image.width(), image.height()) == size  # fits, nothing forced larger
        scroll = win.tabs.currentWidget()  # and the panel fits the tab: no scroll bars
        assert not scroll.verticalScrollBar().isVisible(), name
        assert not scroll.horizontalScrollBar().isVisible(), name
        suffix = "" if size == (1280, 720) else f"-{size[0]}"
        assert image.save(str(SHOTS / f"{name}-{theme}{suffix}.png"))
    apply_theme(app, "light")  # type: ignore[arg-type]


def test_datasets_and_models_panels_run_jobs(qtbot: QtBot, toy_ws: Workspace,
                                             toy_folder: Any, tmp_path: Path) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    ds = win.datasets
    docs = tmp_path / "notes"
    docs.mkdir()
    for i in range(5):
        (docs / f"n{i}.txt").write_text(f"note number {i} " * 20)
    ds.max_samples.setValue(3)
    with qtbot.waitSignal(ds.runner.finished, timeout=60_000):
        ds.add_files(folder=True, path=str(docs))
    assert toy_ws.catalog.get("dataset", "notes").summary.documents == 3
    assert "notes" in [r[0] for r in ds.model.rows]
    with qtbot.waitSignal(win.models.runner.finished, timeout=60_000):
        win.models.add_model(folder=True, path=str(toy_folder("gpt2")))
    assert any(r[1] == "GPT-2" for r in win.models.model.rows)
    device_col = win.models.headers.index("Device")
    assert {r[device_col] for r in win.models.model.rows} == {"cpu (float32)"}
    win.set_dtype("bfloat16")  # the Settings menu: the table shows where models would load
    assert {r[device_col] for r in win.models.model.rows} == {"cpu (bfloat16)"}
    win.set_dtype("auto")
    ds.table.clearSelection()
    assert not ds.tokenize_btn.isEnabled()  # no dataset chosen: nothing to tokenize
    ds.table.selectRow([r[0] for r in ds.model.rows].index("pydoc"))
    assert ds.tokenize_btn.isEnabled()
    ds.tok_model.setCurrentText("toy")
    ds.ctx.setValue(64)
    with qtbot.waitSignal(ds.runner.finished, timeout=60_000):
        ds.tokenize()
    assert toy_ws.catalog.find("tokenized", "pydoc.toy.ctx64.bos") is not None
    qtbot.waitUntil(lambda: not ds.preview.runner.running, timeout=30_000)
    with qtbot.waitSignal(ds.preview.runner.finished, timeout=30_000):
        ds.preview.show_set("pydoc.toy.ctx64.bos")
    html = ds.preview.text.toHtml()
    assert html.count('href="tok:') > 50  # every token a hoverable span
    assert ds.preview.lengths.listDataItems() or ds.preview.lengths.items
    models = win.models
    models.model_box.setCurrentText("toy")
    models.dataset.setCurrentText("pydoc")
    models.layer.setValue(1)
    models.max_tokens.setValue(1000)
    models.more_layers.setText("0")
    models.dtype.setCurrentText("float32")
    with qtbot.waitSignal(models.runner.finished, timeout=60_000):
        models.extract()
    assert "pydoc.toy.0-1.resid_post: 1,000 tokens" in models.acts.text()
    from mistudio.core.activations.store import open_activations

    acts = open_activations(toy_ws, "pydoc.toy.0-1.resid_post")
    assert acts.keys == ["layers.0.resid_post", "layers.1.resid_post"]
    assert str(acts.dtype) == "float32"
    models.hub_id.setText("hf:someone/model")
    models.add_hub_model()  # offline: refused with a message, nothing started
    assert not models.runner.running
    win.training.refresh()
    assert "pydoc.toy.0-1.resid_post" in [win.training.activations.itemText(i)
                                        for i in range(win.training.activations.count())]
    # the hook-point browser fills the extraction form
    toy_row = [r[0] for r in models.model.rows].index("toy")
    models.table.selectRow(toy_row)
    models.show_hooks()
    from mistudio.core.models.registry import model_info

    n_layers = model_info(toy_ws, "toy").n_layers
    assert models.hooks_model.rowCount() == n_layers and "mlp_out" in models.hooks_model.headers
    col = models.hooks_model.headers.index("mlp_out")
    models.pick_hook(models.hooks_model.index(0, col))
    assert (models.layer.value(), models.hook.currentText()) == (0, "mlp_out")
    # what fits, and what a quantization costs, shown for the selected model
    assert "Recommended: float32" in models.memory.toPlainText()
    assert "not compared with full precision yet" in models.memory.toPlainText()
    assert "nf4 (bitsandbytes, CUDA)" not in [models.weights.itemText(i)
                                              for i in range(models.weights.count())]
    models.weights.setCurrentText("int8 (about 1/4 of float32)")
    models.pick_hook(models.hooks_model.index(1, models.hooks_model.headers.index("resid_post")))
    with qtbot.waitSignal(models.runner.finished, timeout=60_000):
        models.check_faithfulness()
    models.show_hooks()
    text = models.memory.toPlainText()
    assert "int8 against full precision at layers.1.resid_post of toy" in text, text
    assert float(text.split("cosine mean ")[1].split()[0]) > 0.98
    assert float(text.split("relative error mean ")[1].split("%")[0]) > 0  # close, not equal
    with qtbot.waitSignal(models.runner.finished, timeout=60_000):
        models.extract()  # the choice goes with the activations, named and recorded
    assert open_activations(toy_ws, "pydoc.toy.0-1.resid_post.int8").manifest.provenance \
        .quantization == "int8"


def test_selections_presentation_mode_and_cli_changes_show(qtbot: QtBot, acts_ws: Workspace) -> None:
    from mistudio.cli import main
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(acts_ws.root))
    qtbot.addWidget(win)
    win.training.preset.setCurrentText("Wide")
    win.training.arch.setCurrentText("jumprelu")
    size = QApplication.font().pointSizeF()
    win.set_presentation(True)
    assert QApplication.font().pointSizeF() == pytest.approx(size * 1.6)
    win.set_presentation(False)
    assert QApplication.font().pointSizeF() == pytest.approx(size)
    win.close()
    again = MainWindow(str(acts_ws.root))
    qtbot.addWidget(again)
    assert again.training.preset.currentText() == "Wide"
    assert again.training.arch.currentText() == "jumprelu"
    assert main(["datasets", "add", "more", "--source", "builtin:pydoc", "--max-samples", "2",
                 "--workspace", str(acts_ws.root)]) == 0  # another process would do the same
    qtbot.waitUntil(lambda: "more" in [r[0] for r in again.datasets.model.rows], timeout=10_000)


def test_app_opens_plots_and_quits_cleanly(tmp_path: Path) -> None:
    """The pinned PySide6 must exit cleanly after drawing pyqtgraph plots (6.12.0 aborted)."""
    code = ("from mistudio.cli import main; import sys; "
            f"sys.exit(main(['gui', '--quit-after', '1500', '--workspace', r'{tmp_path / 'ws'}']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ,
                                           "QT_QPA_PLATFORM": "offscreen"})
    assert res.returncode == 0, res.stderr[-2000:]


def test_add_dataset_dialog_previews_and_uses_the_chosen_column(qtbot: QtBot, toy_ws: Workspace,
                                                                tmp_path: Path) -> None:
    import json

    from mistudio.gui.dataset_dialog import AddDatasetDialog
    from mistudio.gui.main_window import MainWindow

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"answer {i} " * 5,
                                        "n": i}) + "\n" for i in range(10)))
    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    dialog = AddDatasetDialog(win)
    qtbot.addWidget(dialog)
    dialog.source.setText(str(data))
    with qtbot.waitSignal(dialog.runner.finished, timeout=30_000):
        dialog.preview()
    assert [dialog.column.itemText(i) for i in range(dialog.column.count())] == ["question",
                                                                                 "answer"]
    assert dialog.rows.rowCount() == 5 and dialog.name.text() == "qa"
    dialog.column.setCurrentText("answer")
    dialog.max_samples.setValue(4)
    with qtbot.waitSignal(win.datasets.runner.finished, timeout=30_000):
        win.datasets.add_with_dialog(dialog)
    art = toy_ws.catalog.get("dataset", "qa")
    assert art.summary.documents == 4 and art.config["text_column"] == "answer"


def test_settings_menus_choose_device_and_dtype(qtbot: QtBot, toy_ws: Workspace) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    cpu = next(a for a in win.device_group.actions() if a.text() == "cpu")
    cpu.trigger()
    assert win.training.device == win.models.device == "cpu"
    half = next(a for a in win.dtype_group.actions() if a.text() == "float16")
    half.trigger()
    assert win.models.dtype_setting == "float16"
    assert [a.text() for a in win.device_group.actions() if a.isChecked()] == ["cpu"]
    assert [a.text() for a in win.dtype_group.actions() if a.isChecked()] == ["float16"]
    win.set_online(True)
    assert "ONLINE" in win.online_label.text()
    win.set_online(False)
    assert win.online_label.text() == ""
    with qtbot.waitSignal(win.doctor_runner.finished, timeout=60_000) as report:
        win.doctor()
    assert "torch" in report.args[0] or "device" in report.args[0]


@pytest.mark.parametrize("quit_after_ms", [50, 400, 1200])
def test_the_app_quits_cleanly_soon_after_opening_on_activations(acts_ws: Workspace,
                                                                 quit_after_ms: int) -> None:
    """Opened on a workspace with an activation set and no SAE (what a cancelled lesson
    leaves), closed within a moment: the process ends with status 0, no thread destroyed while
    running (that once aborted the app in about half the tries)."""
    import os

    code = ("from mistudio.cli import main; import sys; "
            f"sys.exit(main(['gui', '--quit-after', '{quit_after_ms}', '--workspace', "
            f"r'{acts_ws.root}']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Destroyed while thread" not in res.stderr


def test_high_dpi_scale_renders_at_twice_the_pixels(tmp_path: Path) -> None:
    """With a scale factor of 2 the window keeps its logical size and draws twice the pixels."""
    import os

    code = ("import sys; from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "from mistudio.gui.main_window import MainWindow; "
            f"w = MainWindow(r'{tmp_path / 'ws'}'); w.resize(1280, 720); w.show(); "
            "app.processEvents(); img = w.grab(); "
            "print(w.width(), w.height(), img.width(), img.height(), img.devicePixelRatio()); "
            "w.close()")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    w, h, iw, ih, ratio = res.stdout.split()[-5:]
    assert (int(w), int(h)) == (1280, 720) and float(ratio) == 2.0
    assert (int(iw), int(ih)) == (2560, 1440)


def test_dialogs_name_the_apps_controls_not_command_line_flags() -> None:
    """Every setting and step the core's messages can name has the app's words (a control, a
    menu) and the command line's (an option, a command); no core string names a flag."""
    import ast
    import dataclasses
    import re

    import mistudio.core
    from mistudio.cli import build_parser
    from mistudio.cli.words import ACTIONS as CLI_ACTIONS
    from mistudio.cli.words import CliWords
    from mistudio.core.runtime.errors import ACTIONS, InvalidInputError
    from mistudio.core.sae.train_config import TrainConfig
    from mistudio.core.workflows.quickstart import QuickstartConfig
    from mistudio.gui.words import APP_ACTIONS, APP_SETTINGS, app_text

    settings, actions, flags = set(), set(), []
    for path in Path(mistudio.core.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        actions |= set(re.findall(r"«do:([a-z_]+)", text))
        settings |= set(re.findall(r"«([a-z][a-z0-9_]*)", text)) - {"do"}
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                flags += re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value)
    assert flags == []
    # names built at run time: any field of the configs whose checks name their fields
    settings |= {f.name for cls in (TrainConfig, QuickstartConfig)
                 for f in dataclasses.fields(cls)}
    settings -= {"setting"}  # the errors module's own docstring
    actions -= {"action"}
    assert settings - set(APP_SETTINGS) == set()
    cli = CliWords(build_parser())
    assert {s for s in settings if cli.setting(s, None) == s.replace("_", " ")} == set()
    assert actions <= set(ACTIONS) == set(APP_ACTIONS) == set(CLI_ACTIONS)
    err = InvalidInputError("Out of memory.", "Use «batch_size=1024», or «do:rebuild_catalog».")
    assert err.render(cli) == ("Out of memory. Use --batch-size 1024, or run `mistudio catalog "
                               "rebuild`.")
    said = app_text(err)
    assert "--" not in said and "Batch (tokens)" in said and "1024" in said
    assert "File > Rebuild catalog" in said
    assert err.settings[0] == ("batch_size", "1024")
    assert app_text(InvalidInputError("No SAE.", "Choose one («sae=NAME»).")).endswith(
        "(an SAE in the Steering tab's feature list).")


def test_an_empty_workspace_says_what_to_do_first(qtbot: QtBot, ws: Workspace) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(ws.root))
    qtbot.addWidget(win)
    ds, models = win.datasets, win.models
    for panel in (ds, models):  # a hint and the button that does it, instead of a bare table
        assert panel.empty.isVisibleTo(panel) and not panel.table.isVisibleTo(panel)
    assert models.empty_button.text() == "Register the built-in models"
    assert win.features.empty.isVisibleTo(win.features)
    assert win.features.empty.train.isVisibleTo(win.features)  # no SAE: go and train one
    training = win.training  # nothing to train on: no Start that can only fail, a way on
    assert not training.start_btn.isEnabled() and training.next_step.isVisibleTo(training)
    assert "past run" not in training.dashboard.summary.text()  # there is none to click
    assert not ds.preview.isVisibleTo(ds)  # no tokenized set: no empty charts
    training.next_step.click()
    assert win.current_panel() is win.models
    with qtbot.waitSignal(ds.runner.finished, timeout=60_000):
        ds.empty_button.click()  # "Add the built-in corpus"
    qtbot.waitUntil(lambda: bool(ds.model.rows), timeout=10_000)
    assert ds.table.isVisibleTo(ds) and not ds.empty.isVisibleTo(ds)
    assert ws.catalog.get("dataset", ds.model.rows[0][0]).status == "complete"


def test_token_heatmap_keeps_words_whole_and_weak_activations_visible(qtbot: QtBot) -> None:
    from PySide6.QtGui import QColor, QPalette

    from mistudio.gui.token_view import TokenHeatmap

    view = TokenHeatmap()
    qtbot.addWidget(view)
    view.resize(600, 100)
    view.set_tokens([" the", " import", "ed", " module", ","], [0, 0.02, 1.0, 0, 0.5])
    r = view._layout(600)
    assert r[2].left() == r[1].right() + 1  # "import" + "ed": no gap inside the word
    assert r[4].left() == r[3].right() + 1  # punctuation sticks to its word
    assert r[3].left() > r[2].right() + 1  # a gap before a new word
    for base in ("#000000", "#ffffff", "#1e2024"):
        pal = view.palette()
        pal.setColor(QPalette.ColorRole.Base, QColor(base))
        view.setPalette(pal)
        page, weak = QColor(base), view.background(1)  # 2% of the peak
        diff = max(abs(page.red() - weak.red()), abs(page.green() - weak.green()),
                   abs(page.blue() - weak.blue()))
        assert diff >= 35, (base, weak.name())  # visibly tinted on dark and light pages
        assert view.background(0) == page  # zero stays the page colour


def test_the_system_monitor_names_its_curves_outside_the_plot(qtbot: QtBot) -> None:
    from mistudio.gui.monitor import SystemMonitor

    mon = SystemMonitor(interval=0.2)
    qtbot.addWidget(mon)
    try:
        assert mon.plot.plotItem.legend is None  # nothing drawn over the curves
        for name in ("CPU", "RAM", "GPU", "GPU memory"):
            assert name in mon.info.text()
        assert "seconds" in mon.info.text()  # the time axis's unit, on the same line
    finally:
        mon.shutdown()
