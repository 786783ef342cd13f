"""Published SAEs: hook points read from the files, the release registry, and `saes pull`
through a fake Hugging Face cache (no network in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.formats import import_sae, read_foreign
from mistudio.core.sae.hooknames import match_model, read_hook, to_hook_key
from mistudio.core.sae.io import open_sae, save_sae
from mistudio.core.sae.releases import find_sae, list_saes, pull_sae, releases
from mistudio.core.store.workspace import Workspace


@pytest.mark.parametrize(("name", "key"), [
    ("blocks.15.hook_resid_post", "layers.15.resid_post"),
    ("blocks.0.hook_resid_pre", "layers.0.resid_pre"),
    ("blocks.3.hook_mlp_out", "layers.3.mlp_out"),
    ("blocks.3.hook_attn_out", "layers.3.attn_out"),
    ("blocks.7.ln2.hook_normalized", "layers.7.mlp_in"),
    ("blocks.7.attn.hook_z", "layers.7.attn_z"),
    ("layers.6", "layers.6.resid_post"), ("layers.6.mlp", "layers.6.mlp_out"),
    ("model.layers.6.self_attn", "layers.6.attn_out"), ("gpt_neox.layers.2", "layers.2.resid_post"),
    ("layers.15.resid_post", "layers.15.resid_post"),
    ("blocks.4.hook_resid_mid", None), ("embed", None),
])
def test_foreign_hook_names(name: str, key: str | None) -> None:
    assert to_hook_key(name) == key


def test_gemma_scope_folder_names(tmp_path: Path) -> None:
    base = tmp_path / "models--google--gemma-scope-2b-pt-att" / "snapshots" / "abc"
    found = read_hook(base / "layer_12" / "width_16k" / "average_l0_85", "gemmascope")
    assert found.hook == "layers.12.attn_z" and found.model == "gemma-2-2b"
    found = read_hook(tmp_path / "gemma-scope-2b-pt-res" / "layer_5" / "width_65k" /
                      "average_l0_29", "gemmascope")
    assert found.hook == "layers.5.resid_post"
    assert read_hook(tmp_path / "something" / "layer_5", "gemmascope").hook is None


def _saelens_folder(folder: Path, d_in: int, hook_name: str, model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig("relu", d_in=d_in, d_sae=64))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_sae(folder, sae, {"model_name": model, "hook_name": hook_name}, {})
    (folder / "mistudio.json").unlink()  # as SAELens writes it
    return sae.eval()


def test_import_reads_the_hook_and_model_from_the_files(toy_ws: Workspace,
                                                        tmp_path: Path) -> None:
    _saelens_folder(tmp_path / "sl", 32, "blocks.1.hook_resid_post", "toy")
    m = import_sae(toy_ws, tmp_path / "sl", "from-files")
    assert m.summary.hook == "layers.1.resid_post" and m.provenance.model == "toy"
    meta = json.loads((toy_ws.artifact_path("sae", "from-files") / "cfg.json").read_text())
    assert meta["metadata"]["hook_name_in_files"] == "blocks.1.hook_resid_post"
    # --hook only overrides; the width is still checked against the model
    m = import_sae(toy_ws, tmp_path / "sl", "override", hook="layers.2.resid_post")
    assert m.summary.hook == "layers.2.resid_post"
    _saelens_folder(tmp_path / "other", 32, "blocks.1.hook_resid_post", "gemma-2-2b")
    with pytest.raises(InvalidInputError, match="its files name 'gemma-2-2b'.*registered: "):
        import_sae(toy_ws, tmp_path / "other", "x")
    _saelens_folder(tmp_path / "nohook", 32, "", "toy")
    with pytest.raises(InvalidInputError, match="do not say which hook point"):
        import_sae(toy_ws, tmp_path / "nohook", "y")
    _saelens_folder(tmp_path / "mid", 32, "blocks.1.hook_resid_post", "toy")
    with pytest.raises(InvalidInputError, match="no hook point 'layers.7.resid_post'"):
        import_sae(toy_ws, tmp_path / "mid", "z", hook="layers.7.resid_post")


def test_llama_scope_checkpoint_folds_into_a_plain_jumprelu(tmp_path: Path) -> None:
    """Llama Scope's hyperparams (dataset-wise norm, decoder norm inside the sparsity, no
    decoder-bias subtraction) folded into weights give the checkpoint's own computation."""
    d, f = 32, 96
    g = torch.Generator().manual_seed(0)
    W_enc, b_enc = torch.randn(f, d, generator=g), torch.randn(f, generator=g) * 0.1
    W_dec, b_dec = torch.randn(d, f, generator=g) * 0.3, torch.randn(d, generator=g)
    hp = {"d_model": d, "d_sae": f, "hook_point_in": "blocks.5.hook_resid_post",
          "hook_point_out": "blocks.5.hook_resid_post", "act_fn": "jumprelu",
          "jump_relu_threshold": 0.8, "norm_activation": "dataset-wise",
          "dataset_average_activation_norm": {"in": 12.5, "out": 12.5},
          "apply_decoder_bias_to_pre_encoder": False, "sparsity_include_decoder_norm": True}
    folder = tmp_path / "Llama3_1-8B-Base-L5R-8x"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    save_file({"encoder.weight": W_enc, "encoder.bias": b_enc, "decoder.weight": W_dec,
               "decoder.bias": b_dec}, str(folder / "checkpoints" / "final.safetensors"))
    sae, _, fmt, found = read_foreign(folder)
    assert fmt == "llamascope" and found.hook == "layers.5.resid_post"
    x = torch.randn(20, d, generator=g) * 12.5 / d ** 0.5 * 3
    # the checkpoint's computation, written out as its hyperparams describe it
    norm = W_dec.norm(dim=0)
    xn = x * d ** 0.5 / 12.5
    pre = (xn @ W_enc.T + b_enc) * norm
    acts = pre * (pre > 0.8)
    recon = ((acts @ (W_dec / norm).T) + b_dec) * 12.5 / d ** 0.5
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), acts, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(sae.reconstruct(x), recon, atol=1e-4, rtol=1e-4)
    assert 0 < (acts > 0).float().mean() < 0.9  # the threshold is exercised


def test_registry_covers_the_anchor_releases() -> None:
    names = {r["release"] for r in releases()}
    assert {"gemma-scope-2b-pt-res", "gemma-scope-2b-pt-mlp", "gemma-scope-2b-pt-att",
            "llama_scope_lxr_8x", "gpt2-small-res-jb", "pythia-70m-deduped-res-sm"} <= names
    s = find_sae("gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")
    assert s.hook == "layers.12.resid_post" and s.d_sae == 16384 and s.l0 == 82
    assert find_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre").l0 == 60.0
    assert len(list_saes(model="gemma-2-2b", search="layer_12 width_16k")) == 15  # res+mlp+att
    assert all(s.repo_id.startswith("fnlp/") for s in list_saes(release="llama_scope_lxr_8x"))
    with pytest.raises(NotFoundError, match="no SAE 'layer_12/width_16k/x'.*layer_12/width_16k"):
        find_sae("gemma-scope-2b-pt-res", "layer_12/width_16k/x")
    with pytest.raises(NotFoundError, match="no published release 'nope'"):
        find_sae("nope", "x")


def _fake_hub(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """A Hugging Face cache as huggingface_hub lays it out, with one snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for rel, data in files.items():
        path = repo / "snapshots" / commit / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def pythia_ws(ws: Workspace, toy_folder: Callable[[str], Path], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, Path, torch.nn.Module]:
    """A workspace with a tiny GPT-NeoX registered as 'pythia-70m-deduped', and a fake hub
    cache holding layer 2 of the pythia-70m-deduped-res-sm release (at the toy's width)."""
    import huggingface_hub.constants as hf_constants

    from mistudio.core.models.registry import add_model

    add_model(ws, "pythia-70m-deduped", str(toy_folder("gpt_neox")))
    src = tmp_path / "src"
    sae = _saelens_folder(src, 32, "blocks.2.hook_resid_post", "pythia-70m-deduped")
    cache = tmp_path / "hub"
    _fake_hub(cache, "ctigges/pythia-70m-deduped__res-sm_processed",
              {f"2-res-sm/{f}": (src / f).read_bytes()
               for f in ("cfg.json", "sae_weights.safetensors")})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return ws, cache, sae


def test_pull_from_the_cache_offline(pythia_ws: tuple[Workspace, Path, torch.nn.Module]) -> None:
    ws, _, sae = pythia_ws
    m = pull_sae(ws, "pythia-70m-deduped-res-sm", "blocks.2.hook_resid_post")
    assert m.name == "pythia-70m-deduped-res-sm.blocks.2.hook_resid_post"
    assert m.summary.hook == "layers.2.resid_post"
    assert m.provenance.model == "pythia-70m-deduped"
    loaded, _ = open_sae(ws, m.name)
    x = torch.randn(8, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(x), sae.reconstruct(x), atol=1e-5,
                                   rtol=1e-5)
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache.*online"):
        pull_sae(ws, "pythia-70m-deduped-res-sm", "blocks.3.hook_resid_post")
    with pytest.raises(InvalidInputError, match="already exists"):
        pull_sae(ws, "pythia-70m-deduped-res-sm", "blocks.2.hook_resid_post")


def test_pull_refuses_without_the_model(ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match=r"trained on google/gemma-2-2b.*Register the "
                       r"model first \(source hf:google/gemma-2-2b, online"):
        pull_sae(ws, "gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")
    assert match_model(ws, "google/gemma-2-2b") is None


def test_cli_releases_and_pull(pythia_ws: tuple[Workspace, Path, torch.nn.Module]) -> None:
    ws, cache, _ = pythia_ws
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mistudio", *args, "--workspace",
                               str(ws.root)], capture_output=True, text=True, env=env,
                              timeout=300)

    listing = cli("saes", "releases", "--model", "pythia")
    assert listing.returncode == 0 and "pythia-70m-deduped-res-sm" in listing.stdout
    res = cli("saes", "pull", "pythia-70m-deduped-res-sm", "blocks.2.hook_resid_post",
              "--name", "p2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["summary"]["hook"] == "layers.2.resid_post"
    res = cli("saes", "pull", "pythia-70m-deduped-res-sm", "blocks.4.hook_resid_post")
    assert res.returncode == 2 and "--online" in res.stderr and "Traceback" not in res.stderr


def test_gemma_scope_attention_reads_attn_z(ws: Workspace, toy_folder: Callable[[str], Path],
                                            tmp_path: Path) -> None:
    """An attention SAE of heads before the output projection imports at attn_z."""
    from mistudio.core.models.registry import add_model

    add_model(ws, "gemma-2-2b", str(toy_folder("gemma2")))  # a toy registered under that name
    d_attn = 32  # 4 heads x head_dim 8
    sae = build_sae(SAEConfig("jumprelu", d_in=d_attn, d_sae=64, apply_b_dec_to_input=False))
    folder = tmp_path / "gemma-scope-2b-pt-att" / "layer_1" / "width_16k" / "average_l0_30"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", W_enc=sae.W_enc_DF.detach().numpy(),
             W_dec=sae.W_dec_FO.detach().numpy(), b_enc=sae.b_enc_F.detach().numpy(),
             b_dec=sae.b_dec_O.detach().numpy(), threshold=sae.threshold_F.detach().numpy())
    m = import_sae(ws, folder, "att")
    assert m.summary.hook == "layers.1.attn_z" and m.provenance.model == "gemma-2-2b"


def test_pretrained_dialog_searches_and_pulls(qtbot: Any, pythia_ws: tuple[Workspace, Path, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.gui.pretrained_dialog import PretrainedDialog

    ws, cache, _ = pythia_ws
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # the pull runs in a child process
    dialog = PretrainedDialog(ws)
    qtbot.addWidget(dialog)
    assert dialog.model.rowCount() == len(list_saes())
    dialog.model_filter.setCurrentIndex(dialog.model_filter.findData(
        "EleutherAI/pythia-70m-deduped"))
    dialog.search.setText("res blocks.2")
    assert [r[1] for r in dialog.model.rows] == ["blocks.2.hook_resid_post"]
    dialog.table.selectRow(0)
    with qtbot.waitSignal(dialog.pulled, timeout=120_000) as pulled:
        dialog.pull()
    assert pulled.args == ["pythia-70m-deduped-res-sm.blocks.2.hook_resid_post"]
    assert ws.catalog.find("sae", pulled.args[0]) is not None
    assert "Added SAE" in dialog.status.text()
    dialog.search.setText("blocks.5")  # not in the cache, offline: one clear line
    dialog.table.selectRow(0)
    monkeypatch.setattr("mistudio.gui.pretrained_dialog.show_error", lambda *a, **k: None)
    with qtbot.waitSignal(dialog.runner.failed, timeout=120_000):
        dialog.pull()
    assert "not in the local Hugging Face cache" in dialog.status.text()
