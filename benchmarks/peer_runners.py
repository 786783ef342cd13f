"""Train one peer's TopK SAE on rows from a .npy file, in the peers' own environment.

Run by ``benchmarks/peers.py`` with the benchmark environment's Python (EleutherAI's sparsify and
SAELens installed there, never in miStudio's); imports nothing of miStudio. Each tool trains at
its own defaults except the shared settings (latents, k, tokens per step, steps), with its own
training step and its own inference code, and writes the held-out reconstruction for the one
evaluator in ``peers.py``:

    python peer_runners.py TOOL --train T.npy --eval E.npy --out OUT.safetensors \\
        --steps 400 --batch 4096 --expansion 8 --k 32

TOOL: ``sparsify`` (SparseCoder, its ScheduleFreeWrapper(SignSGD) at lr 5e-3 / sqrt(F / 2^14),
unit-norm decoder with the parallel gradient removed, b_dec at the first batch's mean, FVU loss,
no AuxK: its ``fvu`` training step on stored rows), ``saelens`` (TopKTrainingSAE and its
SAETrainer with a data provider: Adam at 3e-4, AuxK 1.0, decoder-norm rescaling, its defaults)
or ``torch`` (the bare loop: nn.Linear encoder and decoder, TopK, MSE, Adam at 1e-3).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn


def batches(train: np.ndarray, batch: int, seed: int) -> Iterator[Tensor]:
    """The same shuffled batches for every peer: a seeded permutation per pass over the rows."""
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        for s in range(0, len(order) - batch + 1, batch):
            yield torch.from_numpy(np.ascontiguousarray(train[np.sort(order[s:s + batch])]))
        epoch += 1


Reconstruct = Callable[[Tensor], tuple[Tensor, Tensor]]
"""x [B, D] -> (x_hat [B, D], latent activations [B, F] dense)."""


def train_sparsify(data: Iterator[Tensor], d: int, args: argparse.Namespace
                   ) -> tuple[Reconstruct, Tensor]:
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SaeConfig, SparseCoder
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(args.seed)
    sae = SparseCoder(d, SaeConfig(expansion_factor=args.expansion, k=args.k))
    lr = 5e-3 / (sae.num_latents / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD([{"params": sae.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
    for step in range(args.steps):
        x = next(data)
        if step == 0:
            sae.b_dec.data = x.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    opt.eval()
    sae.set_decoder_norm_to_unit_norm()

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        out = sae(x)
        acts = torch.zeros(len(x), sae.num_latents).scatter_(-1, out.latent_indices,
                                                            out.latent_acts)
        return out.sae_out, acts
    return run, sae.W_dec.detach()


def train_saelens(data: Iterator[Tensor], d: int, args: argparse.Namespace
                  ) -> tuple[Reconstruct, Tensor]:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(args.seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d * args.expansion, k=args.k))
    cfg = SAETrainerConfig(total_training_samples=args.steps * args.batch,
                           train_batch_size_samples=args.batch, lr_end=3e-5)  # lr / 10
    SAETrainer(cfg, sae, data).fit()
    sae.eval()

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        acts = sae.encode(x)
        return sae.decode(acts), acts
    return run, sae.W_dec.detach()


def train_torch(data: Iterator[Tensor], d: int, args: argparse.Namespace
                ) -> tuple[Reconstruct, Tensor]:
    torch.manual_seed(args.seed)
    f = d * args.expansion
    enc, dec = nn.Linear(d, f), nn.Linear(f, d)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        vals, idx = enc(x).topk(args.k, dim=-1)
        acts = torch.zeros(len(x), f).scatter(-1, idx, torch.relu(vals))
        return dec(acts), acts

    for _ in range(args.steps):
        x = next(data)
        loss = (run(x)[0] - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run, dec.weight.detach().T


TOOLS = {"sparsify": train_sparsify, "saelens": train_saelens, "torch": train_torch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tool", choices=sorted(TOOLS))
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    train = np.load(args.train, mmap_mode="r")
    t0 = time.perf_counter()
    run, W_dec_FD = TOOLS[args.tool](batches(train, args.batch, args.seed), train.shape[1], args)
    seconds = time.perf_counter() - t0
    x_eval = torch.from_numpy(np.load(args.eval))
    x_hat, fired, l0 = [], torch.zeros(W_dec_FD.shape[0]), []
    with torch.no_grad():
        for s in range(0, len(x_eval), 2048):
            xh, acts = run(x_eval[s:s + 2048])
            x_hat.append(xh.float())
            fired += (acts > 0).sum(0).float()
            l0.append((acts > 0).sum(-1).float())
    save_file({"x_hat": torch.cat(x_hat).contiguous(), "fired_F": fired,
               "l0_N": torch.cat(l0), "W_dec_FD": W_dec_FD.float().contiguous()}, args.out)
    print(json.dumps({"tool": args.tool, "train_seconds": round(seconds, 2),
                      "steps": args.steps, "batch": args.batch}))


if __name__ == "__main__":
    main()
