"""SAE training throughput against a minimal PyTorch loop of the same architecture.

Prints one JSON object. On activations of the embedded model (layer 15, d_in 576), expansion 8,
batch 4096, it times miStudio's trainer (``train_sae``: data from the memory-mapped store,
sparse TopK encode/decode, AuxK, metrics, checkpoints) and, in the same process on the same rows
held in memory, a minimal loop: dense ``nn.Linear`` encoder and decoder, ReLU or TopK, Adam,
nothing else. Runs alternate and repeat; each figure is the median.

miStudio runs at its defaults (``mixed_precision=auto``: bfloat16 matmuls where the CPU computes
them natively, TopK then choosing latents in bfloat16 and computing their values in float32) and
again in float32 throughout (``*_float32_*``), so the gain of each part shows.

    python benchmarks/train.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.activations.store import open_activations
from mistudio.core.models.devices import cpu_has_native_bfloat16
from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model
from mistudio.core.runtime.tasks import CallbackTask
from mistudio.core.sae.trainer import TrainConfig, train_sae
from mistudio.core.store.workspace import Workspace

D_IN, EXPANSION, K, BATCH = 576, 8, 32, 4096


def prepare(ws: Workspace, tokens: int) -> str:
    ensure_embedded_model(ws)
    name = f"train-bench-{tokens}"
    if ws.catalog.find("activations", name) is None:
        from mistudio.core.data.datasets import ensure_builtin_dataset

        ensure_builtin_dataset(ws)
        extract_activations(ws, ExtractConfig(EMBEDDED_NAME, "pydoc", (15,), max_tokens=tokens),
                            name)
    return name


def minimal_loop(x_all: torch.Tensor, arch: str, steps: int) -> float:
    """Tokens/s of the plainest correct loop: Linear -> ReLU/TopK -> Linear, MSE (+L1), Adam."""
    torch.manual_seed(0)
    enc, dec = nn.Linear(D_IN, D_IN * EXPANSION), nn.Linear(D_IN * EXPANSION, D_IN)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    t0 = time.perf_counter()
    for step in range(steps):
        x = x_all[(step * BATCH) % (len(x_all) - BATCH):][:BATCH]
        pre = enc(x)
        if arch == "topk":
            vals, idx = pre.topk(K, dim=-1)
            f = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
            loss = (dec(f) - x).pow(2).mean()
        else:
            f = torch.relu(pre)
            loss = (dec(f) - x).pow(2).mean() + 1e-3 * f.abs().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - t0)


def ours(ws: Workspace, acts: str, arch: str, steps: int, run: int,
         precision: str = "auto") -> float:
    rows: list[dict] = []
    cfg = TrainConfig(acts, architecture=arch, expansion=EXPANSION, k=K, batch_size=BATCH,
                      steps=steps, log_every=steps, checkpoint_every=10 * steps, eval_tokens=4096,
                      mixed_precision=precision)  # type: ignore[arg-type]
    train_sae(ws, cfg, f"bench-{arch}-{run}", CallbackTask(on_partial=rows.append), overwrite=True)
    return float(rows[-1]["tokens_per_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=50_000)
    args = p.parse_args()
    ws = Workspace(args.workspace)
    acts_name = prepare(ws, args.tokens)
    acts = open_activations(ws, acts_name)
    key = acts.keys[0]
    x_all = torch.from_numpy(acts.rows(key, 0, acts.n_rows)) * acts.norm_stats(key).scale_to_sqrt_d
    runs: dict[str, list[float]] = {f"{w}_{a}": [] for w in ("ours", "ours_float32", "minimal")
                                    for a in ("topk", "relu")}
    minimal_loop(x_all, "topk", 2)  # warm-up
    for r in range(args.repeats):
        for arch in ("topk", "relu"):
            runs[f"minimal_{arch}"].append(minimal_loop(x_all, arch, args.steps))
            runs[f"ours_{arch}"].append(ours(ws, acts_name, arch, args.steps, r))
            runs[f"ours_float32_{arch}"].append(ours(ws, acts_name, arch, args.steps, r, "none"))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "d_in": D_IN, "expansion": EXPANSION, "k": K, "batch_size": BATCH, "steps": args.steps,
        "threads": torch.get_num_threads(),
        "precision": "bfloat16 matmuls (native on this CPU)" if cpu_has_native_bfloat16()
        else "float32",
        "topk_tokens_per_s": round(med["ours_topk"], 1),
        "topk_minimal_tokens_per_s": round(med["minimal_topk"], 1),
        "topk_ratio_vs_minimal": round(med["ours_topk"] / med["minimal_topk"], 3),
        "relu_tokens_per_s": round(med["ours_relu"], 1),
        "relu_minimal_tokens_per_s": round(med["minimal_relu"], 1),
        "relu_ratio_vs_minimal": round(med["ours_relu"] / med["minimal_relu"], 3),
        "topk_float32_ratio_vs_minimal": round(med["ours_float32_topk"] / med["minimal_topk"], 3),
        "relu_float32_ratio_vs_minimal": round(med["ours_float32_relu"] / med["minimal_relu"], 3),
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
