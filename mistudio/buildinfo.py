"""What this miStudio is: version, git commit, build date, and the versions it runs on.

In a git checkout the commit comes from ``git``; in a PyInstaller bundle (no ``.git``) from
``_build_info.json``, which ``packaging/build.sh`` writes next to this file before building.
Shown by ``mistudio --version`` and Help > About.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mistudio import __version__

BUILD_FILE = Path(__file__).with_name("_build_info.json")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def build_info() -> dict[str, Any]:
    """Version and provenance; the framework versions are read without starting anything."""
    info: dict[str, Any] = {"version": __version__, "commit": None, "built": None,
                            "frozen": bool(getattr(sys, "frozen", False))}
    if BUILD_FILE.is_file():
        try:
            info.update({k: v for k, v in json.loads(BUILD_FILE.read_text()).items()
                         if k in ("commit", "built")})
        except (OSError, ValueError):
            pass
    if info["commit"] is None:
        info["commit"] = _git_commit()
    import torch

    info["python"] = platform.python_version()
    info["platform"] = f"{platform.system()} {platform.machine()}"
    info["torch"] = torch.__version__
    try:
        from PySide6 import __version__ as qt_version
    except ImportError:  # a CLI-only installation
        qt_version = None
    info["qt"] = qt_version
    from mistudio.core.models.devices import resolve_device

    device = resolve_device("auto")
    info["device"] = device.type if device.type != "cuda" else \
        f"cuda ({torch.cuda.get_device_name(device)})"
    return info


def version_text(info: dict[str, Any] | None = None) -> str:
    i = info or build_info()
    commit = i["commit"] or "unknown commit"
    built = f", built {i['built']}" if i.get("built") else ""
    return (f"miStudio {i['version']} ({commit}{built})\nPython {i['python']} on {i['platform']}"
            f"\nPyTorch {i['torch']}, Qt (PySide6) {i['qt'] or 'not installed'}\n"
            f"Device: {i['device']}")
