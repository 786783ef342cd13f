"""The app, part 2: feature browser, steering tab, quick start, presentation mode (offscreen)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from mistudio.core.features.store import FeatureStore, Label, write_table
from mistudio.core.store.workspace import Workspace

SHOTS = Path(__file__).parent / "screenshots"  # git-ignored; look at them


@pytest.fixture(autouse=True)
def fresh_settings() -> None:
    from mistudio.gui.main_window import settings

    settings().clear()


def _synthetic_store(folder: Path, n: int) -> FeatureStore:
    rng = np.random.default_rng(0)
    freq = (10 ** rng.uniform(-6, -0.5, n)).astype(np.float32)
    folder.mkdir(parents=True)
    write_table(folder, {"feature": np.arange(n, dtype=np.int32), "frequency": freq,
                         "max_activation": rng.gamma(2.0, 2.0, n).astype(np.float32),
                         "mean_activation": rng.gamma(2.0, 1.0, n).astype(np.float32),
                         "dead": rng.random(n) < 0.02, "dense": freq > 0.1})
    store = FeatureStore(folder)
    words = ["newline", "bracket", "import", "keyword", "string"]
    store.set_labels([Label(i, f"{words[(i // 10) % 5]} token #{i}", "pattern", "simulation",
                            float(i % 100) / 100, "ok", None) for i in range(0, n, 10)])
    return store


def test_feature_table_model_over_100k_features(qtbot: QtBot, tmp_path: Path) -> None:
    """Filter, sort and search through the Qt model agree with numpy on 100,000 features (their
    speed is measured by benchmarks/browse.py, not here)."""
    from mistudio.gui.feature_table import COLUMNS, FeatureTableModel, FilterBar

    store = _synthetic_store(tmp_path / "f", 100_000)
    model = FeatureTableModel()
    bar = FilterBar(model)
    model.set_store(store)
    bar.apply()
    alive = ~store.column("dead")
    assert model.rowCount() == int(alive.sum())
    freq = store.column("frequency")
    shown = [model.feature_at(r) for r in range(model.rowCount())]
    assert (np.diff(freq[shown]) <= 0).all()  # most frequent first
    bar.min_freq.setValue(1.0)  # percent
    bar.apply()
    assert model.rowCount() == int((alive & (freq >= 0.01)).sum())
    bar.min_freq.setValue(0.0)
    bar.search.setText("bracket")
    bar.apply()
    expected = {i for i in range(0, 100_000, 10) if (i // 10) % 5 == 1 and alive[i]}
    assert {model.feature_at(r) for r in range(model.rowCount())} == expected
    row0 = model.index(0, [k for k, _ in COLUMNS].index("label"))
    assert "bracket" in model.data(row0)
    model.sort([k for k, _ in COLUMNS].index("score"), Qt.SortOrder.DescendingOrder)
    scores = store.column("score")[[model.feature_at(r) for r in range(model.rowCount())]]
    assert (np.diff(scores) <= 0).all()
    assert "of 100,000" in bar.count.text()


def _wait_ready(qtbot: QtBot, win: Any) -> None:
    qtbot.waitUntil(lambda: win.features.text is not None and win.features.detail.feature >= 0,
                    timeout=60_000)


def _shot(win: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    image = win.grab()
    assert image.save(str(SHOTS / f"{name}.png"))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_feature_browser_on_a_real_analysis(qtbot: QtBot, analysed: Workspace,
                                            theme: str) -> None:
    from mistudio.gui.common import apply_theme
    from mistudio.gui.main_window import MainWindow

    app = QApplication.instance()
    apply_theme(app, theme)  # type: ignore[arg-type]
    win = MainWindow(str(analysed.root))
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    win.show_panel(win.features)
    panel = win.features
    _wait_ready(qtbot, win)
    store = panel.store
    assert store is not None and panel.model.rowCount() == int((~store.column("dead")).sum())
    f = panel.detail.feature
    assert f == panel.model.feature_at(0)  # the most frequent feature opens first
    heat = panel.detail.top_examples.heatmaps
    assert heat and all(h.tokens for h in heat)
    peak_row = heat[0]
    assert peak_row.values[peak_row.marked] == pytest.approx(float(peak_row.values.max()))
    assert "activation" in peak_row.tooltip(peak_row.marked)
    _shot(win, f"features-detail-{theme}")
    # a neighbour opens on click; the edited label is stored as a human label
    nearest = panel.detail.nearest
    assert nearest.count() > 0
    g = int(nearest.item(0).data(Qt.ItemDataRole.UserRole))
    named = store.label(g)  # a neighbour shows its label, or says it has none yet
    assert (named.label[:40] if named else "(no label yet)") in nearest.item(0).text()
    panel.detail.featureRequested.emit(g)
    assert panel.detail.feature == g and panel.model.feature_at(
        panel.table.currentIndex().row()) == g
    panel.detail.label_edit.setText("my label")
    panel.detail._save_label()
    assert store.label(g).label == "my label" and store.label(g).source == "human"
    panel.filters.search.setText("my label")
    panel.filters.apply()
    assert [panel.model.feature_at(r) for r in range(panel.model.rowCount())] == [g]
    panel.filters.search.clear()
    panel.filters.apply()
    # describe with the pattern explainer, in the worker
    with qtbot.waitSignal(panel.runner.finished, timeout=60_000):
        panel.describe([f], "pattern", "")
    lb = store.label(f)
    assert lb is not None and lb.source == "pattern"
    assert panel.detail.label_edit.text() == lb.label
    # every live feature in words; a family to filter by; the windows behind a label
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.describe(0, "concept", "")
    assert store.label(g).label == "my label"  # a person's label stays
    families = [panel.filters.family.itemData(i) for i in range(1, panel.filters.family.count())]
    assert families and all(families)
    panel.filters.family.setCurrentIndex(1)
    shown = [panel.model.feature_at(r) for r in range(panel.model.rowCount())]
    assert shown and all(store.label(x).family == families[0] for x in shown)
    panel.select_feature(shown[0])
    assert families[0] in panel.detail.label_info.text()
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.label_evidence(shown[0])
    evidence = panel.detail.evidence
    assert evidence.heatmaps and "Rule:" in evidence.summary.text()
    _shot(win, f"features-evidence-{theme}")
    panel.filters.family.setCurrentIndex(0)
    # map, correlations, analyze text
    panel.views.setCurrentWidget(panel.map)
    qtbot.waitUntil(lambda: len(panel.map.xy) == store.n, timeout=120_000)
    assert panel.map.points.data["data"].tolist() == list(range(store.n))
    _shot(win, f"features-map-{theme}")
    with qtbot.waitSignal(panel.runner.finished, timeout=60_000):
        panel.correlate([])  # no rows picked: the feature and its co-occurring ones
    assert panel.correlation.matrix.shape[0] >= 2
    assert np.allclose(np.diag(panel.correlation.matrix), 1.0)
    _shot(win, f"features-correlations-{theme}")
    panel.views.setCurrentWidget(panel.probe)
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.analyze_text("import os\nprint(os.getcwd())")
    assert panel.probe.acts is not None and panel.probe.heat.tokens
    assert panel.probe.strongest.count() > 0
    assert "\n" in panel.probe._tip(2) or "no feature fires" in panel.probe._tip(2)
    _shot(win, f"features-analyze-text-{theme}")
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.ablate(f)
    assert "next-token loss" in panel.detail.ablation.text()
    apply_theme(app, "light")  # type: ignore[arg-type]


def test_steering_tab_streams_two_different_continuations(qtbot: QtBot,
                                                          analysed: Workspace) -> None:
    from mistudio.core.steering.presets import load_preset_data
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(analysed.root))
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    _wait_ready(qtbot, win)
    assert not win.steering.go.isEnabled()  # no feature yet: nothing Generate could do
    f = win.features.detail.feature
    win.features.detail.steerRequested.emit(f)  # "Steer with this feature"
    panel = win.steering
    assert panel.go.isEnabled()
    assert win.current_panel() is panel and [r.feature for r in panel.rows] == [f]
    panel.units.setCurrentIndex(panel.units.findData("activation"))
    panel.rows[0].box.setValue(40.0)
    assert panel.rows[0].slider.value() == 400 or panel.rows[0].slider.value() == \
        panel.rows[0].slider.maximum()
    panel.max_tokens.setValue(12)
    streamed: list[dict] = []
    panel.runner.partial.connect(streamed.extend)
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.generate()
    r = panel.result
    assert {s["side"] for s in streamed} == {"plain", "steered"}  # token by token, both sides
    assert r.plain.token_ids != r.steered.token_ids
    assert r.diverges_at is not None
    i = r.diverges_at
    assert panel.steered.colors[i] is not None and panel.plain.colors[i] is not None
    assert len(panel.kl_bars.opts["height"]) == len(r.kl_per_position)
    assert "gained probability" in panel._steered_tip(i)
    services = win.jobs.center.services
    child = services.processes()  # generation runs in the model's service, which stays loaded
    assert len(child) == 1 and os.getpid() not in child.values()
    _shot(win, "steering-light")
    panel.save_preset("strong")
    panel.rate("steered")
    assert load_preset_data(analysed, "strong")["ratings"][0]["better"] == "steered"
    # the same seed and a zero coefficient: both sides agree again
    panel.rows[0].box.setValue(0.0)
    with qtbot.waitSignal(panel.runner.finished, timeout=120_000):
        panel.generate()
    assert panel.result.plain.token_ids == panel.result.steered.token_ids
    assert services.processes() == child and panel.metrics.text().startswith("Diverges")
    panel.clear_features()
    panel.preset.setCurrentText("strong")
    panel.load_preset()
    assert [(r.feature, r.box.value()) for r in panel.rows] == [(f, 40.0)]
    shown = panel.steered.tokens
    panel.prompt.setPlainText("  ")  # an empty prompt keeps the last result and says why
    panel.generate()
    assert not panel.runner.running and panel.steered.tokens == shown
    assert "Type a prompt" in panel.metrics.text() and panel.go.text() == "Generate"
    win.close()
    assert services.processes() == {}  # closing the window ends the model's service


def test_presentation_mode_is_readable_at_1280x720(qtbot: QtBot, analysed: Workspace) -> None:
    import pyqtgraph as pg

    from mistudio.gui.main_window import PRESENTATION_FONT, MainWindow

    win = MainWindow(str(analysed.root))
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    _wait_ready(qtbot, win)
    size = QApplication.font().pointSizeF()
    curve = win.training.dashboard.curves["mse"]
    width = pg.mkPen(curve.opts["pen"]).widthF()
    win.set_presentation(True)
    assert QApplication.font().pointSizeF() == pytest.approx(size * PRESENTATION_FONT)
    assert pg.mkPen(curve.opts["pen"]).widthF() >= 1.5 * width
    assert not win.dock.isVisible() and win.isFullScreen()
    assert QApplication.palette().base().color().name() == "#000000"
    win.setWindowState(Qt.WindowState.WindowNoState)  # the projector's resolution
    win.resize(1280, 720)
    for panel in win.panels:
        win.show_panel(panel)
        qtbot.wait(30)
        name = win.tabs.tabText(win.tabs.currentIndex()).replace("&", "").lower()
        image = win.grab()
        assert (image.width(), image.height()) == (1280, 720)
        _shot(win, f"{name}-presentation")
    win.set_presentation(False)
    assert QApplication.font().pointSizeF() == pytest.approx(size)
    assert pg.mkPen(curve.opts["pen"]).widthF() == pytest.approx(width)
    assert win.dock.isVisible()


def test_quick_start_runs_end_to_end_on_a_tiny_model(qtbot: QtBot, toy_ws: Workspace) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    win.show()
    dialog = win.quick_start(dict(model="toy", dataset="pydoc", max_tokens=3000,
                                  context_length=64, train_steps=80, batch_size=256,
                                  label_top=30, analyze_tokens=2500))
    rows: list[Any] = []
    dialog.runner.partial.connect(rows.extend)
    with qtbot.waitSignal(dialog.finishedRun, timeout=300_000) as done:
        dialog.start_button.click()
    result = done.args[0]
    assert any(isinstance(r, dict) and "step" in r for r in rows)  # live training curves
    assert len(dialog.dashboard.buffers.get("step")) > 0
    assert all(lbl.text().startswith("\u2713") for lbl in dialog.stage_labels[:-1])
    assert "Done in" in dialog.status.text()
    # the Feature browser opens on the result, a steering experiment is set up
    assert win.current_panel() is win.features
    qtbot.waitUntil(lambda: win.features.detail.feature >= 0, timeout=60_000)
    assert win.features.analysis == "quickstart-topk" and win.features.model.rowCount() > 0
    assert result.features.labelled > 0
    if result.steering:
        assert [r.feature for r in win.steering.rows] == [result.steering.feature]
    _shot(dialog, "quickstart-dialog")


def test_lesson_trains_shows_features_and_steers(qtbot: QtBot, toy_ws: Workspace) -> None:
    """Help > Lesson on a tiny model: training sized from a warm-up, features best-first with
    variety, then the audience's prompt steered."""
    from mistudio.core.workflows.lesson import lesson_features
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    lesson = win.open_lesson(dict(model="toy", dataset="pydoc", max_tokens=3000,
                                  context_length=64, batch_size=256, label_top=30,
                                  analyze_tokens=2500, seconds=2.0))
    said: list[str] = []
    lesson.runner.status.connect(lambda _t: said.append(lesson.status.text()))
    with qtbot.waitSignal(lesson.runner.finished, timeout=300_000):
        lesson.start_button.click()
    assert said and not any(t.startswith("step ") or " mse " in t for t in said)  # words
    assert lesson.status.text().startswith("Training: step") or "Nam" in lesson.status.text() \
        or said
    steps = toy_ws.catalog.get("sae", "lesson-topk").config["steps"]
    assert 100 <= steps <= 4000  # from the warm-up's speed, clamped; the warm-up is gone
    assert toy_ws.catalog.find("sae", "lesson-warmup") is None
    assert lesson.dashboard.buffers.n > 0 and lesson.dashboard._planned == steps
    assert lesson.pages.currentIndex() == 1 and lesson.features.count() > 0
    shown = lesson_features(toy_ws, "lesson-topk")
    families = [f.family for f in shown]
    assert len(families) == len(set(families))  # one feature per family
    from mistudio.core.features.families import _tier

    ranks = [(f.score < 0.7, _tier(f.family)) for f in shown]
    assert ranks == sorted(ranks)  # labels that hold first: concepts, words, then layout
    for a, b in itertools.pairwise(shown):
        assert (a.score < 0.7, _tier(a.family)) < (b.score < 0.7, _tier(b.family)) \
            or a.score >= b.score  # best first
    lesson.pages.setCurrentIndex(2)
    assert lesson.strength.value() > 0 and "x max" in lesson.strength_label.text()
    lesson.prompt.setPlainText("The list")
    chosen = lesson.features.currentItem()
    assert f"feature {chosen.data(Qt.ItemDataRole.UserRole)}" in lesson.steering_what.text()
    streamed: list[dict] = []
    lesson.steer_runner.partial.connect(streamed.extend)
    with qtbot.waitSignal(lesson.steered, timeout=120_000) as got:
        lesson.generate_button.click()
        assert lesson.stop_button.isEnabled() and not lesson.generate_button.isEnabled()
    plain, steered = got.args
    assert plain and steered and lesson.steered_text.toPlainText() == steered
    assert {s["side"] for s in streamed} == {"plain", "steered"}  # word by word, both sides
    assert not lesson.stop_button.isEnabled()
    SHOTS.mkdir(exist_ok=True)
    lesson.grab().save(str(SHOTS / "lesson-steer.png"))
    lesson.pages.setCurrentIndex(1)
    lesson.grab().save(str(SHOTS / "lesson-features.png"))
    win.close()
    assert win.jobs.center.services.processes() == {}  # the lesson steered in the shared one


def test_a_damaged_labels_file_is_offered_for_recovery(qtbot: QtBot, analysed: Workspace,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from mistudio.gui.features_panel import FeaturesPanel

    folder = Path(analysed.catalog.get("features", "sae").path)
    store = FeatureStore(folder)
    store.set_labels([Label(2, "my own words", "human", None, None, "ok", None)])
    db = folder / "labels.sqlite"
    damaged = db.read_bytes()[:100] + b"\xff" * 8 + db.read_bytes()[108:]
    db.write_bytes(damaged)
    offered: list[str] = []

    def choose_recover(box: QMessageBox) -> int:
        offered.append(box.text())
        next(b for b in box.buttons() if b.text() == "Recover labels").click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", choose_recover)
    monkeypatch.setattr(QMessageBox, "information", lambda *a: offered.append(a[2]))
    panel = FeaturesPanel(analysed)
    qtbot.addWidget(panel)
    panel.open_analysis("sae")
    assert "labels file of analysis 'sae' is damaged" in offered[0]
    assert "(1 written by hand)" in offered[1]  # the broken first page lost the table; the
    assert panel.store is not None and panel.store.label(2).label == "my own words"  # journal
    assert (folder / next(p.name for p in folder.iterdir()
                          if p.name.startswith("labels.sqlite.damaged-"))).read_bytes() == damaged


def test_search_and_sort_put_what_informs_first(qtbot: QtBot, analysed: Workspace) -> None:
    from mistudio.gui.feature_table import COLUMNS
    from mistudio.gui.features_panel import FeaturesPanel

    folder = Path(analysed.catalog.get("features", "sae").path)
    FeatureStore(folder).set_labels([Label(i, f"closing bracket {i}", "pattern", "simulation",
                                           0.5, "ok", None) for i in range(0, 40, 2)])
    panel = FeaturesPanel(analysed)
    qtbot.addWidget(panel)
    panel.open_analysis("sae")
    qtbot.waitUntil(lambda: panel.detail.feature >= 0, timeout=60_000)
    bar = panel.filters
    assert "closing" in bar.search.placeholderText()  # a word the search will find
    bar.search.setText("nowhere")
    bar.apply()
    assert panel.model.rowCount() == 0 and "no label contains \u201cnowhere\u201d" in bar.count.text()
    assert panel.detail.feature == -1 and "No feature matches" in panel.detail.title.text()
    bar.search.setText("closing")
    bar.apply()
    qtbot.waitUntil(lambda: panel.detail.feature >= 0, timeout=10_000)
    bar.search.clear()
    bar.apply()
    header = panel.table.horizontalHeader()
    freq_col = [k for k, _ in COLUMNS].index("frequency")
    # the first click on Frequency: most frequent first
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(header.sectionViewportPosition(freq_col) + 5, 5))
    freq = panel.store.column("frequency")
    shown = [panel.model.feature_at(r) for r in range(panel.model.rowCount())]
    assert panel.model.sort_key == "frequency" and (np.diff(freq[shown]) <= 0).all()
    assert header.sortIndicatorOrder() == Qt.SortOrder.DescendingOrder


def test_logit_lens_tokens_read_as_words_or_pieces() -> None:
    from mistudio.gui.feature_detail import as_piece

    assert as_piece(" Paris") == "Paris"  # a word start
    assert as_piece("rotsky") == "\u2026rotsky"  # a piece that continues a word
    assert as_piece(",") == "," and as_piece(" ") == " " and as_piece("⏎") == "⏎"


def test_a_lesson_can_be_stopped_and_started_again(qtbot: QtBot, toy_ws: Workspace) -> None:
    from mistudio.gui.main_window import MainWindow

    win = MainWindow(str(toy_ws.root))
    qtbot.addWidget(win)
    lesson = win.open_lesson(dict(model="toy", dataset="pydoc", max_tokens=3000,
                                  context_length=64, batch_size=256, label_top=30,
                                  analyze_tokens=2500, seconds=2.0))
    assert not lesson.cancel_button.isEnabled()
    with qtbot.waitSignal(lesson.runner.cancelled, timeout=120_000):
        lesson.start_button.click()
        assert lesson.cancel_button.isEnabled() and not lesson.start_button.isEnabled()
        lesson.cancel_button.click()
    assert lesson.start_button.isEnabled() and "Stopped" in lesson.status.text()
    lesson.close()
    again = win.open_lesson()  # Help > Lesson again: the same window, ready to start
    assert again is lesson and again.pages.currentIndex() == 0
    assert again.start_button.isEnabled() and not again.cancel_button.isEnabled()
    win.close()
