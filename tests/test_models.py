"""The model registry: sources, info, loading options and refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from toy import FAMILIES

from mistudio.core.models.devices import resolve_device, resolve_dtype
from mistudio.core.models.registry import add_model, load_model, model_info, remove_model
from mistudio.core.runtime.errors import InvalidInputError, NotFoundError, ResourceError
from mistudio.core.store.workspace import Workspace


@pytest.mark.parametrize("family", FAMILIES)
def test_register_and_load_each_family(ws: Workspace, toy_folder: Callable[[str], Path],
                                       family: str) -> None:
    m = add_model(ws, "m", str(toy_folder(family)))
    assert m.provenance.type == "folder" and m.config["trust_remote_code"] is False
    info = model_info(ws, "m")
    assert (info.n_layers, info.d_model) == (3, 32)
    lm = load_model(ws, "m")
    assert lm.device.type == "cpu" and lm.dtype == torch.float32 and not lm.model.training
    assert len(lm.layers) == 3 and lm.tokenizer.pad_token_id is not None


def test_load_in_half_precision(toy_ws: Workspace) -> None:
    assert load_model(toy_ws, "toy", dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="Unknown dtype 'int3'"):
        load_model(toy_ws, "toy", dtype="int3")


def test_device_and_dtype_auto_on_this_machine() -> None:
    dev = resolve_device("auto")
    assert dev.type in ("cuda", "mps", "cpu")
    if dev.type == "cpu":
        assert resolve_dtype("auto", dev) == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA was requested"):
            resolve_device("cuda")


def test_too_large_for_memory_is_refused(toy_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.models import devices

    monkeypatch.setattr(devices, "available_memory", lambda device: 10 * 2**20)
    with pytest.raises(ResourceError, match=r"Model 'toy' needs about 256\.\d MB .* 10\.0 MB is free"):
        load_model(toy_ws, "toy")


def test_bad_sources(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        add_model(ws, "x", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="has no config.json"):
        add_model(ws, "x", str(tmp_path / "empty"))
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="not a model folder or a .gguf file"):
        add_model(ws, "x", str(tmp_path / "f.bin"))
    with pytest.raises(NotFoundError, match="not in the local cache.*online"):
        add_model(ws, "x", "hf:someone/not-cached-model")
    assert ws.catalog.list("model") == []


def test_unsupported_architecture_names_the_supported_ones(ws: Workspace, tmp_path: Path) -> None:
    import transformers as T

    T.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32).save_pretrained(tmp_path / "bert")
    with pytest.raises(InvalidInputError, match="'bert' is not supported.*LLaMA"):
        add_model(ws, "bert", str(tmp_path / "bert"))


def test_names_and_removal(ws: Workspace, toy_folder: Callable[[str], Path]) -> None:
    add_model(ws, "m", str(toy_folder("gpt2")))
    with pytest.raises(InvalidInputError, match="already exists"):
        add_model(ws, "m", str(toy_folder("gpt2")))
    remove_model(ws, "m")
    assert ws.catalog.find("model", "m") is None and not (ws.root / "models" / "m").exists()
    with pytest.raises(NotFoundError):
        remove_model(ws, "m")
