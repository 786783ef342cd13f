"""SAE quality at the default settings on the embedded model and corpus.

Prints one JSON object: explained variance, L0 and dead fraction on held-out tokens, the CE loss
score and KL divergence with the SAE spliced into the model, training tokens and wall time; and,
as ``baseline_explained_variance``, what a minimal dense Adam TopK loop (nn.Linear encoder and
decoder, ReLU(TopK), MSE, Adam at lr 1e-3) reaches with the same steps and batch on the same rows,
scored with the same formula on the same held-out rows.

Explained variance is over the tokens an SAE is meant for: the massive tokens flagged at
extraction (attention sinks) are left out of training and scoring for both, as the trainer does;
``*_all_tokens`` gives each figure over every held-out token, sinks included, for comparison.

    python benchmarks/quality.py [--steps 400] [--batch-size 2048] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.activations.store import open_activations
from mistudio.core.data.datasets import ensure_builtin_dataset
from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model, model_info
from mistudio.core.sae.evaluation import evaluate_in_model
from mistudio.core.sae.metrics import ReconstructionStats
from mistudio.core.sae.trainer import TrainConfig, train_sae
from mistudio.core.store.workspace import Workspace


def prepare(ws: Workspace) -> str:
    """Every token of the built-in corpus at the middle layer (about 112k tokens)."""
    ensure_embedded_model(ws)
    ensure_builtin_dataset(ws)
    layer = model_info(ws, EMBEDDED_NAME).n_layers // 2
    name = f"quality-{layer}"
    if ws.catalog.find("activations", name) is None:
        extract_activations(ws, ExtractConfig(EMBEDDED_NAME, "pydoc", (layer,)), name)
    return name


BENCH_SAE = "analyze-bench"


def prepare_sae(ws: Workspace) -> tuple[str, str]:
    """The activation set and an SAE of 4,608 features trained on it for 200 steps (made once;
    the analysis, labelling and steering benchmarks share it)."""
    acts = prepare(ws)
    if ws.catalog.find("sae", BENCH_SAE) is None:
        train_sae(ws, TrainConfig(acts, steps=200, batch_size=2048), BENCH_SAE)
    return acts, BENCH_SAE


def baseline(x_train: torch.Tensor, x_eval: torch.Tensor, keep_eval: torch.Tensor, d_sae: int,
             k: int, steps: int, batch: int) -> tuple[float, float]:
    """(EV on kept held-out rows, EV on all held-out rows) of the minimal loop."""
    torch.manual_seed(0)
    d = x_train.shape[1]
    enc, dec = nn.Linear(d, d_sae), nn.Linear(d_sae, d)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vals, idx = enc(x).topk(k, dim=-1)
        f = torch.zeros(x.shape[0], d_sae).scatter(-1, idx, torch.relu(vals))
        return dec(f), f

    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = x_train[torch.randint(0, len(x_train), (batch,), generator=gen)]
        loss = (run(x)[0] - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    kept, every = ReconstructionStats(d_sae), ReconstructionStats(d_sae)
    with torch.no_grad():
        for s in range(0, len(x_eval), batch):
            x, keep = x_eval[s:s + batch], keep_eval[s:s + batch]
            x_hat, f = run(x)
            every.update(x, x_hat, f)
            kept.update(x[keep], x_hat[keep], f[keep])
    return kept.reconstruction()[0], every.reconstruction()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--skip-baseline", action="store_true")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    acts_name = prepare(ws)
    cfg = TrainConfig(acts_name, steps=args.steps, batch_size=args.batch_size)
    t0 = time.perf_counter()
    m = train_sae(ws, cfg, "quality", overwrite=True)
    wall = time.perf_counter() - t0
    e = evaluate_in_model(ws, "quality", n_sequences=32)
    s = m.summary
    out = {"architecture": cfg.architecture, "expansion": cfg.expansion, "k": cfg.k,
           "steps": s.steps, "batch_size": cfg.batch_size, "train_tokens": s.tokens,
           "wall_s": round(wall, 1), "explained_variance": round(s.explained_variance, 4),
           "explained_variance_all_tokens": round(s.explained_variance_all_tokens, 4),
           "massive_tokens_in_set": int(open_activations(ws, acts_name).massive.count),
           "massive_tokens_held_out": s.massive_excluded,
           "l0": round(s.l0, 2), "dead_fraction": round(s.dead_fraction, 4),
           "ce_loss_score": round(e.ce_loss_score, 4), "kl_div": round(e.kl_div, 4),
           "ce_loss_clean": e.ce_loss_clean, "ce_loss_sae": e.ce_loss_sae,
           "ce_loss_zero": e.ce_loss_zero, "eval_tokens": s.eval_tokens}
    if not args.skip_baseline:
        acts = open_activations(ws, acts_name)
        key = acts.keys[0]
        scale = acts.norm_stats(key).scale_to_sqrt_d
        n_eval = s.eval_tokens + s.massive_excluded  # held-out rows, sinks included
        split = acts.n_rows - n_eval
        x = torch.from_numpy(acts.rows(key, 0, acts.n_rows)) * scale
        keep = torch.from_numpy(acts.kept_mask(0, acts.n_rows))
        ev, ev_all = baseline(x[:split][keep[:split]], x[split:], keep[split:], s.d_sae,
                              cfg.k, cfg.steps, cfg.batch_size)
        out["baseline_explained_variance"] = round(ev, 4)
        out["baseline_explained_variance_all_tokens"] = round(ev_all, 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
