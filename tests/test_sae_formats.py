"""Importing SAEs from other tools, and exporting ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mistudio.cli import main
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.formats import import_sae
from mistudio.core.sae.io import load_sae, open_sae, save_sae
from mistudio.core.store.workspace import Workspace

HOOK = "layers.1.resid_post"


def _random(arch: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(arch, d_in=32, d_sae=64, k=4, **kw))  # type: ignore[arg-type]
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return sae.eval().requires_grad_(False)


def _check_same(ws: Workspace, name: str, original: torch.nn.Module) -> None:
    loaded, _ = open_sae(ws, name)
    x = torch.randn(16, 32) * 3
    torch.testing.assert_close(loaded.encode(x), original.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.reconstruct(x), original.reconstruct(x), atol=1e-5, rtol=1e-5)


def test_saelens_roundtrip(toy_ws: Workspace, tmp_path: Path) -> None:
    sae = _random("jumprelu")
    save_sae(tmp_path / "sl", sae, {"model_name": "elsewhere"}, {})
    (tmp_path / "sl" / "mistudio.json").unlink()  # as another tool would write it
    import_sae(toy_ws, tmp_path / "sl", "sl", "toy", HOOK)
    _check_same(toy_ws, "sl", sae)


def test_sparsify_folder(toy_ws: Workspace, tmp_path: Path) -> None:
    sae = _random("topk")
    folder = tmp_path / "sp"
    folder.mkdir()
    save_file({"encoder.weight": sae.W_enc_DF.T.contiguous(), "encoder.bias": sae.b_enc_F,
               "W_dec": sae.W_dec_FO, "b_dec": sae.b_dec_O}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": 64, "d_in": 32}))
    import_sae(toy_ws, folder, "sp", "toy", HOOK)
    _check_same(toy_ws, "sp", sae)


def test_gemma_scope_npz(toy_ws: Workspace, tmp_path: Path) -> None:
    sae = _random("jumprelu", apply_b_dec_to_input=False)
    folder = tmp_path / "gs"
    folder.mkdir()
    np.savez(folder / "params.npz", W_enc=sae.W_enc_DF.numpy(), W_dec=sae.W_dec_FO.numpy(),
             b_enc=sae.b_enc_F.numpy(), b_dec=sae.b_dec_O.numpy(),
             threshold=sae.threshold_F.detach().numpy())
    import_sae(toy_ws, folder, "gs", "toy", HOOK)
    _check_same(toy_ws, "gs", sae)


def test_dictionary_learning_ae_pt(toy_ws: Workspace, tmp_path: Path) -> None:
    sae = _random("relu")
    folder = tmp_path / "dl"
    folder.mkdir()
    torch.save({"encoder.weight": sae.W_enc_DF.T.contiguous(), "encoder.bias": sae.b_enc_F,
                "decoder.weight": sae.W_dec_FO.T.contiguous(), "bias": sae.b_dec_O},
               folder / "ae.pt")
    import_sae(toy_ws, folder, "dl", "toy", HOOK)
    _check_same(toy_ws, "dl", sae)


def test_mismatches_are_refused(toy_ws: Workspace, tmp_path: Path) -> None:
    wide = build_sae(SAEConfig("relu", d_in=48, d_sae=64))
    save_sae(tmp_path / "wide", wide, {}, {})
    with pytest.raises(InvalidInputError,
                       match="48-wide activations but layers.1.resid_post of 'toy' is 32 wide"):
        import_sae(toy_ws, tmp_path / "wide", "w", "toy", HOOK)
    with pytest.raises(InvalidInputError, match="no hook point 'layers.9.resid_post'"):
        import_sae(toy_ws, tmp_path / "wide", "w", "toy", "layers.9.resid_post")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no SAE"):
        import_sae(toy_ws, tmp_path / "empty", "w", "toy", HOOK)
    sae = _random("relu")
    save_sae(tmp_path / "broken", sae, {}, {})
    save_file({"W_enc": sae.W_enc_DF.detach()}, str(tmp_path / "broken" / "sae_weights.safetensors"))
    (tmp_path / "broken" / "mistudio.json").unlink()
    with pytest.raises(Exception, match="no tensor 'b_enc'"):
        load_sae(tmp_path / "broken")
    assert toy_ws.catalog.list("sae") == []


def test_cli_import_and_export(toy_ws: Workspace, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    sae = _random("topk")
    save_sae(tmp_path / "src", sae, {}, {})
    w = ["--workspace", str(toy_ws.root)]
    assert main(["import", str(tmp_path / "src"), "--name", "imp", "--model", "toy", "--hook",
                 HOOK, *w]) == 0
    assert main(["export", "imp", "--out", str(tmp_path / "out"), *w]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"cfg.json", "sae_weights.safetensors"}
    again, _ = load_sae(tmp_path / "out")
    x = torch.randn(4, 32)
    torch.testing.assert_close(again.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
    assert main(["export", "imp", "--out", str(tmp_path / "out"), *w]) == 2
    capsys.readouterr()


@pytest.mark.parametrize(("arch", "skip", "transcoder"), [
    ("relu", "none", False), ("topk", "none", False), ("batchtopk", "none", False),
    ("jumprelu", "none", False), ("relu", "fixed", False), ("topk", "affine", True)])
def test_onnx_export_matches_pytorch(tmp_path: Path, arch: str, skip: str,
                                     transcoder: bool) -> None:
    from mistudio.core.sae.onnx_export import export_onnx, run_onnx

    torch.manual_seed(0)
    sae = build_sae(SAEConfig(arch, d_in=32, d_sae=128, k=6, skip=skip, transcoder=transcoder))
    with torch.no_grad():  # non-trivial biases and thresholds, so every term is exercised
        sae.b_dec_O.normal_()
        sae.b_enc_F.normal_(0, 0.05)
        sae.W_enc_DF.mul_(20)
        if arch == "jumprelu":
            sae.log_threshold_F.fill_(-3.0)
        if arch == "batchtopk":
            sae.threshold.fill_(0.05)
        if skip == "affine":
            sae.W_skip_DO.normal_(0, 0.1)
    sample = np.random.default_rng(1).standard_normal((50, 32)).astype(np.float32) * 3
    result = export_onnx(sae, tmp_path / "onnx", sample)
    assert result.max_abs_diff <= 1e-4 * max(1.0, result.max_abs_value)
    x = np.random.default_rng(2).standard_normal((7, 32)).astype(np.float32)  # another batch size
    latents, recon = run_onnx(result.full, x)
    ref = sae.eval()
    with torch.no_grad():
        np.testing.assert_allclose(latents, ref.encode(torch.from_numpy(x)).numpy(), atol=1e-4)
        np.testing.assert_allclose(recon, ref.reconstruct(torch.from_numpy(x)).numpy(), atol=1e-4)
    active = (latents > 0).sum(1)
    if arch == "topk":
        assert (active <= 6).all() and active.max() > 0
    else:
        assert 0 < active.mean() < 128  # neither dead nor all-on: the gate is being exercised


def test_cli_onnx_export(toy_ws: Workspace, tmp_path: Path) -> None:
    save_sae(tmp_path / "src", _random("topk"), {}, {})
    w = ["--workspace", str(toy_ws.root)]
    assert main(["import", str(tmp_path / "src"), "--name", "imp", "--model", "toy", "--hook",
                 HOOK, *w]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["export", "imp", "--format", "onnx", "--out", str(tmp_path / "empty"), *w]) == 0
    info = json.loads((tmp_path / "empty" / "export.json").read_text())
    assert info["max_abs_diff"] < 1e-4 and info["checked_on"] == "random inputs"
    assert {p.name for p in (tmp_path / "empty").iterdir()} == {"encoder.onnx", "sae.onnx",
                                                               "export.json"}
