"""Where things live in a workspace: one folder per kind of artifact, and names that become
folder names.

Layout (the spec's, plus caches)::

    raw/          ingested text datasets (Arrow)
    tokenized/    fixed-length token sequences (memory-mapped Arrow)
    activations/  chunked activation sets with a JSON manifest
    metadata/     the SQLite catalog, locks
    models/       dequantized / converted model caches
    saes/         trained sparse autoencoders
    features/     feature analyses
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mistudio.core.runtime.errors import InvalidInputError

SUBDIRS = ("raw", "tokenized", "activations", "metadata", "models", "saes", "features")
ARTIFACT_DIRS = {
    "dataset": "raw",
    "tokenized": "tokenized",
    "activations": "activations",
    "model": "models",
    "sae": "saes",
    "features": "features",
}
MANIFEST = "manifest.json"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def default_workspace_path() -> Path:
    """``$MISTUDIO_HOME``, else the per-user data folder of this platform."""
    env = os.environ.get("MISTUDIO_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "mistudio"


def validate_name(name: str, what: str = "name") -> str:
    """Artifact names become folder names: keep them portable."""
    if not name or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise InvalidInputError(
            f"{what} {name!r} is not a valid name.",
            "Use letters, digits, '-', '_' and '.', not starting with '.'.",
        )
    return name
