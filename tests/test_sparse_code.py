"""The sparse training step computes what the dense one does: same losses, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mistudio.core.models.devices import cpu_has_native_bfloat16
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.sparse_code import Pattern, exact_values, select_preacts, sparse_code
from mistudio.core.sae.trainer import TrainConfig, _autocast_dtype


def _dense_reference(x, W_enc, bias, W_dec, mask):
    """ReLU(x W + b) kept at ``mask``, decoded densely; the same outputs as sparse_code."""
    latents = F.relu(torch.addmm(bias, x, W_enc)) * mask
    return latents @ W_dec, latents.sum(0)


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_sparse_code_gradients_equal_the_dense_computation(kind: str) -> None:
    torch.manual_seed(0)
    B, D, F_ = 24, 12, 40
    x = torch.randn(B, D, dtype=torch.float64)
    W_enc = torch.randn(D, F_, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(F_, dtype=torch.float64, requires_grad=True)
    W_dec = torch.randn(F_, D, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        pre = torch.addmm(bias, x, W_enc)
        if kind == "topk":  # some chosen latents are negative: ReLU makes them 0, no gradient
            idx = torch.rand(B, F_).topk(6, dim=-1).indices  # random: some negative
            pattern = Pattern.from_topk(idx, F_)
            mask = torch.zeros(B, F_, dtype=torch.float64).scatter_(-1, idx, 1.0)
        else:
            pattern, _ = Pattern.from_dense(F.relu(pre))
            mask = (pre > 0).double()
    values = exact_values(pattern, x, W_enc, bias)
    target, weight = torch.randn(B, D, dtype=torch.float64), torch.rand(F_, dtype=torch.float64)
    params = [W_enc, bias, W_dec]

    def loss(decoded, colsum):
        return (decoded - target).pow(2).sum() + (colsum * weight).sum()

    sparse = torch.autograd.grad(loss(*sparse_code(x, W_enc, bias, W_dec, pattern, values)),
                                 params)
    dense = torch.autograd.grad(loss(*_dense_reference(x, W_enc, bias, W_dec, mask)), params)
    for a, b in zip(sparse, dense, strict=True):
        torch.testing.assert_close(a, b)
    assert float(values.eq(0).sum()) > 0 or kind == "relu"


def test_topk_chooses_in_bfloat16_but_computes_exact_values() -> None:
    """Choosing latents in bfloat16 may swap near-ties; the values of those chosen are float32
    exactly, so the reconstruction equals a float32 decode of the same latents."""
    torch.manual_seed(1)
    sae = build_sae(SAEConfig("topk", d_in=64, d_sae=256, k=8))
    sae.select_dtype = torch.bfloat16
    x = torch.randn(128, 64)
    out = sae(x)
    pre = sae.pre_acts(x)
    with torch.no_grad():  # the bf16 choice ...
        idx = select_preacts(x, sae.W_enc_DF, sae.encoder_bias(), torch.bfloat16).topk(8).indices
    chosen = torch.zeros_like(pre).scatter_(-1, idx, 1.0)
    exact = torch.where(chosen != 0, F.relu(pre), torch.zeros_like(pre))  # ... float32 values
    torch.testing.assert_close(out.x_hat, sae.decode(exact), atol=1e-5, rtol=1e-5)
    sae.select_dtype = None
    overlap = (sae.activate(pre) != 0) & (chosen != 0)
    assert float(overlap.sum()) / (128 * 8) > 0.95  # near-ties only


def test_auxk_gradients_equal_the_masked_dense_computation() -> None:
    torch.manual_seed(2)
    sae = build_sae(SAEConfig("topk", d_in=16, d_sae=64, k=4))
    x = torch.randn(32, 16)
    dead = torch.rand(64) < 0.3
    params = [sae.W_enc_DF, sae.W_dec_FO, sae.b_enc_F, sae.b_dec_O]
    out = sae(x, dead_F=dead)
    sparse = torch.autograd.grad(out.losses["aux"], params, allow_unused=True)
    residual = x - out.x_hat.detach()
    pre = sae.pre_acts(x)
    k_aux = min(8, int(dead.sum()))
    idx = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
    latents = torch.zeros_like(pre).scatter(-1, idx, F.relu(pre.gather(-1, idx)))
    recon = latents @ sae.W_dec_FO
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    dense = torch.autograd.grad((recon - residual).pow(2).sum(-1).mean() / variance, params,
                                allow_unused=True)
    for a, b in zip(sparse, dense, strict=True):
        if b is None:
            assert a is None or float(a.abs().max()) == 0
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_relu_sparse_step_equals_its_dense_step() -> None:
    """Once latents are sparse, the ReLU SAE switches path: loss terms and gradients agree."""
    torch.manual_seed(3)
    sae = build_sae(SAEConfig("relu", d_in=32, d_sae=128))
    with torch.no_grad():
        sae.b_enc_F -= 0.6  # few latents active
    x = torch.randn(64, 32)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[:5] = True
    params = [sae.W_enc_DF, sae.W_dec_FO, sae.b_enc_F, sae.b_dec_O]
    results = []
    for density in (1.0, 0.0):  # dense path, then sparse path
        sae.density = density
        out = sae(x, dead_F=dead)
        total = out.losses["mse"] + 0.1 * out.losses["l1"] + out.losses["aux"]
        results.append(([out.losses[k].detach() for k in ("mse", "l1", "aux")],
                        torch.autograd.grad(total, params), float(out.l0)))
    (dense_losses, dense_grads, l0_dense), (sparse_losses, sparse_grads, l0_sparse) = results
    assert l0_dense == l0_sparse and l0_dense < 0.2 * 128
    for a, b in zip([*sparse_losses, *sparse_grads], [*dense_losses, *dense_grads], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_mixed_precision_on_the_cpu_only_where_it_is_native() -> None:
    cpu = torch.device("cpu")
    auto = _autocast_dtype(TrainConfig("a"), cpu)
    assert auto == (torch.bfloat16 if cpu_has_native_bfloat16() else None)
    assert _autocast_dtype(TrainConfig("a", mixed_precision="none"), cpu) is None
    assert _autocast_dtype(TrainConfig("a", mixed_precision="float16"), cpu) is None
