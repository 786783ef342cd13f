"""Shared fixtures: temporary workspaces, tiny models of every family, the embedded model."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach for the hub
# no spare process per window (each imports torch); tests/test_jobs.py switches it on
os.environ["MISTUDIO_SPARE_PROCESS"] = "0"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Qt tests draw without a screen
# Qt settings of the tests go to a temporary folder, never the user's own
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="mistudio-test-config-")
sys.path.insert(0, str(Path(__file__).parent))

from toy import save_toy

from mistudio.core.store.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    yield workspace
    workspace.close()


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A saved Hugging Face folder of a tiny model of the given family (built once per session)."""
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = save_toy(family, tmp_path_factory.mktemp(f"toy-{family}"))
        return made[family]

    return make


@pytest.fixture
def toy_ws(ws: Workspace, toy_folder: Callable[[str], Path]) -> Workspace:
    """A workspace with a tiny LLaMA registered as 'toy' and the built-in corpus as 'pydoc'."""
    from mistudio.core.data.datasets import DatasetConfig, add_dataset
    from mistudio.core.models.registry import add_model

    add_model(ws, "toy", str(toy_folder("llama")))
    add_dataset(ws, "pydoc", DatasetConfig("builtin:pydoc", max_samples=12))
    return ws


@pytest.fixture(scope="session")
def embedded_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace for the integration tests, so the GGUF is dequantized once per run."""
    workspace = Workspace(tmp_path_factory.mktemp("embedded") / "ws")
    yield workspace
    workspace.close()


@pytest.fixture
def acts_ws(toy_ws: Workspace) -> Workspace:
    """The toy workspace plus activation set "acts": layer 1 resid_post, mlp_in and mlp_out."""
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations

    cfg = ExtractConfig("toy", "pydoc", (1,), ("resid_post", "mlp_in", "mlp_out"),
                        context_length=64, max_tokens=3000, dtype="float32")
    extract_activations(toy_ws, cfg, "acts")
    return toy_ws


@pytest.fixture
def analysed(acts_ws: Workspace) -> Workspace:
    """acts_ws plus a small TopK SAE "sae" on layers.1.resid_post, analysed over 2,000 tokens."""
    from toy import small_train_config

    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.sae.trainer import train_sae

    train_sae(acts_ws, small_train_config(steps=60), "sae")
    analyze(acts_ws, AnalyzeConfig("sae", tokens=2000, top_contexts=5))
    return acts_ws
