"""Trainer options beyond the defaults: sweeps, sign-SGD, ghost gradients, target L0, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from toy import small_train_config as small

from mistudio.cli import main
from mistudio.core.runtime.errors import Cancelled, InvalidInputError
from mistudio.core.runtime.tasks import CallbackTask, CancelToken
from mistudio.core.sae import SAEConfig, build_sae
from mistudio.core.sae.checkpoints import METRICS
from mistudio.core.sae.io import open_sae
from mistudio.core.sae.optim import ScheduleFreeSignSGD
from mistudio.core.sae.relu import ghost_grads_loss
from mistudio.core.sae.trainer import train_sae, train_saes
from mistudio.core.store.workspace import Workspace


def _same_weights(ws: Workspace, a: str, b: str) -> None:
    wa, _ = open_sae(ws, a)
    wb, _ = open_sae(ws, b)
    for (n, p), (_, q) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert torch.equal(p, q), n


def _metrics(ws: Workspace, name: str) -> list[dict]:
    return [json.loads(x) for x in (ws.root / "saes" / name / METRICS).read_text().splitlines()]


def test_a_sweep_trains_each_sae_exactly_as_alone(acts_ws: Workspace) -> None:
    """One pass over the data, but every SAE sees what it would see trained on its own."""
    a, b = small(k=4), small(architecture="relu", expansion=2, optimizer="signum", lr=1e-3)
    manifests = train_saes(acts_ws, [(a, "sw-a"), (b, "sw-b")])
    assert [m.name for m in manifests] == ["sw-a", "sw-b"]
    assert manifests[1].summary.d_sae == 64 and manifests[1].summary.optimizer == "signum"
    train_sae(acts_ws, a, "alone-a")
    train_sae(acts_ws, b, "alone-b")
    _same_weights(acts_ws, "sw-a", "alone-a")
    _same_weights(acts_ws, "sw-b", "alone-b")


def test_a_sweep_refuses_settings_that_must_be_shared(acts_ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="must share steps"):
        train_saes(acts_ws, [(small(), "x"), (small(steps=50), "y")])
    with pytest.raises(InvalidInputError, match="same name"):
        train_saes(acts_ws, [(small(), "x"), (small(k=4), "x")])


def test_a_cancelled_sweep_resumes_to_the_same_result(acts_ws: Workspace) -> None:
    token = CancelToken()
    task = CallbackTask(on_partial=lambda r: token.cancel() if r.get("step", 0) >= 15 else None,
                        cancel=token)
    runs = [(small(k=4), "c-a"), (small(optimizer="signum", lr=1e-3), "c-b")]
    with pytest.raises(Cancelled):
        train_saes(acts_ws, runs, task)
    train_saes(acts_ws, runs)
    train_saes(acts_ws, [(small(optimizer="signum", lr=1e-3), "whole-b")])
    _same_weights(acts_ws, "c-b", "whole-b")
    assert [r["step"] for r in _metrics(acts_ws, "c-b")] == list(range(5, 41, 5))


def test_schedule_free_eval_and_train_modes_round_trip() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3))
    opt = ScheduleFreeSignSGD([w], lr=0.1, momentum=0.9)
    for _ in range(3):
        (w ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    y = w.detach().clone()
    opt.eval_mode()
    x = w.detach().clone()
    assert not torch.allclose(x, y)
    opt.eval_mode()  # idempotent
    assert torch.equal(w.detach(), x)
    opt.train_mode()
    torch.testing.assert_close(w.detach(), y)
    opt.eval_mode()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_schedule_free_sign_sgd_minimises_a_quadratic() -> None:
    torch.manual_seed(0)
    target = torch.randn(200)
    w = torch.nn.Parameter(torch.zeros(200))
    opt = ScheduleFreeSignSGD([w], lr=0.01, warmup_steps=10)
    for _ in range(400):
        ((w - target) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    opt.eval_mode()
    assert float((w.detach() - target).abs().mean()) < 0.05 < float(target.abs().mean())


def test_signum_training_learns(acts_ws: Workspace) -> None:
    m = train_sae(acts_ws, small(optimizer="signum", lr=None), "sg")
    assert m.summary.explained_variance > 0.5
    assert m.summary.lr == pytest.approx(5e-3 * (16384 / 128) ** 0.5)


def test_ghost_grads_reach_only_dead_latents_and_train_them() -> None:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig("relu", d_in=16, d_sae=64))
    x = torch.randn(128, 16)
    with torch.no_grad():
        sae.b_enc_F[:10] = -100.0  # dead: never fire
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:10] = True
    out = sae(x, dead_F=dead)
    assert "aux" in out.losses
    out.losses["aux"].backward()
    g = sae.W_enc_DF.grad
    assert float(g[:, :10].abs().sum()) > 0 and float(g[:, 10:].abs().sum()) == 0
    # the term is sized like the main MSE, whatever the dead latents' scale
    pre = sae.pre_acts(x)
    residual = x - out.x_hat.detach()
    loss = ghost_grads_loss(pre[:, dead], sae.W_dec_FO[dead], residual).detach()
    assert float(loss) == pytest.approx(float(residual.pow(2).mean()), rel=0.5)


def test_training_with_ghost_grads_logs_the_term(acts_ws: Workspace) -> None:
    train_sae(acts_ws, small(architecture="relu", ghost_grads=True, sparsity_coefficient=5.0,
                             dead_after_tokens=256), "gg")
    assert any("aux" in r for r in _metrics(acts_ws, "gg"))


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_target_l0_steers_the_sparsity_coefficient(acts_ws: Workspace, arch: str) -> None:
    target = 12.0
    m = train_sae(acts_ws, small(architecture=arch, target_l0=target, steps=300, log_every=20,
                                 checkpoint_every=100), f"tl-{arch}")
    rows = _metrics(acts_ws, f"tl-{arch}")
    late = [r["l0"] for r in rows if r["step"] > 200]
    assert abs(sum(late) / len(late) - target) / target < 0.3, late
    assert m.summary.l0 == pytest.approx(target, rel=0.4)
    assert rows[-1]["sparsity_coefficient"] != rows[0]["sparsity_coefficient"]


def test_config_refuses_options_that_do_not_apply() -> None:
    with pytest.raises(InvalidInputError, match="(?i)target l0"):
        small(architecture="topk", target_l0=10)
    with pytest.raises(InvalidInputError, match="Ghost gradients"):
        small(architecture="topk", ghost_grads=True)
    with pytest.raises(InvalidInputError, match="optimizer"):
        small(optimizer="sgd")


def test_cli_sweep_names_each_sae_by_what_varies(acts_ws: Workspace,
                                                 capsys: pytest.CaptureFixture) -> None:
    w = ["--workspace", str(acts_ws.root)]
    assert main(["train", "--activations", "acts", "--name", "sw", "--k", "4,8", "--expansion",
                 "2", "--steps", "10", "--batch-size", "256", *w]) == 0
    out = capsys.readouterr().out
    assert "SAE sw-k4:" in out and "SAE sw-k8:" in out
    assert acts_ws.catalog.get("sae", "sw-k8").summary.l0 <= 8
    assert main(["train", "--activations", "acts", "--name", "nothing", "--resume", *w]) == 2
    assert "No interrupted training run named 'nothing'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: usage and "expected int values like 16,32"
        main(["train", "--activations", "acts", "--k", "4,x", *w])
    assert "expected int values" in capsys.readouterr().err


def test_early_stopping_ends_only_the_run_that_plateaus(acts_ws: Workspace) -> None:
    stuck = small(lr=1e-9, early_stop_patience=2, steps=60)  # cannot improve: stops early
    learning = small(steps=60, early_stop_patience=2, k=4)
    a, b = train_saes(acts_ws, [(stuck, "stuck"), (learning, "learning")])
    assert a.summary.steps < 60 and a.summary.tokens == a.summary.steps * 256
    assert b.summary.steps > a.summary.steps
    assert _metrics(acts_ws, "stuck")[-1]["step"] == a.summary.steps


def test_training_that_cannot_fit_is_refused_before_it_starts(
        acts_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.sae.trainer as trainer_mod
    from mistudio.core.runtime.errors import ResourceError
    from mistudio.core.sae.train_config import training_bytes

    cfg = small()
    need = training_bytes(cfg, 32)
    assert training_bytes(small(expansion=8), 32) > need  # wider costs more
    assert training_bytes(small(batch_size=512), 32) > need
    monkeypatch.setattr(trainer_mod, "available_memory", lambda device: need // 2)
    with pytest.raises(ResourceError, match="smaller batch size"):
        train_sae(acts_ws, cfg, "too-big")
    assert acts_ws.catalog.find("sae", "too-big") is None
