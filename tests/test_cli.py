"""Every CLI entry point, its JSON output, and one-line errors with non-zero exit codes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mistudio.cli import build_parser, main

COMMANDS = ["datasets", "datasets add", "datasets list", "datasets show", "datasets remove",
            "models", "models add", "models list", "models show", "models remove", "tokenize",
            "tokenized list", "tokenized show", "extract", "activations list", "activations show",
            "activations remove", "train", "saes list", "saes show", "saes remove", "eval",
            "import", "export", "doctor",
            "catalog", "jobs", "quickstart", "analyze", "features", "feature", "label", "map",
            "steer", "steer-eval", "presets", "gui", "saes releases", "saes pull",
            "models plan", "models faithfulness"]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--help"])
    assert exc.value.code == 0
    assert "--workspace" in capsys.readouterr().out


def test_python_dash_m_and_the_console_script(tmp_path: Path) -> None:
    import torch
    from PySide6 import __version__ as qt_version

    out = subprocess.run([sys.executable, "-m", "mistudio", "--version"], capture_output=True,
                         text=True, check=True).stdout
    first = out.splitlines()[0]
    assert first.startswith("miStudio 0.1.0 (") and "unknown commit" not in first  # a checkout
    assert torch.__version__ in out and qt_version in out and "Device: cpu" in out
    info = json.loads(subprocess.run([sys.executable, "-m", "mistudio", "--json", "--version"],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["commit"] in first and info["torch"] == torch.__version__
    exe = Path(sys.executable).parent / "mistudio"
    res = subprocess.run([str(exe), "datasets", "list", "--workspace", str(tmp_path), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and json.loads(res.stdout) == []


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys)
    assert code == 0 and "COMMAND" in out and "quickstart --headless" in err


def test_workflow_on_a_toy_model(tmp_path: Path, toy_folder: Callable[[str], Path],
                                 capsys: pytest.CaptureFixture) -> None:
    w = ["--workspace", str(tmp_path / "ws")]
    code, out, _ = run(capsys, "models", "add", "toy", "--source", str(toy_folder("gpt2")), *w)
    assert code == 0 and "GPT-2, 3 layers, d_model 32" in out
    code, out, _ = run(capsys, "datasets", "add", "docs", "--max-samples", "5", *w, "--json")
    assert code == 0 and json.loads(out)["summary"]["documents"] == 5
    code, out, _ = run(capsys, "tokenize", "docs", "--model", "toy", "--context-length", "32", *w)
    assert code == 0 and "docs.toy.ctx32.bos" in out
    code, out, _ = run(capsys, "extract", "--model", "toy", "--dataset", "docs.toy.ctx32.bos",
                       "--layer", "0", "--layer", "2", "--hook", "resid_post", "--hook", "mlp_out",
                       "--name", "acts", "--max-tokens", "300", *w, "--json")
    m = json.loads(out)
    assert code == 0 and m["summary"]["tokens"] == 300 and len(m["hook_points"]) == 4
    code, out, _ = run(capsys, "extract", "--model", "toy", "--dataset", "docs", *w, "--json",
                       "--max-tokens", "50")  # default layer: the middle one
    assert code == 0 and json.loads(out)["hook_points"] == ["layers.1.resid_post"]
    code, out, _ = run(capsys, "train", "--activations", "acts", "--hook", "layers.2.resid_post",
                       "--expansion", "2", "--k", "4", "--steps", "20", "--batch-size", "64",
                       "--name", "sae", *w)
    assert code == 0 and "SAE sae: topk, 32 -> 64, 20 steps" in out
    # 20 x 64 tokens over the 270 training tokens (300 less the held-out 30): said so
    assert "Note: 20 steps x 64 tokens pass over the 270 training tokens 4.7 times" in out
    code, out, _ = run(capsys, "train", "--activations", "acts", "--arch", "transcoder", *w)
    assert code == 2
    code, out, _ = run(capsys, "train", "--activations", "acts", "--arch", "skip", "--steps", "5",
                       "--batch-size", "64", "--expansion", "2", "--name", "skip", *w, "--json")
    assert json.loads(out)["config"]["skip"] == "fixed"
    code, out, _ = run(capsys, "eval", "sae", "--sequences", "4", *w)
    assert code == 0 and "CE loss score" in out and "KL divergence" in out
    code, out, _ = run(capsys, "saes", "list", *w)
    assert "sae" in out and "layers.2.resid_post" in out
    code, out, _ = run(capsys, "activations", "list", *w)
    assert "acts" in out and "0.resid_post,0.mlp_out,2.resid_post,2.mlp_out" in out
    code, out, _ = run(capsys, "activations", "show", "acts", *w)
    assert "mean_norm" in out
    code, out, _ = run(capsys, "models", "show", "toy", *w, "--json")
    info = json.loads(out)
    assert info["n_layers"] == 3 and "layers.2.attn_out" in info["hook_points"]
    code, out, _ = run(capsys, "models", "list", *w)
    assert "smollm2-135m" in out and "toy" in out  # the embedded model is always registered
    code, out, _ = run(capsys, "tokenized", "show", "docs.toy.ctx32.bos", *w)
    assert "top tokens:" in out
    code, out, _ = run(capsys, "datasets", "show", "docs", *w)
    assert "docs.toy.ctx32.bos" in out
    code, out, _ = run(capsys, "jobs", *w)
    assert "extract" in out and "done" in out
    code, out, _ = run(capsys, "catalog", "rebuild", *w, "--json")
    from mistudio.core.models.bundled import installed_models

    built_in = len(installed_models())  # `models list` registered them (1 or 2)
    assert json.loads(out)["artifacts"] == 8 + built_in  # toy, dataset, 2 tokenized, 2 sets, 2 SAEs
    code, out, _ = run(capsys, "activations", "remove", "acts", *w)
    assert code == 0 and not (tmp_path / "ws" / "activations" / "acts").exists()
    code, out, _ = run(capsys, "tokenized", "remove", "docs.toy.ctx32.bos", *w)
    assert code == 0 and "Removed tokenized set docs.toy.ctx32.bos" in out
    assert not (tmp_path / "ws" / "tokenized" / "docs.toy.ctx32.bos").exists()
    code, out, _ = run(capsys, "tokenized", "list", *w, "--json")
    assert "docs.toy.ctx32.bos" not in out


@pytest.mark.parametrize(("argv", "message"), [
    (["extract", "--model", "nope"], "no model named 'nope'"),
    (["datasets", "add", "x", "--source", "/missing/file.csv"], "neither an existing file"),
    (["datasets", "show", "nope"], "no dataset named 'nope'"),
    (["models", "add", "x", "--source", "/missing"], "does not exist"),
    (["tokenize", "nope"], "no dataset named 'nope'"),
    (["extract", "--dataset", "nope"], "no dataset or tokenized set named 'nope'"),
    (["extract", "--layer", "99"], "Layer 99 is out of range: the model has 30 layers"),
    (["extract", "--hook", "resid_middle"], "Unknown hook point"),
    (["activations", "show", "nope"], "no activations named 'nope'"),
])
def test_bad_input_gets_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv, "--workspace", str(tmp_path / "ws"))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_doctor_reports_the_embedded_model_and_corpus(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "doctor", "--workspace", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0 and report["device"] == "cpu" and report["online_mode"] is False
    assert report["embedded_model"]["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert report["builtin_corpus"]["documents"] > 70


def test_every_parser_action_is_covered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {c.split()[0] for c in COMMANDS} == set(sub.choices)


@pytest.mark.parametrize(("argv", "hint"), [
    (["saes", "show", "nope"], "`mistudio saes list`"),
    (["activations", "show", "nope"], "`mistudio activations list`"),
    (["datasets", "show", "nope"], "`mistudio datasets list`"),
    (["tokenized", "show", "nope"], "`mistudio tokenized list`"),
])
def test_unknown_names_point_at_the_right_list_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       argv: list[str], hint: str) -> None:
    code, _, err = run(capsys, *argv, "--workspace", str(tmp_path / "ws"))
    assert code == 2 and hint in err


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every (sub)command path, e.g. ("saes", "remove"), with the positionals it needs."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, (*prefix, name))
    if prefix and not out:
        needed = [a for a in parser._actions if not a.option_strings and a.required
                  and not isinstance(a, argparse._SubParsersAction)]
        required = [a for a in parser._actions if a.option_strings and a.required]
        def value(a: argparse.Action) -> str:
            return next(iter(a.choices)) if a.choices else "1" if a.type in (int, float) else "X"

        args = [*prefix, *(value(a) for a in needed)]
        for a in required:
            args += [a.option_strings[0], value(a)]
        out.append(tuple(args))
    return out


def test_global_options_are_obeyed_before_and_after_the_command(tmp_path: Path) -> None:
    parser = build_parser()
    commands = _commands(parser)
    assert len(commands) > 30 and ("saes", "remove", "X") in commands
    for cmd in commands:
        before = parser.parse_args(["--workspace", "WS", "--json", "--online", *cmd])
        after = parser.parse_args([*cmd, "--workspace", "WS", "--json", "--online"])
        for args in (before, after):
            assert (args.workspace, args.json, args.online) == ("WS", True, True), cmd
        plain = parser.parse_args(list(cmd))
        assert (plain.workspace, plain.json, plain.online) == (None, False, False), cmd


def test_global_workspace_before_the_command_is_the_one_acted_on(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("MISTUDIO_HOME", str(a))
    assert main(["--workspace", str(b), "datasets", "add", "d", "--max-samples", "2"]) == 0
    assert (b / "raw" / "d").is_dir() and not (a / "raw").exists()
    capsys.readouterr()
    assert main(["--json", "--workspace", str(b), "datasets", "list"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "d"


def test_errors_under_json_are_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "datasets", "show", "nope", "--json", "--workspace",
                         str(tmp_path))
    data = json.loads(out)
    assert code == 2 and data["error"] == "NotFoundError"
    assert data["actions"] == ["list_artifacts"] and "mistudio datasets list" in data["fix"]
    assert err.startswith("error: There is no dataset named 'nope'")
    code, out, _ = run(capsys, "train", "--activations", "a", "--batch-size", "0", "--json",
                       "--workspace", str(tmp_path))
    data = json.loads(out)
    assert code == 2 and data["problem"].startswith("--batch-size must be a positive whole")


def test_importing_a_file_says_it_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "weights.txt").write_text("not an SAE")
    code, _, err = run(capsys, "import", str(tmp_path / "weights.txt"), "--name", "x",
                       "--workspace", str(tmp_path / "ws"))
    assert code == 2 and "is a file, not an SAE's folder" in err


def test_bare_mistudio_opens_the_workspace_mistudio_home_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.cli as cli_mod
    import mistudio.gui.app as app_mod

    opened: list[str | None] = []
    monkeypatch.setattr(cli_mod, "_gui_available", lambda: True)
    monkeypatch.setattr(app_mod, "run_app", lambda ws=None, *a, **k: opened.append(ws) or 0)
    monkeypatch.setattr(sys, "argv", ["mistudio"])
    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home-ws"))
    assert main() == 0 and opened == [str(tmp_path / "home-ws")]
    monkeypatch.setattr(sys, "argv", ["mistudio", "--workspace", str(tmp_path / "given")])
    assert main() == 0 and opened[-1] == str(tmp_path / "given")
