"""The built-in real models side by side: first use, extraction, training and steering speed.

For each installed built-in model (SmolLM2-135M, Gemma 3 270M), in one process and one fresh
workspace, the same work a user does at the defaults' shapes:

- ``first_use_s``: the first tokenizer load (dequantizing the GGUF into the workspace cache);
  ``first_use_stages_s`` splits it (reading the GGUF and dequantizing, the tokenizer, writing);
- ``extract_tokens_per_s``: the middle layer's ``resid_post`` over ``--tokens`` tokens of the
  built-in corpus (context 128, float16 storage), as the manifest records it;
- ``train_tokens_per_s``: a TopK SAE (expansion 8, k 32, batch 2,048) for ``--steps`` steps;
- ``steer_ms_per_token``: greedy generation with the KV cache, plain and with one ``add``
  intervention (``benchmarks/steer.py``'s loop), medians of ``--repeats``;
- ``where_the_time_goes``: one forward pass of 8 x 128 tokens through the whole model split into
  the blocks and the unembedding (Gemma's 262,144-token vocabulary), and a prefill with logits
  for every position against the last one only.

Ratios are against SmolLM2 measured in the same run. One JSON object.

    python benchmarks/builtin_models.py [--tokens 4096] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.data.datasets import ensure_builtin_dataset
from mistudio.core.models import registry
from mistudio.core.models.bundled import installed_models
from mistudio.core.runtime.tasks import CallbackTask
from mistudio.core.sae.trainer import TrainConfig, train_sae
from mistudio.core.steering.interventions import Intervention
from mistudio.core.steering.session import Steerer, SteeringSpec
from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.steer import PROMPT, generate
except ImportError:  # run as a script from benchmarks/
    from steer import PROMPT, generate  # type: ignore[no-redef]


def first_use(ws: Workspace, name: str) -> tuple[float, dict[str, float]]:
    stages: dict[str, float] = {}
    last = [time.perf_counter(), ""]

    def on_status(text: str) -> None:
        now = time.perf_counter()
        if last[1]:
            stages[str(last[1])] = round(now - float(last[0]), 1)
        last[:] = [now, text.split(" (")[0]]

    t0 = time.perf_counter()
    registry.load_tokenizer(ws, name, CallbackTask(on_status=on_status))
    on_status("")
    return time.perf_counter() - t0, stages


def extract_speed(ws: Workspace, name: str, layer: int, tokens: int) -> float:
    m = extract_activations(ws, ExtractConfig(name, "pydoc", (layer,), max_tokens=tokens),
                            f"{name}.bench")
    return float(m.summary.tokens_per_s or 0.0)


def train_speed(ws: Workspace, name: str, steps: int) -> tuple[float, str]:
    cfg = TrainConfig(f"{name}.bench", architecture="topk", expansion=8, k=32,
                      batch_size=2048, steps=steps, log_every=steps,
                      checkpoint_every=10 * steps, eval_tokens=1024)
    t0 = time.perf_counter()
    train_sae(ws, cfg, f"{name}.sae", overwrite=True)
    return steps * cfg.batch_size / (time.perf_counter() - t0), f"{name}.sae"


def steer_speed(ws: Workspace, loaded: Any, sae: str, repeats: int) -> dict[str, float]:
    steerer = Steerer(ws, SteeringSpec((sae,), (Intervention(3, 8.0),)), loaded=loaded)
    sites = steerer.sites()
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    generate(loaded, ids, 4, None)  # warm-up
    plain = statistics.median(generate(loaded, ids, 24, None) for _ in range(repeats))
    steered = statistics.median(generate(loaded, ids, 24, sites) for _ in range(repeats))
    return {"plain": round(plain, 1), "steered": round(steered, 1)}


@torch.no_grad()
def where_the_time_goes(loaded: Any) -> dict[str, float]:
    """Seconds for 8 x 128 tokens: the blocks, the unembedding; prefill logits all vs last."""
    model = loaded.model
    ids = torch.randint(100, 5000, (8, 128))
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    t0 = time.perf_counter()
    hidden = base(input_ids=ids).last_hidden_state
    t1 = time.perf_counter()
    model.lm_head(hidden)
    t2 = time.perf_counter()
    prompt = ids[:1, :64]
    model(input_ids=prompt)
    t3 = time.perf_counter()
    model(input_ids=prompt, logits_to_keep=1)
    t4 = time.perf_counter()
    return {"blocks_s": round(t1 - t0, 3), "unembedding_s": round(t2 - t1, 3),
            "prefill_64_all_logits_s": round(t3 - t2, 3),
            "prefill_64_last_logit_s": round(t4 - t3, 3)}


def bench(ws: Workspace, name: str, args: argparse.Namespace) -> dict[str, Any]:
    info = registry.model_info(ws, name)
    first_s, stages = first_use(ws, name)
    layer = info.n_layers // 2
    extract = extract_speed(ws, name, layer, args.tokens)
    train, sae = train_speed(ws, name, args.steps)
    loaded = registry.load_model(ws, name, device="cpu")
    steer = steer_speed(ws, loaded, sae, args.repeats)
    return {"params_m": round(info.n_params / 1e6, 1), "layers": info.n_layers,
            "d_model": info.d_model, "vocab": info.vocab_size, "layer": layer,
            "first_use_s": round(first_s, 1), "first_use_stages_s": stages,
            "extract_tokens_per_s": round(extract), "train_tokens_per_s": round(train),
            "steer_ms_per_token": steer, "where_the_time_goes": where_the_time_goes(loaded)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        ensure_builtin_dataset(ws)
        names = registry.ensure_bundled_models(ws)
        rows = {name: bench(ws, name, args) for name in names}
        ws.close()
    base = rows[registry.EMBEDDED_NAME]
    for row in rows.values():
        row["vs_smollm2"] = {
            "extract": round(row["extract_tokens_per_s"] / base["extract_tokens_per_s"], 2),
            "train": round(row["train_tokens_per_s"] / base["train_tokens_per_s"], 2),
            "steer": round(row["steer_ms_per_token"]["steered"]
                           / base["steer_ms_per_token"]["steered"], 2)}
    print(json.dumps({"threads": torch.get_num_threads(), "tokens": args.tokens,
                      "steps": args.steps, "installed": [m.name for m in installed_models()],
                      "models": rows}, indent=2))


if __name__ == "__main__":
    main()
