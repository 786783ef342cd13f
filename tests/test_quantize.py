"""Weight-only int8 / int4 quantization while loading, truncated loading, and their provenance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from toy import FAMILIES, VOCAB
from transformers import AutoConfig, AutoModelForCausalLM

from mistudio.core.models.adapters import hook_key
from mistudio.core.models.hooks import capture, forward
from mistudio.core.models.quantize import (
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    load_quantized,
    use_cpu_kernels,
)
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.store.workspace import Workspace


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=-1).min())


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_quantized_linear_layers(cls: type) -> None:
    torch.manual_seed(0)
    ref = torch.nn.Linear(128, 48)
    q = cls(128, 48, bias=True)
    q.load(ref.weight.data)
    q.bias = torch.nn.Parameter(ref.bias.data.clone(), requires_grad=False)
    xs = [torch.randn(rows, 128) for rows in (1, 40, 100)]  # int8: kernel, kernel, expanded
    with torch.no_grad():
        outs, refs = [q(x) for x in xs], [ref(x) for x in xs]
    for y, r in zip(outs, refs, strict=True):
        assert _cos(y, r) > (0.9999 if cls is Int8Linear else 0.99)
    weight_bytes = sum(b.numel() * b.element_size() for b in q.buffers())
    assert weight_bytes < 128 * 48 * 4 * (0.27 if cls is Int8Linear else 0.16)
    if cls is Int4Linear and q.use_cpu_kernel():  # the same 4-bit weights, in the kernel's layout
        with torch.no_grad():
            for x, y in zip(xs, outs, strict=True):
                assert (q(x) - y).norm() / y.norm() < 0.01  # bfloat16 inputs: 0.3% here
        assert q.packed is None and sum(b.numel() * b.element_size() for b in q.buffers()) \
            <= weight_bytes * 1.3


def test_int8_embedding_and_its_tied_head() -> None:
    torch.manual_seed(0)
    w = torch.randn(50, 16)
    emb = Int8Embedding(50, 16, None, torch.float32)
    emb.load(w)
    ids = torch.tensor([[3, 7, 49]])
    assert _cos(emb(ids)[0], w[ids[0]]) > 0.9999
    head = emb.as_head()
    assert head.weight_q is emb.weight_q  # one copy of the rows
    x = torch.randn(2, 16)
    assert _cos(head(x), x @ w.T) > 0.9999


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_loading_of_every_family(family: str, mode: str,
                                           toy_folder: Callable[[str], Path]) -> None:
    folder = toy_folder(family)
    ref = AutoModelForCausalLM.from_pretrained(folder).eval()
    q = load_quantized(folder, AutoConfig.from_pretrained(folder), mode)
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ref(input_ids=ids, output_hidden_states=True).hidden_states
        b = q(input_ids=ids, output_hidden_states=True).hidden_states
    assert _cos(b[2], a[2]) > (0.999 if mode == "int8" else 0.95)
    assert any(isinstance(m, Int8Linear | Int4Linear) for m in q.modules())
    if mode == "int4" and use_cpu_kernels(q):  # what load_model does on a CPU: same model
        with torch.no_grad():
            c = q(input_ids=ids, output_hidden_states=True).hidden_states
        assert _cos(c[2], b[2]) > 0.999


def test_layers_past_the_last_needed_are_never_read(toy_folder: Callable[[str], Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors

    read: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *a: object, **k: object) -> None:
            self.fh = real(*a, **k)

        def __enter__(self) -> Spy:
            self.inner = self.fh.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.__exit__(*exc)

        def keys(self) -> list[str]:
            return self.inner.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    folder = toy_folder("llama")
    q = load_quantized(folder, AutoConfig.from_pretrained(folder), "int8", n_layers=2)
    assert len(q.model.layers) == 2
    assert any(".layers.1." in k for k in read) and not any(".layers.2." in k for k in read)


def test_hooks_and_extraction_on_a_quantized_model(toy_ws: Workspace) -> None:
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations
    from mistudio.core.activations.store import open_activations
    from mistudio.core.models.registry import load_model
    from mistudio.core.sae.trainer import TrainConfig, train_sae

    lm = load_model(toy_ws, "toy", "cpu", quantize="int8")
    assert lm.quantization == "int8"
    ids = torch.randint(3, VOCAB, (1, 10))
    with torch.no_grad(), capture(lm, [(1, "resid_post"), (1, "attn_z"), (1, "mlp_in")]) as got:
        forward(lm, ids, torch.ones_like(ids))
    assert got[hook_key(1, "attn_z")].shape[-1] == 32 and got[hook_key(1, "mlp_in")].shape[-1] == 32
    m = extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (1,), max_tokens=2000,
                                                  quantize="int8"), "q8")
    assert m.provenance.quantization == "int8"
    assert open_activations(toy_ws, "q8").manifest.config["quantize"] == "int8"
    sae = train_sae(toy_ws, TrainConfig("q8", steps=5, batch_size=128, expansion=2, k=4,
                                        eval_tokens=256), "sae-q8")
    assert sae.provenance.model_quantization == "int8"
    with pytest.raises(InvalidInputError, match="bitsandbytes, which needs a CUDA GPU"):
        load_model(toy_ws, "toy", "cpu", quantize="nf4")
    with pytest.raises(InvalidInputError, match="Unknown quantization"):
        ExtractConfig("toy", "pydoc", (1,), quantize="int3")


def test_onnx_int8_export_reports_its_error(acts_ws: Workspace, tmp_path: Path) -> None:
    from toy import small_train_config

    from mistudio.core.sae.formats import export_sae
    from mistudio.core.sae.trainer import train_sae

    train_sae(acts_ws, small_train_config(steps=20), "sae")
    info = export_sae(acts_ws, "sae", tmp_path / "out", "onnx", "int8")
    q = info["int8"]
    assert {"encoder.int8.onnx", "sae.int8.onnx"} <= {p.name for p in (tmp_path / "out").iterdir()}
    assert q["bytes_int8"] < q["bytes_float"] and 0 <= q["relative_error"] < 0.5
    assert q["encoder_matches_full_graph"] and 0 < q["active_latents_jaccard"] <= 1
    with pytest.raises(InvalidInputError, match="format onnx with quantize int8"):
        export_sae(acts_ws, "sae", tmp_path / "other", "saelens", "int8")


def test_gpu_benchmark_says_when_there_is_no_gpu() -> None:
    import json
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the benchmark would run")
    res = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" /
                                              "gpu.py")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout)["cuda"] is False


def test_memory_plan_recommends_what_fits() -> None:
    from mistudio.core.models.registry import ModelInfo
    from mistudio.core.workflows.planner import plan_memory, plan_text, refuse_if_nothing_fits

    info = ModelInfo("LLaMA", "llama", 16, 2048, 8192, 128256, 1_235_814_400, 4096, d_attn=2048)
    cpu = torch.device("cpu")
    roomy = plan_memory(info, cpu, free=32 * 2**30)
    assert roomy.recommended == "float32" and all(r.fits for r in roomy.rows)
    by = {r.option: r for r in roomy.rows}
    assert by["int8"].weights < 0.3 * by["float32"].weights < by["bfloat16"].weights
    tight = plan_memory(info, cpu, free=5 * 2**30)  # SAE training of 16k latents: ~1.9 GB
    assert tight.recommended == "int8" and "Recommended: int8" in plan_text(tight)
    from mistudio.core.runtime.errors import ResourceError

    with pytest.raises(ResourceError, match="does not fit on cpu in any precision.*int4"):
        refuse_if_nothing_fits(plan_memory(info, cpu, free=2 * 2**30), "Llama-1B")
