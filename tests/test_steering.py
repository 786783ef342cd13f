"""Steering: interventions, KV-cache generation, side-by-side comparison, presets, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from toy import small_train_config as small

from mistudio.core.models.registry import load_model
from mistudio.core.runtime.errors import Cancelled, InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import CallbackTask, CancelToken
from mistudio.core.sae.io import open_sae
from mistudio.core.sae.trainer import train_sae
from mistudio.core.steering.generate import GenerationConfig, compare
from mistudio.core.steering.interventions import Intervention, SiteSteer, steering
from mistudio.core.steering.session import Steerer, SteeringSpec
from mistudio.core.store.workspace import Workspace

HOOK = "layers.1.resid_post"
PROMPT = "The module defines a class"


@pytest.fixture
def steer_ws(acts_ws: Workspace) -> Workspace:
    train_sae(acts_ws, small(steps=30, architecture="relu"), "sae")
    return acts_ws


def _spec(*ivs: Intervention, **gen: object) -> SteeringSpec:
    return SteeringSpec(("sae",), ivs, generation=GenerationConfig(**gen))  # type: ignore[arg-type]


def test_each_method_changes_h_as_documented(steer_ws: Workspace) -> None:
    sae, _ = open_sae(steer_ws, "sae")
    h = torch.randn(1, 5, 32) * 3
    W = sae.W_dec_FO
    a = sae.encode(h)[..., 3]

    def run(iv: Intervention) -> torch.Tensor:
        return SiteSteer(sae, [iv], 1.0, 1)(h) - h

    torch.testing.assert_close(run(Intervention(3, 2.0, "add"))[0, 1:], (2.0 * W[3]).expand(4, -1))
    torch.testing.assert_close(run(Intervention(3, 1.5, "clamp"))[0, 1:],
                               (1.5 - a[0, 1:, None]) * W[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(Intervention(3, 0, "ablate"))[0, 1:],
                               -a[0, 1:, None] * W[3], atol=1e-5, rtol=1e-5)
    d = W[3] / W[3].norm()
    capped = h + run(Intervention(3, 0.5, "cap"))
    assert float((capped[0, 1:] @ d).max()) <= 0.5 + 1e-5
    assert torch.equal(run(Intervention(3, 2.0, "add"))[0, 0], torch.zeros(32))  # position 0 kept
    with pytest.raises(InvalidInputError, match="out of range"):
        SiteSteer(sae, [Intervention(10_000, 1.0)], 1.0, 1)


def test_kv_cache_generation_matches_recomputing_each_step(steer_ws: Workspace) -> None:
    loaded = load_model(steer_ws, "toy", device="cpu", dtype="float32")
    sae, _ = open_sae(steer_ws, "sae")
    sites = {HOOK: SiteSteer(sae, [Intervention(5, 8.0), Intervention(9, 0, "ablate")], 1.0, 1)}
    result = compare(loaded, sites, PROMPT, GenerationConfig(max_tokens=12))
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    for _ in range(12):  # no cache: the whole sequence every step, steering restarted
        sites[HOOK].reset()
        with torch.no_grad(), steering(loaded, sites):
            logits = loaded.model(input_ids=ids, use_cache=False).logits[0, -1]
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    assert result.steered.token_ids == ids[0, -12:].tolist()


def test_steering_leaves_the_model_untouched_even_when_cancelled(steer_ws: Workspace) -> None:
    loaded = load_model(steer_ws, "toy", device="cpu", dtype="float32")
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = loaded.model(input_ids=ids).logits
    steerer = Steerer(steer_ws, _spec(Intervention(5, 20.0), max_tokens=20), loaded=loaded)
    token = CancelToken()
    task = CallbackTask(on_partial=lambda r: token.cancel() if r["index"] >= 3 else None,
                        cancel=token)
    with pytest.raises(Cancelled):
        steerer.run(PROMPT, task=task)
    steerer.run(PROMPT)
    with torch.no_grad():
        after = loaded.model(input_ids=ids).logits
    assert torch.equal(before, after)


def test_comparison_reports_divergence_kl_and_feature_change(steer_ws: Workspace) -> None:
    streamed: list[dict] = []
    steerer = Steerer(steer_ws, _spec(Intervention(5, 30.0), max_tokens=10, temperature=0.8,
                                      seed=3), device="cpu")
    r = steerer.run(PROMPT, task=CallbackTask(on_partial=streamed.append))
    assert {e["side"] for e in streamed} == {"plain", "steered"}
    assert "".join(e["text"] for e in streamed if e["side"] == "steered") == r.steered.text
    assert r.diverges_at is not None and r.kl_mean > 0
    assert len(r.kl_per_position) == len(r.steered.token_ids) == len(r.gained) == len(r.lost)
    assert all(v > 0 for _, v in r.gained[0]) and all(v > 0 for _, v in r.lost[0])
    assert r.perplexity_plain > 1 and r.perplexity_steered > 1 and -1 <= r.similarity <= 1
    act = r.feature_activations[f"{HOOK}#5"]
    sae, _ = open_sae(steer_ws, "sae")
    gain = 30.0 * float(sae.W_enc_DF[:, 5] @ sae.W_dec_FO[5])  # what the encoder reads back
    assert gain > 1 and act["steered"] > act["plain"] + 0.5 * gain
    same = steerer.run(PROMPT, _spec(Intervention(5, 0.0), max_tokens=10, temperature=0.8,
                                     seed=3))
    assert same.steered.token_ids == same.plain.token_ids and same.diverges_at is None
    assert max(same.kl_per_position) < 1e-6


def test_perplexity_and_kl_equal_a_plain_recomputation(steer_ws: Workspace) -> None:
    """The comparison asks the model for the logits it reads only (not the prompt's): its
    perplexities and KL are those of a forward pass over the whole text with every logit."""
    loaded = load_model(steer_ws, "toy", device="cpu", dtype="float32")
    sae, _ = open_sae(steer_ws, "sae")
    sites = {HOOK: SiteSteer(sae, [Intervention(5, 12.0)], 1.0, 1)}
    r = compare(loaded, sites, PROMPT, GenerationConfig(max_tokens=8, temperature=0.7, seed=1))
    prompt = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"][0].tolist()
    n = len(prompt)

    def full_logits(new: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return loaded.model(input_ids=torch.tensor([prompt + new])).logits[0].float()

    for side, ppl in ((r.plain, r.perplexity_plain), (r.steered, r.perplexity_steered)):
        lp = full_logits(side.token_ids)[n - 1:-1].log_softmax(-1)
        nll = -lp.gather(-1, torch.tensor(side.token_ids)[:, None]).mean()
        assert ppl == pytest.approx(float(nll.exp()), rel=1e-4)
    plain_lp = full_logits(r.steered.token_ids)[n - 1:-1].log_softmax(-1)
    ids = torch.tensor([prompt + r.steered.token_ids])
    sites[HOOK].reset()
    with torch.no_grad(), steering(loaded, sites):
        steered_lp = loaded.model(input_ids=ids).logits[0, n - 1:-1].float().log_softmax(-1)
    kl = (steered_lp.exp() * (steered_lp - plain_lp)).sum(-1)
    np.testing.assert_allclose(r.kl_per_position, kl.numpy(), rtol=1e-3, atol=1e-5)


def test_bad_input(steer_ws: Workspace) -> None:
    steerer = Steerer(steer_ws, _spec(Intervention(5, 1.0), max_tokens=4), device="cpu")
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        steerer.run("   ")
    with pytest.raises(InvalidInputError, match="the model reads at most 256"):
        steerer.run("word " * 400)
    with pytest.raises(InvalidInputError, match="out of range"):
        steerer.run(PROMPT, _spec(Intervention(9999, 1.0)))
    for bad in (float("nan"), float("inf")):  # refused before anything runs
        with pytest.raises(InvalidInputError, match="not a number"):
            Intervention(5, bad)
    with pytest.raises(InvalidInputError, match="32-bit floats end at 3.4e38"):
        Intervention(5, 1e39)
    with pytest.raises(InvalidInputError, match="exceed the model's maximum of 256"):
        steerer.run(PROMPT, _spec(Intervention(5, 1.0), max_tokens=100_000))
    # a finite coefficient so large that the model's arithmetic overflows: that side stops
    spec = SteeringSpec(("sae",), (Intervention(5, 1e30),), strength=1e30,
                        generation=GenerationConfig(max_tokens=4))
    nan = steerer.run(PROMPT, spec)
    assert nan.steered.error and "NaN/Inf" in nan.steered.error and not nan.steered.token_ids
    assert len(nan.plain.token_ids) == 4 and nan.plain.error is None  # the other side goes on
    loaded = steerer.loaded
    loaded.info = dataclasses.replace(loaded.info, d_model=64)
    with pytest.raises(InvalidInputError, match="hidden size 64"):
        Steerer(steer_ws, _spec(Intervention(5, 1.0)), loaded=loaded)
    sae, _ = open_sae(steer_ws, "sae")
    with pytest.raises(InvalidInputError, match="no layer 9"), \
            steering(steerer.loaded, {"layers.9.resid_post": SiteSteer(sae, [], 1.0, 1)}):
        pass
    with pytest.raises(InvalidInputError, match="No feature"):
        SteeringSpec(("sae",), ())


def test_presets_save_load_rate_export_import(steer_ws: Workspace, tmp_path: Path) -> None:
    from mistudio.core.steering import presets

    spec = _spec(Intervention(5, 4.0), Intervention(7, -2.0, "clamp"), max_tokens=5)
    presets.save_preset(steer_ws, "class-up", spec, note="more classes")
    assert presets.load_preset(steer_ws, "class-up") == spec
    with pytest.raises(InvalidInputError, match="exists"):
        presets.save_preset(steer_ws, "class-up", spec)
    result = {"prompt": "p", "plain": {"text": "a"}, "steered": {"text": "b"}}
    assert presets.rate(steer_ws, "class-up", result, "steered", "on topic") == 1
    out = presets.export_preset(steer_ws, "class-up", tmp_path)
    presets.delete_preset(steer_ws, "class-up")
    assert presets.list_presets(steer_ws) == []
    with pytest.raises(NotFoundError):
        presets.load_preset(steer_ws, "class-up")
    back = presets.import_preset(steer_ws, out)
    assert back["name"] == "class-up" and len(back["ratings"]) == 1
    assert presets.list_presets(steer_ws)[0]["ratings"] == 1


def test_cli_steer_presets_and_rating(steer_ws: Workspace, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    import json

    from mistudio.cli import main

    w = ["--workspace", str(steer_ws.root)]
    assert main(["steer", "--sae", "sae", "--feature", "5=+30", "--feature", "7=-2",
                 "--max-tokens", "6", "--prompt", PROMPT, "--save", "up", "--rate", "steered",
                 *w]) == 0
    out = capsys.readouterr().out
    assert "UNSTEERED" in out and "STEERED" in out and "KL(steered || unsteered)" in out
    assert "Feature 5 mean activation" in out
    assert main(["steer", "--preset", "up", "--json", "--prompt", PROMPT, *w]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["steered"]["token_ids"]) == 6 and r["spec"]["interventions"][1]["coefficient"] == -2
    assert main(["presets", "list", *w]) == 0
    assert "up" in capsys.readouterr().out
    assert main(["presets", "show", "up", *w]) == 0
    assert "rating: steered" in capsys.readouterr().out
    assert main(["presets", "export", "up", str(tmp_path), *w]) == 0
    assert main(["presets", "delete", "up", *w]) == 0
    assert main(["presets", "import", str(tmp_path / "up.json"), "--as", "again", *w]) == 0
    capsys.readouterr()
    assert main(["steer", "--sae", "sae", "--feature", "99999=1", "--prompt", PROMPT, *w]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["steer", "--sae", "sae", "--feature", "5=1", "--prompt", " ", *w]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["steer", "--sae", "sae", "--feature", "5=1", "--rate", "plain", *w]) == 2
    capsys.readouterr()
    for huge in ("1e39", "1e30"):  # refused, or the model's arithmetic overflows: exit 2
        assert main(["steer", "--sae", "sae", "--feature", f"5={huge}", "--strength", "1e30",
                     "--max-tokens", "3", "--prompt", PROMPT, *w]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and ("3.4e38" in err or "NaN/Inf" in err), err
    assert main(["presets", "show", *w]) == 2


def test_a_watched_sae_at_a_later_layer_reports_what_changed(steer_ws: Workspace) -> None:
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations

    extract_activations(steer_ws, ExtractConfig("toy", "pydoc", (0,), context_length=64,
                                                max_tokens=3000, dtype="float32"), "early")
    train_sae(steer_ws, small(activations="early", steps=30, architecture="relu"), "early-sae")
    spec = SteeringSpec(("early-sae", "sae"), (Intervention(5, 30.0, "add", "early-sae"),),
                        generation=GenerationConfig(max_tokens=6))
    r = Steerer(steer_ws, spec, device="cpu").run(PROMPT)
    later = {k: v for k, v in r.feature_activations.items() if k.startswith(HOOK)}
    assert len(later) == 5 and any(abs(v["steered"] - v["plain"]) > 0 for v in later.values())
    assert "layers.0.resid_post#5" in r.feature_activations
