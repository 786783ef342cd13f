"""Plugins: the example package in tests/plugins/example is pip-installed for these tests and
extends miStudio through entry points alone (a gated SAE architecture, a label explainer and
scorer, a steering scorer, a feature analysis)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from toy import small_train_config as small

from mistudio.cli import main
from mistudio.core.runtime import plugins
from mistudio.core.runtime.errors import MiStudioWarning
from mistudio.core.store.workspace import Workspace

EXAMPLE = Path(__file__).parent / "plugins" / "example"
PACKAGE = "mistudio_example_plugin"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, installed by pip into a folder of its own (once per run)."""
    src = tmp_path_factory.mktemp("plugin-src") / "example"
    shutil.copytree(EXAMPLE, src)  # building writes into the source folder: not into tests/
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    "--target", str(site), str(src)], check=True)
    return site


def _forget_plugin() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        del sys.modules[name]
    plugins.refresh()


@pytest.fixture
def example_plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin visible to this process and to the child processes it starts."""
    sys.path.insert(0, str(plugin_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(plugin_site), os.environ.get("PYTHONPATH")) if p))
    plugins.refresh()
    try:
        yield plugin_site
    finally:
        sys.path.remove(str(plugin_site))
        _forget_plugin()


def test_every_kind_of_plugin_is_found(example_plugin: Path, ws: Workspace) -> None:
    from mistudio.core.sae import architecture_names
    from mistudio.core.workflows.doctor import doctor

    found = {(p.group, p.name) for p in plugins.installed()}
    assert found == {("mistudio.sae_architectures", "gated"), ("mistudio.explainers", "peak-token"),
                     ("mistudio.label_scorers", "peak-recall"),
                     ("mistudio.steering_scorers", "capitals"),
                     ("mistudio.feature_analyses", "peak-token-share")}
    assert {p.package for p in plugins.installed()} == {"mistudio-example-plugin 0.1.0"}
    assert architecture_names()[-1] == "gated"
    assert "gated (SAE architectures, mistudio-example-plugin 0.1.0)" in doctor(ws)["plugins"]


def test_without_the_plugin_its_names_are_refused_clearly(acts_ws: Workspace) -> None:
    from mistudio.core.runtime.errors import InvalidInputError

    assert all(p.package != "mistudio-example-plugin 0.1.0" for p in plugins.installed())
    with pytest.raises(InvalidInputError, match="Unknown architecture 'gated'"):
        small(architecture="gated")


def test_gated_architecture_trains_saves_loads_and_exports(example_plugin: Path,
                                                           acts_ws: Workspace) -> None:
    from mistudio.core.activations.store import open_activations
    from mistudio.core.sae.io import CFG_FILE, WEIGHTS_FILE, open_sae
    from mistudio.core.sae.onnx_export import export_onnx
    from mistudio.core.sae.trainer import train_sae

    m = train_sae(acts_ws, small(architecture="gated", steps=60), "gated")
    assert m.summary.explained_variance > 0.3 and m.summary.architecture == "gated"
    folder = acts_ws.root / "saes" / "gated"
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mse"] < rows[0]["mse"] and "gate_reconstruction" in rows[-1]
    assert "sparsity_coefficient" in rows[-1]  # the L1 penalty it declares is scheduled
    cfg = json.loads((folder / CFG_FILE).read_text())
    assert cfg["architecture"] == "gated"
    from safetensors.torch import load_file

    assert {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"} <= set(
        load_file(str(folder / WEIGHTS_FILE)))
    sae, _ = open_sae(acts_ws, "gated")  # loads through the plugin's coder
    x = torch.from_numpy(open_activations(acts_ws, "acts").rows("layers.1.resid_post", 0, 512))
    fvu = float((sae.reconstruct(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu == pytest.approx(1 - m.summary.explained_variance, abs=0.05)
    l0 = float((sae.encode(x) > 0).float().sum(-1).mean())
    assert l0 == pytest.approx(m.summary.l0, rel=0.2)
    sparse = train_sae(acts_ws, small(architecture="gated", steps=60, sparsity_coefficient=0.3),
                       "gated-sparse")  # the L1 on the gate is what makes it sparse
    assert 0 < sparse.summary.l0 < 0.5 * m.summary.l0
    onnx = export_onnx(sae, acts_ws.root / "exported", x.numpy()[:64])
    assert onnx.max_abs_diff <= 1e-4 * max(1.0, onnx.max_abs_value)


def test_gated_architecture_from_the_cli_and_the_training_tab(
        example_plugin: Path, acts_ws: Workspace, qtbot: object,
        capsys: pytest.CaptureFixture) -> None:
    from mistudio.gui.training_panel import TrainingPanel

    w = ["--workspace", str(acts_ws.root)]
    assert main(["train", "--activations", "acts", "--arch", "gated", "--name", "g",
                 "--steps", "10", "--batch-size", "256", "--expansion", "2", *w]) == 0
    assert "SAE g:" in capsys.readouterr().out
    assert main(["export", "g", "--format", "onnx", "--out", str(acts_ws.root / "g-onnx"),
                 *w]) == 0
    assert (acts_ws.root / "g-onnx" / "sae.onnx").is_file()
    panel = TrainingPanel(acts_ws)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    items = [panel.arch.itemText(i) for i in range(panel.arch.count())]
    assert items[-1] == "gated"


def test_plugin_explainer_and_label_scorer(example_plugin: Path, analysed: Workspace) -> None:
    from mistudio.core.features.labels import LabelConfig, label_features
    from mistudio.core.features.store import open_features

    store = open_features(analysed, "sae")
    freq = store.column("frequency")  # features a tiny analysis can judge: not everywhere
    feats = tuple(int(f) for f in np.flatnonzero((freq > 0.01) & (freq < 0.04))[:4])
    r = label_features(analysed, "sae", LabelConfig(features=feats, explainer="peak-token"))
    labels = [store.label(int(f)) for f in store.labelled()]
    assert r.labelled_now == 4 and len(labels) == 4
    for lb in labels:  # its rule is executed on held-out windows like the concept explainer's
        assert lb.source == "plugin:peak-token" and lb.label.startswith("the token '")
        assert lb.scorer == "rule" and 0 <= lb.score <= 1 and lb.fuzzing is not None
    label_features(analysed, "sae", LabelConfig(features=feats, explainer="plugin:peak-token",
                                                scorer="peak-recall", overwrite=True))
    rescored = [store.label(int(f)) for f in store.labelled()]
    assert {lb.scorer for lb in rescored} == {"plugin:peak-recall"}
    assert all(0 <= lb.score <= 1 for lb in rescored)


def test_plugin_feature_analysis_joins_the_table(example_plugin: Path, acts_ws: Workspace,
                                                 qtbot: object) -> None:
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.examples import FeatureReader
    from mistudio.core.features.store import describe_columns, open_features
    from mistudio.core.sae.trainer import train_sae
    from mistudio.gui.feature_table import FeatureTableModel

    train_sae(acts_ws, small(steps=40), "sae")
    analyze(acts_ws, AnalyzeConfig("sae", tokens=2000, top_contexts=5))
    store = open_features(acts_ws, "sae")
    assert store.plugin_columns == {"peak_token_share": "peak-token-share"}
    share = store.column("peak_token_share")
    alive = ~store.column("dead")
    assert np.all((share[alive] > 0) & (share[alive] <= 1 + 1e-6)) and np.all(share[~alive] == 0)
    reader = FeatureReader(store.folder)  # recomputed from the files on disk
    f = int(np.flatnonzero(alive)[0])
    rows, values = reader.firing(f)
    tokens = reader.rows[rows, 2]
    mass = {t: values[tokens == t].sum() for t in np.unique(tokens)}
    assert share[f] == pytest.approx(max(mass.values()) / sum(mass.values()), rel=1e-5)
    assert describe_columns(store, f)["peak_token_share"] == pytest.approx(share[f])
    top = store.order(np.arange(store.n), "peak_token_share")
    assert share[top[0]] == share.max()
    model = FeatureTableModel()
    model.set_store(store)
    headers = [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]
    assert headers[-1] == "Peak token share"


def test_plugin_steering_scorer(example_plugin: Path, acts_ws: Workspace) -> None:
    from mistudio.core.sae.trainer import train_sae
    from mistudio.core.steering.evaluate import SteerEvalConfig, evaluate_steering
    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.session import SteeringSpec

    train_sae(acts_ws, small(steps=30, architecture="relu"), "sae")
    cfg = SteerEvalConfig(("The for statement", "A list in Python"), samples=2, max_tokens=6,
                          text_scorers=("capitals",), bootstrap=200)
    r = evaluate_steering(acts_ws, SteeringSpec(("sae",), (Intervention(5, 6.0),)), cfg,
                          device="cpu")
    scores = {s.scorer: s for s in r.points[0].scores}
    assert set(scores) == {"feature sae#5", "capitals"}
    assert 0 <= scores["capitals"].plain <= 1 and 0 <= scores["capitals"].steered <= 1


def test_a_broken_plugin_is_left_out_with_a_warning(tmp_path: Path) -> None:
    """A package whose entry point cannot load never stops miStudio."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mistudio.sae_architectures]\nbroken = no_such_module_anywhere:THING\n")
    sys.path.insert(0, str(tmp_path))
    plugins.refresh()
    try:
        from mistudio.core.sae import architecture_names

        with pytest.warns(MiStudioWarning, match="'broken' .*broken-plugin 1.0.* left out"):
            names = architecture_names()
        assert names == ["relu", "topk", "batchtopk", "jumprelu"]
    finally:
        sys.path.remove(str(tmp_path))
        plugins.refresh()

