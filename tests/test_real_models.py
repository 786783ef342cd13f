"""Every path on both real built-in models: SmolLM2-135M (LLaMA family) and Gemma 3 270M.

A few hundred tokens each, so the whole file stays within minutes: the command line a user
types (models list, tokenize, extract, train, eval, analyze, label, steer, export), parity of
the stored activations with the plain Hugging Face forward, and the app's tabs on the result.
One workspace per model for the session (a GGUF is dequantized once).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from parity import check_parity
from pytestqt.qtbot import QtBot

from mistudio.cli import main
from mistudio.core.models.bundled import BUNDLED, is_installed
from mistudio.core.store.workspace import Workspace

MODELS = ("smollm2-135m", "gemma3-270m")
TOKENS = 384


@pytest.fixture(scope="session", params=MODELS)
def real(request: pytest.FixtureRequest, embedded_ws: Workspace,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str]]:
    """(workspace, model name); SmolLM2 shares the embedded integration tests' workspace."""
    name = request.param
    if not is_installed(BUNDLED[name]):
        pytest.skip(f"{name}'s packages are not installed (the README's set-up installs them)")
    if name == "smollm2-135m":
        yield embedded_ws, name
        return
    ws = Workspace(tmp_path_factory.mktemp(name) / "ws")
    yield ws, name
    ws.close()


def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> dict | list:
    """``mistudio --json ARGS`` in this process; its JSON output."""
    capsys.readouterr()
    assert main(["--json", "--workspace", str(ws.root), *args]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _middle(ws: Workspace, name: str) -> int:
    from mistudio.core.models.registry import model_info

    return model_info(ws, name).n_layers // 2


def test_listed_and_found_without_importing_its_packages(
        real: tuple[Workspace, str], capsys: pytest.CaptureFixture[str]) -> None:
    ws, name = real
    listed = {m["name"]: m for m in cli(ws, capsys, "models", "list")}  # type: ignore[union-attr]
    assert name in listed and "smollm2-135m" in listed
    for module, _ in BUNDLED[name].pieces:
        assert module not in sys.modules  # found with find_spec, never run


def test_stored_activations_match_the_plain_forward(
        real: tuple[Workspace, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Layers 0 and the middle one, four hook points, float32, position 0 dropped and kept (the
    BOS, whose norm is tens of times the others' in both models)."""
    ws, name = real
    mid = _middle(ws, name)
    cli(ws, capsys, "tokenize", "pydoc", "--model", name, "--context-length", "64",
        "--name", f"{name}.tok")
    hooks = [a for h in ("resid_pre", "resid_post", "attn_out", "mlp_out") for a in ("--hook", h)]
    for keep, rows in ((False, TOKENS), (True, 126)):
        set_name = f"{name}.parity{'-keep' if keep else ''}"
        cli(ws, capsys, "extract", "--model", name, "--dataset", f"{name}.tok", "--layer", "0",
            "--layer", str(mid), *hooks, "--max-tokens", str(rows), "--dtype", "float32",
            "--batch-sequences", "2", "--name", set_name,
            *(["--keep-first-position"] if keep else []))
        assert check_parity(ws, set_name, name, (0, mid)) == rows


def test_train_evaluate_analyse_label_steer_export(
        real: tuple[Workspace, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ws, name = real
    mid = _middle(ws, name)
    acts, sae = f"{name}.acts", f"{name}.sae"
    cli(ws, capsys, "extract", "--model", name, "--layer", str(mid), "--max-tokens",
        str(4 * TOKENS), "--name", acts)
    trained = cli(ws, capsys, "train", "--activations", acts, "--arch", "topk", "--expansion",
                  "4", "--k", "16", "--steps", "40", "--batch-size", "128", "--name", sae)
    summary = trained["summary"]
    assert summary["explained_variance"] > 0.3 and summary["l0"] <= 16
    ev = cli(ws, capsys, "eval", sae, "--sequences", "4")
    assert ev["ce_loss_zero"] > ev["ce_loss_clean"] and ev["kl_div"] > 0
    analysed = cli(ws, capsys, "analyze", sae)
    assert analysed["summary"]["alive"] > 50
    labelled = cli(ws, capsys, "label", sae, "--top", "12")
    assert labelled["labelled_now"] == 12 and "most frequent" in labelled["chosen"]
    top = cli(ws, capsys, "features", sae, "--sort", "freq")["features"][0]["feature"]
    steered = cli(ws, capsys, "steer", "--sae", sae, "--feature", f"{top}=+40", "--prompt",
                  "def main():", "--max-tokens", "6", "--temperature", "0")
    assert steered["kl_mean"] > 0  # the intervention reached the model's output
    for fmt in ("saelens", "onnx"):
        out = tmp_path / fmt
        cli(ws, capsys, "export", sae, "--format", fmt, "--out", str(out))
        assert any(out.iterdir())


def test_the_app_shows_and_steers_it(real: tuple[Workspace, str], qtbot: QtBot) -> None:
    """The window on that workspace: the model in the Models tab, the SAE's features in the
    Features tab, and a steered generation streamed side by side."""
    from mistudio.gui.main_window import MainWindow

    ws, name = real
    if ws.catalog.find("features", f"{name}.sae") is None:
        pytest.skip("needs test_train_evaluate_analyse_label_steer_export")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    win = MainWindow(str(ws.root))
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    assert name in [row[0] for row in win.models.model.rows]
    win.features.open_analysis(f"{name}.sae")
    qtbot.waitUntil(lambda: win.features.detail.feature >= 0, timeout=60_000)
    win.features.detail.steerRequested.emit(win.features.detail.feature)
    panel = win.steering
    panel.units.setCurrentIndex(panel.units.findData("activation"))
    panel.rows[0].box.setValue(40.0)
    panel.max_tokens.setValue(6)
    streamed: list[dict] = []
    panel.runner.partial.connect(streamed.extend)
    with qtbot.waitSignal(panel.runner.finished, timeout=180_000):
        panel.generate()
    assert {s["side"] for s in streamed} == {"plain", "steered"}
    assert panel.result.kl_mean > 0
    win.close()
