"""SAE architectures, the trainer (resume, cancel, bad data) and the saved format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy import small_train_config as small

from mistudio.core.runtime.errors import Cancelled, CorruptedError, InvalidInputError
from mistudio.core.runtime.tasks import CallbackTask, CancelToken
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.checkpoints import METRICS
from mistudio.core.sae.io import CFG_FILE, WEIGHTS_FILE, load_sae, open_sae
from mistudio.core.sae.trainer import train_sae
from mistudio.core.store.workspace import Workspace

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("skip", ["none", "affine"])
def test_each_architecture_forward_and_backward(arch: str, skip: str) -> None:
    sae = build_sae(SAEConfig(arch, d_in=16, d_sae=64, k=4, skip=skip))
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:8] = True
    out = sae(x, dead_F=dead)
    assert out.x_hat.shape == (32, 16) and out.fires_F.shape == (64,)
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for n, p in sae.named_parameters() if n != "log_threshold_F"
               or arch == "jumprelu")
    if arch in ("topk", "batchtopk"):
        assert "aux" in out.losses and float(out.l0) <= 4 + 1e-6
    assert sae.encode(x).shape == (32, 64)


def test_topk_sparse_gradients_equal_the_dense_computation() -> None:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig("topk", d_in=16, d_sae=64, k=4))
    x = torch.randn(32, 16)
    params = [sae.W_enc_DF, sae.W_dec_FO, sae.b_dec_O, sae.b_enc_F]
    sparse = torch.autograd.grad(sae(x).losses["mse"], params)
    latents = sae.activate(sae.pre_acts(x))  # dense reference: scatter, matmuls
    dense = torch.autograd.grad((sae.decode(latents) - x).pow(2).sum(-1).mean() / 16, params)
    for a, b in zip(sparse, dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_topk_sparse_decode_matches_dense() -> None:
    sae = build_sae(SAEConfig("topk", d_in=16, d_sae=64, k=5))
    x = torch.randn(8, 16)
    dense = sae.decode(sae.encode(x))
    torch.testing.assert_close(sae(x).x_hat, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_improves_and_saves_in_saelens_layout(acts_ws: Workspace, arch: str) -> None:
    m = train_sae(acts_ws, small(architecture=arch, hook="layers.1.resid_post"), f"s-{arch}")
    folder = acts_ws.root / "saes" / f"s-{arch}"
    cfg = json.loads((folder / CFG_FILE).read_text())
    assert cfg["d_in"] == 32 and cfg["d_sae"] == 128 and "metadata" in cfg
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    rows = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert rows[-1]["mse"] < rows[0]["mse"]
    assert m.summary.explained_variance > 0.3
    assert not (folder / "checkpoint.pt").exists()
    assert acts_ws.catalog.get("sae", f"s-{arch}").status == "complete"


def test_training_density_histogram_is_per_token(acts_ws: Workspace) -> None:
    """The dashboard's density plot: the share of training tokens each latent fired on (as
    SAELens plots it), not the share of batches. TopK with k=8 of 128 latents fires on 1/16 of
    tokens on average; counted per batch nearly every latent sat at log10 = 0."""
    train_sae(acts_ws, small(architecture="topk", hook="layers.1.resid_post",
                             histogram_every=10), "dens")
    rows = [json.loads(line) for line in
            (acts_ws.root / "saes" / "dens" / METRICS).read_text().splitlines()]
    hist = [r["density_histogram"] for r in rows if "density_histogram" in r][-1]
    counts, edges = np.array(hist["counts"]), np.array(hist["edges"])
    assert counts.sum() == 128
    centers = (edges[:-1] + edges[1:]) / 2
    # the densities sum to k: sum over latents of 10^log10 ~ 8 (bins blur it a little)
    assert 5 < float((counts * 10.0 ** centers).sum()) < 12
    assert counts[-1] < 64  # not piled up in the top bin


def test_saved_weights_work_on_raw_activations(acts_ws: Workspace) -> None:
    """Normalisation is folded in: the loaded SAE reproduces the training-space reconstruction."""
    from mistudio.core.activations.store import open_activations

    train_sae(acts_ws, small(skip="learned"), "s")
    sae, _ = open_sae(acts_ws, "s")
    acts = open_activations(acts_ws, "acts")
    x = torch.from_numpy(acts.rows("layers.1.resid_post", 0, 512))
    fvu = float((sae.reconstruct(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    summary = acts_ws.catalog.get("sae", "s").summary
    assert fvu == pytest.approx(1 - summary.explained_variance, abs=0.05)


def test_transcoder_maps_mlp_in_to_mlp_out(acts_ws: Workspace) -> None:
    m = train_sae(acts_ws, small(hook="layers.1.mlp_in", target_hook="layers.1.mlp_out",
                                 architecture="topk"), "tc")
    cfg = json.loads((acts_ws.root / "saes" / "tc" / CFG_FILE).read_text())
    assert cfg["architecture"] == "topk_transcoder" and cfg["d_out"] == 32
    assert cfg["apply_b_dec_to_input"] is False
    assert m.summary.target_hook == "layers.1.mlp_out"


def _stop_at(step: int) -> CallbackTask:
    token = CancelToken()
    return CallbackTask(on_partial=lambda row: token.cancel() if row["step"] >= step else None,
                        cancel=token)


def test_resume_after_cancel_gives_the_same_run(acts_ws: Workspace) -> None:
    cfg = small(steps=40, checkpoint_every=10)
    with pytest.raises(Cancelled):
        train_sae(acts_ws, cfg, "r", _stop_at(25))
    assert acts_ws.catalog.get("sae", "r").status == "partial"
    with pytest.raises(InvalidInputError, match="has not finished training"):
        open_sae(acts_ws, "r")
    with pytest.raises(InvalidInputError, match="different settings"):
        train_sae(acts_ws, small(steps=50), "r")
    train_sae(acts_ws, cfg, "r")
    train_sae(acts_ws, cfg, "whole")
    a = (acts_ws.root / "saes" / "r" / METRICS).read_text().splitlines()
    b = (acts_ws.root / "saes" / "whole" / METRICS).read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k not in ("tokens_per_s",)}
             for line in a]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                     for line in b]
    wa, _ = open_sae(acts_ws, "r")
    wb, _ = open_sae(acts_ws, "whole")
    for (n, p), (_, q) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert torch.equal(p, q), n


def test_nan_activations_stop_training_with_the_rows(acts_ws: Workspace) -> None:
    chunk = acts_ws.root / "activations" / "acts" / "layers.1.resid_post" / "chunk_00000.npy"
    arr = np.load(chunk)
    arr[7, 3] = np.nan
    np.save(chunk, arr)
    with pytest.raises(InvalidInputError, match=r"NaN or Inf .*rows 7\b"):
        train_sae(acts_ws, small(), "nan")
    assert not (acts_ws.root / "saes" / "nan").exists()
    assert not (acts_ws.root / "saes" / ".nan.partial").exists()  # nothing left to resume


def test_bad_configs_and_files(acts_ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="no hook point 'layers.9.resid_post'"):
        train_sae(acts_ws, small(hook="layers.9.resid_post"), "x")
    with pytest.raises(InvalidInputError, match="k = 999 must be between"):
        train_sae(acts_ws, small(k=999), "x")
    with pytest.raises(InvalidInputError, match="fewer than one batch"):
        train_sae(acts_ws, small(batch_size=100_000), "x")
    with pytest.raises(InvalidInputError, match="Unknown SAE configuration fields: colour"):
        SAEConfig.from_dict({"architecture": "topk", "colour": "red"})
    train_sae(acts_ws, small(steps=10), "ok")
    folder = acts_ws.root / "saes" / "ok"
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CorruptedError, match="cannot be read"):
        load_sae(folder)


def test_out_of_memory_keeps_the_run_and_resumes_with_smaller_batches(
        acts_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.runtime.errors import ResourceError
    from mistudio.core.sae.topk import TopKSAE

    real_forward = TopKSAE.forward
    calls = {"n": 0}

    def failing_forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 13:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(TopKSAE, "forward", failing_forward)
    with pytest.raises(ResourceError, match=r"Out of memory at step 12 .* saved at step 12") as err:
        train_sae(acts_ws, small(steps=20), "oom")
    assert [(s.name, s.value) for s in err.value.settings] == [
        ("batch_size", "128"), ("grad_accumulation", "2")]
    monkeypatch.setattr(TopKSAE, "forward", real_forward)
    assert acts_ws.catalog.get("sae", "oom").status == "partial"
    m = train_sae(acts_ws, small(steps=20, batch_size=128, grad_accumulation=2), "oom")
    assert m.summary.steps == 20 and m.summary.tokens == 20 * 256
    rows = [json.loads(x) for x in (acts_ws.root / "saes" / "oom" / METRICS).read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]


def test_resampling_revives_dead_latents() -> None:
    from mistudio.core.sae.optim import SAEOptimizer
    from mistudio.core.sae.resample import resample_dead

    torch.manual_seed(0)
    sae = build_sae(SAEConfig("relu", d_in=16, d_sae=64))
    opt = SAEOptimizer("adam", list(sae.parameters()), 1e-3, 0, 10, 0.1)
    x = torch.randn(256, 16)
    sum(sae(x).losses.values()).backward()
    opt.step()
    with torch.no_grad():
        sae.b_enc_F[:20] = -1e3  # kill 20 latents
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:20] = True
    assert not bool((sae.encode(x)[:, :20] > 0).any())
    assert resample_dead(sae, opt, dead, x, x, seed=0) == 20
    fires = (sae.encode(x)[:, :20] > 0).any(0)
    assert bool(fires.all())
    alive_norm = sae.W_dec_FO[20:].norm(dim=-1).mean()
    torch.testing.assert_close(sae.W_dec_FO[:20].norm(dim=-1), alive_norm.expand(20))
    assert float(opt.opt.state[sae.W_dec_FO]["exp_avg"][:20].abs().sum()) == 0.0


def test_training_with_resampling(acts_ws: Workspace) -> None:
    events: list[dict] = []
    m = train_sae(acts_ws, small(architecture="relu", resample_dead_every=10, dead_after_tokens=256,
                                 steps=40, sparsity_coefficient=5.0), "rs",
                  CallbackTask(on_partial=events.append))
    assert m.summary.steps == 40
    revived = [e for e in events if e.get("event") == "resampled"]
    assert revived and all(e["latents"] > 0 for e in revived)  # a strong L1 kills latents
