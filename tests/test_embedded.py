"""Integration: the real embedded model (SmolLM2-135M-Instruct from its GGUF), offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.data.datasets import ensure_builtin_dataset
from mistudio.core.models import registry as models
from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model, load_model, model_info
from mistudio.core.store.workspace import Workspace

pytestmark = pytest.mark.integration


def test_embedded_model_is_registered_without_loading_it(embedded_ws: Workspace) -> None:
    assert ensure_embedded_model(embedded_ws) == EMBEDDED_NAME
    info = model_info(embedded_ws, EMBEDDED_NAME)
    assert (info.family, info.n_layers, info.d_model, info.vocab_size) == ("LLaMA", 30, 576, 49152)
    assert 130e6 < info.n_params < 140e6
    assert not (embedded_ws.root / "models" / EMBEDDED_NAME / models.CACHE_DIR).exists()


def test_first_load_caches_safetensors_and_later_loads_use_them(
        embedded_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.runtime.tasks import CallbackTask

    ensure_embedded_model(embedded_ws)
    said: list[str] = []
    lm = load_model(embedded_ws, EMBEDDED_NAME, task=CallbackTask(on_status=said.append))
    # the first load's long steps each say what they do
    assert any(s.startswith("Dequantizing ") for s in said), said
    assert any(s.startswith("Writing the dequantized weights (") for s in said), said
    cache = embedded_ws.root / "models" / EMBEDDED_NAME / models.CACHE_DIR
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in lm.tokenizer.decode(out[0])
    # A second load must not touch the GGUF again.
    monkeypatch.setattr(models, "embedded_gguf_path", lambda: None)
    reloaded = load_model(embedded_ws, EMBEDDED_NAME)
    for (name, a), (_, b) in zip(lm.model.state_dict().items(), reloaded.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_extraction_matches_output_hidden_states(embedded_ws: Workspace) -> None:
    from parity import check_parity

    ensure_embedded_model(embedded_ws)
    ensure_builtin_dataset(embedded_ws)
    cfg = ExtractConfig(EMBEDDED_NAME, "pydoc", (3, 15), ("resid_post",), context_length=32,
                        max_tokens=400, dtype="float32", batch_sequences=4)
    extract_activations(embedded_ws, cfg, "check")
    assert check_parity(embedded_ws, "check", EMBEDDED_NAME, (3, 15), sum_check=False) == 400


def test_quickstart_headless_runs_offline(embedded_ws: Workspace) -> None:
    ensure_embedded_model(embedded_ws)  # share the dequantized cache with the tests above
    cmd = [sys.executable, "-m", "mistudio", "quickstart", "--headless", "--max-tokens", "1500",
           "--train-steps", "30", "--batch-size", "256", "--workspace", str(embedded_ws.root),
           "--json"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(embedded_ws.root.parent)}  # no HF_* variables
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    acts = report["activations"]
    assert (acts["layer"], acts["hook"], acts["tokens"], acts["d_model"]) == (15, "resid_post",
                                                                              1500, 576)
    sae = report["sae"]
    assert (sae["architecture"], sae["d_in"], sae["d_sae"], sae["steps"]) == ("topk", 576, 4608, 30)
    assert sae["explained_variance"] > 0.2 and sae["l0"] <= 32
    assert 0.0 < sae["ce_loss_score"] <= 1.05 and sae["kl_div"] > 0  # noise can pass 1
    feats = report["features"]
    assert feats["n_tokens"] <= 1500 and feats["alive"] > 100 and feats["labelled"] > 50
    assert all(0 <= b["score"] <= 1 and b["label"] for b in feats["best"])
    steer = report["steering"]
    assert steer["label"] and 0 <= steer["feature"] < 4608
    assert steer["plain"] and steer["steered"] and steer["kl_mean"] > 0
    fluent = [r for r in steer["sweep"] if r["perplexity_ratio"] <= 2 and r["concept_change"] > 0]
    if fluent:  # the demonstration is the sweep's strongest fluent push
        top = max(fluent, key=lambda r: r["concept_change"])
        assert (steer["feature"], steer["coefficient_x_max"]) == (top["feature"],
                                                                  top["coefficient_x_max"])
    assert len(steer["sweep"]) % 4 == 0 and steer["sweep"]
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=600).stdout)
    assert again["activations"]["reused"] is True and again["sae"]["reused"] is True
    assert again["features"]["reused"] is True


def test_quickstart_sae_improves_on_zero_ablation(embedded_ws: Workspace) -> None:
    from mistudio.core.sae.evaluation import evaluate_in_model

    if embedded_ws.catalog.find("sae", "quickstart-topk") is None:
        pytest.skip("needs test_quickstart_headless_runs_offline")
    r = evaluate_in_model(embedded_ws, "quickstart-topk", n_sequences=8)
    assert r.ce_loss_zero > r.ce_loss_clean
    assert 0.0 < r.ce_loss_score <= 1.05 and r.kl_div > 0  # noise can pass 1


def test_self_test_passes_offline(tmp_path: Path) -> None:
    """`mistudio --self-test`, as the bundle's build script runs it: no HF variables, no cache."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-m", "mistudio", "--self-test", "--json"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    steps = report["steps"]
    assert report["ok"] and list(steps) == ["model", "load", "dataset", "tokenize", "extract",
                                            "train", "evaluate", "analyze", "label", "steer",
                                            "window"]
    assert steps["extract"]["tokens"] == 2048 and steps["train"]["l0"] <= 16
    assert steps["label"]["labelled"] > 0 and steps["steer"]["tokens"] > 0
    assert steps["evaluate"]["kl_div"] > 0  # the SAE spliced in, in a spawned process
    assert steps["window"]["tabs"] == 5
    assert not Path(report["workspace"]).exists()  # the temporary workspace is gone
