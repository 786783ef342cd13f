"""Splicing an SAE into the model: CE loss score and KL at known extremes, and `mistudio eval`."""

from __future__ import annotations

import pytest
import torch

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.evaluation import evaluate_in_model
from mistudio.core.sae.splice import splice_eval
from mistudio.core.sae.trainer import TrainConfig, train_sae
from mistudio.core.store.workspace import Workspace


@pytest.fixture
def tok_ws(toy_ws: Workspace) -> Workspace:
    tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32), name="t")
    return toy_ws


def _meta(hook: str, out: str | None = None) -> dict:
    return {"model_name": "toy", "dataset_path": "t", "hook_name": hook, "hook_name_out": out}


def _sae(identity: bool) -> torch.nn.Module:
    sae = build_sae(SAEConfig("relu", d_in=32, d_sae=64, skip="fixed" if identity else "none",
                              skip_alpha=1.0))
    with torch.no_grad():
        sae.W_dec_FO.zero_()
        sae.b_dec_O.zero_()
    return sae.eval()


@pytest.mark.parametrize("hook", ["layers.1.resid_post", "layers.1.resid_pre", "layers.0.mlp_in",
                                  "layers.2.attn_out"])
def test_identity_reconstruction_scores_one_and_zero_scores_zero(tok_ws: Workspace,
                                                                 hook: str) -> None:
    # (A random toy model may not mind zero-ablation, so the score itself is checked on the
    # real model in test_embedded; here: the spliced loss equals the right reference.)
    perfect = splice_eval(tok_ws, _sae(identity=True), _meta(hook), n_sequences=8)
    assert perfect["ce_loss_sae"] == pytest.approx(perfect["ce_loss_clean"], abs=1e-5)
    assert perfect["kl_div"] == pytest.approx(0.0, abs=1e-5)
    useless = splice_eval(tok_ws, _sae(identity=False), _meta(hook), n_sequences=8)
    assert useless["ce_loss_sae"] == pytest.approx(useless["ce_loss_zero"], abs=1e-5)
    assert useless["ce_loss_zero"] != pytest.approx(useless["ce_loss_clean"], abs=1e-4)
    assert useless["kl_div"] > 0 and useless["in_model_tokens"] == 8 * 30


def test_transcoder_splice_reads_one_site_and_replaces_another(tok_ws: Workspace) -> None:
    r = splice_eval(tok_ws, _sae(identity=False), _meta("layers.1.mlp_in", "layers.1.mlp_out"),
                    n_sequences=8)
    assert r["ce_loss_sae"] == pytest.approx(r["ce_loss_zero"], abs=1e-5)


def test_eval_of_a_trained_sae_is_stored(tok_ws: Workspace) -> None:
    extract_activations(tok_ws, ExtractConfig("toy", "t", (1,), max_tokens=2000), "acts")
    train_sae(tok_ws, TrainConfig("acts", expansion=4, k=8, steps=30, batch_size=256, lr=3e-3,
                                  eval_tokens=512), "s")
    r = evaluate_in_model(tok_ws, "s", n_sequences=8)
    assert r.kl_div >= 0 and r.in_model_tokens == 8 * 30
    summary = tok_ws.catalog.get("sae", "s").summary
    assert summary.kl_div == r.kl_div and summary.explained_variance is not None
