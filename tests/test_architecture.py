"""The layering rules: the core never imports Qt, the GUI or the CLI."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import mistudio.core

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_no_qt() -> None:
    modules = [m.name for m in pkgutil.walk_packages(mistudio.core.__path__, "mistudio.core.")]
    assert "mistudio.core.activations.extraction" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'shiboken6') or m.startswith('mistudio.gui'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_linter_contract_holds() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is part of the dev dependencies"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_importing_mistudio_turns_offline_mode_on() -> None:
    code = ("import os; os.environ.pop('HF_HUB_OFFLINE', None); import mistudio, "
            "huggingface_hub.constants as c; print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == ["1", "True"]
