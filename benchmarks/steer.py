"""Steering latency on the embedded model: per-token generation time with and without steering.

Same prompt, greedy, KV cache, one process; plain and steered runs interleaved and repeated
(medians). Steering adds two features of an SAE of layer 15 (``add``) plus one ``clamp`` (which
encodes with the SAE at every step). Also times what a UI waits for after a coefficient changes:
building the new interventions, reading the prompt and producing the first steered token.
Targets: overhead at most 5%; under 100 ms per token on this 2-core CPU. One JSON object.

    python benchmarks/steer.py [--tokens 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mistudio.core.models.registry import EMBEDDED_NAME, load_model
from mistudio.core.steering.generate import _cache_argument
from mistudio.core.steering.interventions import Intervention, steering
from mistudio.core.steering.session import Steerer, SteeringSpec
from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare_sae
except ImportError:  # run as a script from benchmarks/
    from quality import prepare_sae  # type: ignore[no-redef]
PROMPT = "The most important thing about Python classes is"


@torch.no_grad()
def generate(loaded: object, ids: torch.Tensor, n: int, sites: dict | None) -> float:
    """ms per generated token after the prompt (prefill not counted)."""
    model = loaded.model  # type: ignore[attr-defined]
    arg = _cache_argument(model)
    if sites:
        for s in sites.values():
            s.reset()

    def step(x: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        if sites:
            with steering(loaded, sites):  # type: ignore[arg-type]
                out = model(input_ids=x, use_cache=True, **{arg: cache})
        else:
            out = model(input_ids=x, use_cache=True, **{arg: cache})
        return out.logits[0, -1].argmax().view(1, 1), getattr(out, arg)

    nxt, cache = step(ids, None)
    t = time.perf_counter()
    for _ in range(n):
        nxt, cache = step(nxt, cache)
    return (time.perf_counter() - t) * 1000 / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ws = Workspace(args.workspace)
    _, sae_name = prepare_sae(ws)
    loaded = load_model(ws, EMBEDDED_NAME, device="cpu")
    spec = SteeringSpec((sae_name,), (Intervention(100, 8.0), Intervention(200, -4.0),
                                 Intervention(300, 5.0, "clamp")))
    steerer = Steerer(ws, spec, loaded=loaded)
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    sites = steerer.sites()
    generate(loaded, ids, 5, None)  # warm-up
    plain, steered = [], []
    for _ in range(args.repeats):
        plain.append(generate(loaded, ids, args.tokens, None))
        steered.append(generate(loaded, ids, args.tokens, sites))
    add_only = steerer.sites(SteeringSpec((sae_name,), spec.interventions[:2]))
    add_ms = statistics.median(generate(loaded, ids, args.tokens, add_only)
                               for _ in range(args.repeats))
    firsts = []
    for coef in (2.0, 4.0, 6.0):  # a slider moves: new interventions, prompt, first token
        t = time.perf_counter()
        new = SteeringSpec((sae_name,), (Intervention(100, coef), *spec.interventions[1:]))
        generate(loaded, ids, 0, steerer.sites(new))
        firsts.append((time.perf_counter() - t) * 1000)
    mp, ms = statistics.median(plain), statistics.median(steered)
    print(json.dumps({
        "model": EMBEDDED_NAME, "threads": torch.get_num_threads(), "tokens": args.tokens,
        "prompt_tokens": int(ids.shape[1]), "interventions": "2 add + 1 clamp at layer 15",
        "ms_per_token_plain": round(mp, 2), "ms_per_token_steered": round(ms, 2),
        "overhead_ratio": round(ms / mp, 3),
        "ms_per_token_steered_add_only": round(add_ms, 2),
        "overhead_ratio_add_only": round(add_ms / mp, 3),
        "first_token_ms_after_change": round(statistics.median(firsts), 1),
        "runs": {"plain": [round(x, 2) for x in plain], "steered": [round(x, 2) for x in steered]},
    }, indent=2))


if __name__ == "__main__":
    main()
