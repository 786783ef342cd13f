"""Analysis throughput on the embedded model: the streaming pass against the SAE encode alone.

On the middle layer of the embedded model over the built-in corpus, with an SAE of 4608
features (trained here for 200 steps if the workspace has none), it times in one process:

- the analysis pass (``_stream``: encode, sparse store, per-feature sums, streaming top-k);
- the encode alone over the same rows (read from the store, ``sae.encode``, nothing kept);

interleaved and repeated, medians. Target: bookkeeping costs at most 50% on top of the encode
(``ratio_vs_encode`` >= 0.67). Also reports the whole ``analyze`` call (with indexing, logit
lens, neighbours and co-occurrence). Prints one JSON object.

    python benchmarks/analyze.py [--tokens 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mistudio.core.activations.store import open_activations
from mistudio.core.features.analysis import AnalyzeConfig, _stream, _whole_sequences, analyze
from mistudio.core.runtime.tasks import silent_task
from mistudio.core.sae.io import open_sae
from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare_sae
except ImportError:  # run as a script from benchmarks/
    from quality import prepare_sae  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ws = Workspace(args.workspace)
    acts_name, sae_name = prepare_sae(ws)
    sae, _ = open_sae(ws, sae_name)
    hook = ws.catalog.get("sae", sae_name).summary.hook
    acts = open_activations(ws, acts_name)
    n = _whole_sequences(acts, min(args.tokens, acts.n_rows))
    cfg = AnalyzeConfig(sae_name, acts_name, n)

    @torch.no_grad()
    def encode_only() -> float:
        t = time.perf_counter()
        for start in range(0, n, cfg.block_rows):
            x = torch.from_numpy(acts.rows(hook, start, min(start + cfg.block_rows, n)))
            sae.encode(x)
        return time.perf_counter() - t

    def stream() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            _stream(sae, acts, hook, n, cfg, Path(tmp), silent_task())
            return time.perf_counter() - t

    encode_only()  # warm the page cache and the kernels
    enc, ana = [], []
    for _ in range(args.repeats):
        enc.append(encode_only())
        ana.append(stream())
    t = time.perf_counter()
    m = analyze(ws, cfg, "analyze-bench", overwrite=True)
    full = time.perf_counter() - t
    out = {"tokens": n, "d_sae": sae.cfg.d_sae, "threads": torch.get_num_threads(),
           "tokens_per_s": round(n / statistics.median(ana)),
           "encode_tokens_per_s": round(n / statistics.median(enc)),
           "ratio_vs_encode": round(statistics.median(enc) / statistics.median(ana), 3),
           "bookkeeping_overhead": round(statistics.median(ana) / statistics.median(enc) - 1, 3),
           "analyze_wall_s": round(full, 2), "analyze_tokens_per_s": round(n / full),
           "stored_entries": m.summary.n_entries,
           "runs": {"encode_s": [round(x, 3) for x in enc], "stream_s": [round(x, 3) for x in ana]}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
