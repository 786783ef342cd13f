"""Steering evaluated over prompt sets: scorers, bootstrap intervals, sweeps, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toy import small_train_config as small
from toy import toy_tokenizer

from mistudio.cli import main
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.trainer import train_sae
from mistudio.core.steering.evaluate import SteerEvalConfig, _generate, evaluate_steering
from mistudio.core.steering.generate import GenerationConfig, compare
from mistudio.core.steering.interventions import Intervention
from mistudio.core.steering.scorers import (
    Classifier,
    load_prompts,
    load_words,
    summarize,
    word_share,
)
from mistudio.core.steering.session import Steerer, SteeringSpec
from mistudio.core.store.workspace import Workspace

PROMPTS = ("The for statement", "A list in Python", "Functions are defined with")


@pytest.fixture
def steer_ws(acts_ws: Workspace) -> Workspace:
    train_sae(acts_ws, small(steps=30, architecture="relu"), "sae")
    return acts_ws


def _spec(coef: float = 6.0) -> SteeringSpec:
    return SteeringSpec(("sae",), (Intervention(5, coef),))


def test_bootstrap_interval_finds_a_real_shift_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(0)
    plain = rng.normal(0, 1, (12, 4))
    shifted = summarize("x", plain, plain + 1.0 + rng.normal(0, 0.3, (12, 4)))
    assert shifted.ci_low > 0.5 and shifted.ci_high < 1.5 and shifted.change == pytest.approx(
        1.0, abs=0.2)
    same = summarize("x", plain, rng.normal(0, 1, (12, 4)))
    assert same.ci_low < 0 < same.ci_high
    assert shifted.relative is not None


def test_prompt_sets_and_word_lists(tmp_path: Path) -> None:
    assert len(load_prompts("everyday")) == 12
    (tmp_path / "p.txt").write_text("one\n\n two \n")
    assert load_prompts(str(tmp_path / "p.txt")) == ["one", "two"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a b"}\n{"text": "c"}\n')
    assert load_prompts(str(tmp_path / "p.jsonl")) == ["a b", "c"]
    with pytest.raises(InvalidInputError, match="line 1 is not valid JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n")
        load_prompts(str(tmp_path / "bad.jsonl"))
    words = load_words("Python, list ,dict")
    assert word_share("A list in python, a Dict.", words) == pytest.approx(3 / 6)
    with pytest.raises(InvalidInputError, match="word list is empty"):
        load_words(" , ")


def test_batched_sampling_matches_the_steering_comparison(steer_ws: Workspace) -> None:
    """One sample of the batched generator is the continuation compare() samples."""
    steerer = Steerer(steer_ws, _spec(), device="cpu")
    cfg = SteerEvalConfig(PROMPTS, samples=1, max_tokens=10, temperature=0.9, seed=3)
    for sites in ({}, steerer.sites()):
        _, new = _generate(steerer, sites, PROMPTS[0], 1, cfg, 3)
        ref = compare(steerer.loaded, steerer.sites(), PROMPTS[0],
                      GenerationConfig(10, 0.9, 0.95, seed=3))
        side = ref.plain if not sites else ref.steered
        assert new[0] == [t for t in side.token_ids if t != steerer.loaded.tokenizer.eos_token_id]


def test_evaluation_over_prompts_and_a_sweep(steer_ws: Workspace) -> None:
    cfg = SteerEvalConfig(PROMPTS, samples=2, max_tokens=8, strengths=(0.0, 1.0, 4.0),
                          words="for,list,the", bootstrap=200)
    r = evaluate_steering(steer_ws, _spec(), cfg, device="cpu")
    assert [p.strength for p in r.points] == [0.0, 1.0, 4.0]
    zero = r.points[0]  # no steering: the same seeds give the same continuations
    assert all(s.change == 0 and s.ci_low == 0 == s.ci_high for s in zero.scores)
    assert zero.perplexity_ratio == pytest.approx(1.0)
    assert [s.scorer for s in zero.scores] == ["feature sae#5", "words"]
    strong = r.points[-1]
    assert strong.best and strong.worst and strong.best[0]["prompt"] in PROMPTS
    assert strong.perplexity_steered > 0 and r.tokens_generated > 0
    json.dumps(r.to_dict())  # saved with presets as JSON


def test_classifier_scorer(tmp_path: Path) -> None:
    import transformers as T

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                        num_labels=2, id2label={0: "ok", 1: "toxic"},
                        label2id={"ok": 0, "toxic": 1}, pad_token_id=0)
    T.LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    toy_tokenizer().save_pretrained(tmp_path / "clf")
    clf = Classifier(str(tmp_path / "clf"), "toxic")
    scores = clf(["a list in python", "", "the for statement"])
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    with pytest.raises(InvalidInputError, match="no label 'rude'.*ok, toxic"):
        Classifier(str(tmp_path / "clf"), "rude")


def test_cli_steer_eval_keeps_the_result_with_a_preset(steer_ws: Workspace,
                                                       capsys: pytest.CaptureFixture) -> None:
    w = ["--workspace", str(steer_ws.root)]
    assert main(["presets", "save", "p", "--sae", "sae", "--feature", "5=+6", *w]) == 0
    capsys.readouterr()
    assert main(["steer-eval", "--preset", "p", "--keep", "--prompts", "python", "--samples",
                 "1", "--max-tokens", "6", "--strengths", "1,3", "--device", "cpu", *w]) == 0
    out = capsys.readouterr().out
    assert "PERPLEXITY" in out and "feature sae#5" in out and "Kept with preset p" in out
    data = json.loads((steer_ws.root / "presets" / "p.json").read_text())
    assert len(data["evaluations"]) == 1 and len(data["evaluations"][0]["points"]) == 2
    assert main(["steer-eval", "--sae", "sae", "--feature", "5=+1", "--temperature", "0", *w]) == 2


def test_evaluate_view_in_the_steering_tab(qtbot: object, steer_ws: Workspace) -> None:
    from mistudio.core.steering.presets import save_preset
    from mistudio.gui.steering_panel import SteeringPanel

    panel = SteeringPanel(steer_ws)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    panel.device = "cpu"
    panel.set_spec(_spec())
    save_preset(steer_ws, "p", _spec())
    panel.refresh()
    panel.preset.setCurrentText("p")
    view = panel.evaluate_view
    view.prompts.setCurrentText("python")
    view.samples.setValue(1)
    view.tokens.setValue(6)
    view.strengths.setText("1, 3")
    with qtbot.waitSignal(view.runner.finished, timeout=120_000):  # type: ignore[attr-defined]
        view.run()
    assert view.model.rowCount() == 2  # one scorer (the steered feature) x two strengths
    xs, _ys = view.curve.getData()
    assert len(xs) == 2 and view.keep_btn.isEnabled()
    view.keep()
    data = json.loads((steer_ws.root / "presets" / "p.json").read_text())
    assert len(data["evaluations"]) == 1


def test_evaluate_view_shows_each_strength_as_it_finishes_and_keeps_them_on_cancel(
        qtbot: object, steer_ws: Workspace) -> None:
    from mistudio.gui.steering_panel import SteeringPanel

    panel = SteeringPanel(steer_ws)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    panel.device = "cpu"
    panel.set_spec(_spec())
    view = panel.evaluate_view
    view.prompts.setCurrentText("python")
    view.samples.setValue(1)
    view.tokens.setValue(4)
    view.strengths.setText("0, 1, 2, 3, 4, 5")
    said: list[str] = []
    view.runner.status.connect(said.append)  # type: ignore[attr-defined]
    with qtbot.waitSignal(view.runner.cancelled, timeout=120_000):  # type: ignore[attr-defined]
        view.run()
        qtbot.waitUntil(lambda: len(view.points) >= 1, timeout=120_000)  # type: ignore
        view.cancel_btn.click()
    kept = len(view.points)
    assert 1 <= kept < 6 and view.model.rowCount() == kept  # shown, and kept
    assert "finished before it are shown" in view.status.text() or "strength finished" in \
        view.status.text()
    assert any("left" in t for t in said)  # an estimate once the first prompt is done
    low, high = view.plot.getViewBox().viewRange()[1]
    assert high - low >= 1.0  # zero changes: a readable axis, not -5e-106 ... -1.5e-105


def test_repetition_catches_loops_that_perplexity_misses() -> None:
    from mistudio.core.steering.scorers import REPETITIVE, repetition

    loop = "following rules rules rules world world world. same thing is same thing same same"
    fluent = "its ability to make data science accessible and enable users to share projects"
    assert repetition(loop) > REPETITIVE and repetition(fluent) < 0.1
    assert repetition("a a a") == 0.0  # too short to judge
