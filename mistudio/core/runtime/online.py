"""Offline-first access to the Hugging Face libraries.

The hub libraries read ``HF_HUB_OFFLINE`` and friends when they are first imported, so the
default has to be set before any of them is: :mod:`mistudio` calls
:func:`apply_offline_default` on import. Online mode (hub downloads) is opt-in, per process.
"""

from __future__ import annotations

import os
import sys

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_QUIET_VARS = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_default() -> None:
    """Turn offline mode on unless the user asked for online mode (``MISTUDIO_ONLINE=1``)."""
    for key, value in _QUIET_VARS.items():
        os.environ.setdefault(key, value)
    set_online(os.environ.get("MISTUDIO_ONLINE", "0") == "1")


def set_online(online: bool) -> None:
    """Switch hub access on or off for this process, also after the hub libraries are imported."""
    value = "0" if online else "1"
    for key in _OFFLINE_VARS:
        os.environ[key] = value
    os.environ["MISTUDIO_ONLINE"] = "1" if online else "0"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = not online
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        ds_config.HF_HUB_OFFLINE = not online


def is_online() -> bool:
    """Whether hub downloads are allowed in this process."""
    return os.environ.get("MISTUDIO_ONLINE", "0") == "1"


def offline_hint() -> str:
    """The fix to print when something is missing from the local cache."""
    return (
        "miStudio runs offline by default; to download it once, turn on «online» for this "
        "one step and try again (or set MISTUDIO_ONLINE=1)."
    )
