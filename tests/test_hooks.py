"""Hook points of every supported family, checked against the models' own outputs."""

from __future__ import annotations

import pytest
import torch
from toy import FAMILIES, VOCAB, toy_model

from mistudio.core.models.adapters import HOOK_POINTS, adapter_for, hook_key, validate_hooks
from mistudio.core.models.hooks import capture, forward
from mistudio.core.models.registry import LoadedModel, describe_config
from mistudio.core.runtime.errors import InvalidInputError


def _loaded(family: str, n_layers: int = 3) -> LoadedModel:
    model = toy_model(family, n_layers)
    info = describe_config(model.config)
    return LoadedModel(family, model, None, adapter_for(info.model_type), info)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, VOCAB, (2, 12), generator=g), torch.ones(2, 12, dtype=torch.long)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_stream_matches_output_hidden_states(family: str) -> None:
    lm = _loaded(family)
    ids, mask = _batch()
    with torch.inference_mode():
        ref = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        sites = [(layer, h) for layer in range(2) for h in ("resid_pre", "resid_post")]
        with capture(lm, sites, stop_early=False) as got:
            forward(lm, ids, mask)
    for layer in range(2):  # the last hidden state is after the final norm in HF models
        torch.testing.assert_close(got[hook_key(layer, "resid_pre")], ref[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[hook_key(layer, "resid_post")], ref[layer + 1], atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sublayer_outputs_add_up_to_the_residual_stream(family: str) -> None:
    """resid_post = resid_pre + attn_out + mlp_out holds for sequential and parallel blocks."""
    lm = _loaded(family)
    ids, mask = _batch()
    with torch.inference_mode(), capture(lm, [(1, h) for h in HOOK_POINTS]) as got:
        forward(lm, ids, mask)
        k = {h: got[hook_key(1, h)] for h in HOOK_POINTS}
        torch.testing.assert_close(k["resid_post"], k["resid_pre"] + k["attn_out"] + k["mlp_out"],
                                   atol=1e-5, rtol=1e-5)
        block = lm.layers[1]
        mlp = block.mlp(k["mlp_in"])
        if family == "gemma2":
            mlp = block.post_feedforward_layernorm(mlp)
        torch.testing.assert_close(mlp, k["mlp_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_forward_stops_after_the_last_needed_layer(family: str) -> None:
    lm = _loaded(family, n_layers=4)
    calls: list[int] = []
    handles = [block.register_forward_hook(lambda *_a, i=i: calls.append(i))
               for i, block in enumerate(lm.layers)]
    head_calls: list[int] = []
    handles.append(lm.model.get_output_embeddings().register_forward_hook(
        lambda *_a: head_calls.append(1)))
    try:
        with torch.inference_mode(), capture(lm, [(1, "resid_post")]) as got:
            assert forward(lm, *_batch()) is None
        assert calls == [0, 1] and head_calls == [] and hook_key(1, "resid_post") in got
    finally:
        for h in handles:
            h.remove()


def test_hooks_are_removed_even_when_the_forward_fails() -> None:
    lm = _loaded("llama")
    before = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in lm.model.named_modules()}
    with pytest.raises(IndexError), capture(lm, [(0, "mlp_in"), (2, "resid_post")]):
        lm.model(input_ids=torch.full((1, 4), VOCAB + 10))  # out-of-vocabulary ids fail
    after = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in lm.model.named_modules()}
    assert before == after


def test_unknown_family_and_bad_hook_points() -> None:
    with pytest.raises(InvalidInputError, match="'bert' is not supported.*Supported families: GPT-2"):
        adapter_for("bert")
    with pytest.raises(InvalidInputError, match="Layer 3 is out of range.*0 to 2"):
        validate_hooks(3, [3], "resid_post")
    with pytest.raises(InvalidInputError, match="Unknown hook point 'resid'.*resid_pre"):
        validate_hooks(3, [0], "resid")


@pytest.mark.parametrize("family", FAMILIES)
def test_model_info_from_config(family: str) -> None:
    info = describe_config(toy_model(family).config)
    assert info.n_layers == 3 and info.d_model == 32 and info.vocab_size == VOCAB
    assert info.n_params == sum(p.numel() for p in toy_model(family).parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_attn_z_is_what_the_output_projection_reads(family: str) -> None:
    """attn_z (heads concatenated, before the output projection) projects to attn_out."""
    lm = _loaded(family)
    ids, mask = _batch()
    with torch.inference_mode(), capture(lm, [(1, "attn_z"), (1, "attn_out")]) as got:
        forward(lm, ids, mask)
        z, out = got[hook_key(1, "attn_z")], got[hook_key(1, "attn_out")]
        path, _ = lm.adapter.sites["attn_z"]
        proj = lm.layers[1].get_submodule(path)(z)
        if family == "gemma2":
            proj = lm.layers[1].post_attention_layernorm(proj)
    assert z.shape[-1] == lm.info.width("attn_z")
    torch.testing.assert_close(proj, out, atol=1e-5, rtol=1e-5)
