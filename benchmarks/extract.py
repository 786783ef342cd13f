"""Extraction throughput and memory on the embedded model, as ratios against baselines.

Prints one JSON object. In one process, on the same batches, it times:

- miStudio's extraction (``extract_activations``: hooks, row selection, float16 chunks on disk);
- (a) a bare forward pass through the same model truncated at the same layer (no hooks, no I/O);
- (b) a full forward pass with ``output_hidden_states=True`` (what a naive extractor does).

Runs are interleaved and repeated, and each figure is the median, so a noisy machine moves all
three alike. Peak RSS is measured in two fresh processes extracting 20k and 200k tokens.

    python benchmarks/extract.py [--layer 15] [--batches 12] [--repeats 3] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.data.datasets import DatasetConfig, add_dataset
from mistudio.core.data.tokenization import TokenizeConfig, open_tokenized, tokenize_dataset
from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model, load_model
from mistudio.core.store.workspace import Workspace

CTX, BATCH = 128, 8


def prepare(ws: Workspace) -> str:
    """The built-in corpus three times over (about 340k tokens), tokenized for the model."""
    ensure_embedded_model(ws)
    if ws.catalog.find("dataset", "bench") is None:
        from pydoc_data import topics

        path = ws.root / "bench_corpus.jsonl"
        texts = [t for _ in range(3) for t in topics.topics.values()]
        path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
        add_dataset(ws, "bench", DatasetConfig(str(path)))
    return tokenize_dataset(ws, TokenizeConfig("bench", EMBEDDED_NAME, CTX)).name


def time_forward(model: torch.nn.Module, batches: list[torch.Tensor], **kwargs: object) -> float:
    """Tokens per second of ``model(input_ids)`` over the batches."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids in batches:
            model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return sum(b.numel() for b in batches) / (time.perf_counter() - t0)


def throughput(ws: Workspace, tok_name: str, layer: int, n_batches: int, repeats: int) -> dict:
    lm = load_model(ws, EMBEDDED_NAME)
    ids, _ = open_tokenized(ws, tok_name).slice(0, n_batches * BATCH)
    batches = [torch.from_numpy(ids[i:i + BATCH].astype(np.int64)) for i in range(0, len(ids), BATCH)]
    base = lm.model.model  # LlamaModel: embeddings, blocks, final norm
    all_layers = base.layers
    truncated = torch.nn.ModuleList(list(all_layers)[: layer + 1])
    rows = n_batches * BATCH * (CTX - 1)  # position 0 is not stored
    cfg = ExtractConfig(EMBEDDED_NAME, tok_name, (layer,), max_tokens=rows, batch_sequences=BATCH)
    ours, trunc, full = [], [], []
    time_forward(lm.model, batches[:1])  # warm-up
    for r in range(repeats):
        base.layers = truncated
        try:
            trunc.append(time_forward(base, batches))
        finally:
            base.layers = all_layers
        m = extract_activations(ws, cfg, f"bench-{r}", overwrite=True, loaded=lm)
        ours.append(m.summary.tokens_per_s)
        full.append(time_forward(lm.model, batches, output_hidden_states=True))
    for r in range(repeats):
        ws.catalog.delete("activations", f"bench-{r}")
        import shutil

        shutil.rmtree(ws.artifact_path("activations", f"bench-{r}"), ignore_errors=True)
    med = {k: statistics.median(v) for k, v in (("ours", ours), ("a", trunc), ("b", full))}
    return {
        "tokens_per_s": round(med["ours"], 1),
        "truncated_forward_tokens_per_s": round(med["a"], 1),
        "full_forward_tokens_per_s": round(med["b"], 1),
        "ratio_vs_truncated_forward": round(med["ours"] / med["a"], 3),
        "ratio_vs_full_forward": round(med["ours"] / med["b"], 3),
        "runs": {"ours": ours, "truncated": trunc, "full": full},
    }


def child_rss(workspace: str, tok_name: str, layer: int, tokens: int) -> None:
    """Run in a fresh process: extract ``tokens`` rows; print peak RSS, and its growth during
    extraction (sampled every 20 ms), in bytes."""
    import threading

    import psutil

    ws = Workspace(workspace)
    lm = load_model(ws, EMBEDDED_NAME)
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    with torch.inference_mode():  # page the weights in, so only extraction's own memory counts
        lm.model(input_ids=torch.ones(1, CTX, dtype=torch.long))
    before = proc.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    extract_activations(ws, ExtractConfig(EMBEDDED_NAME, tok_name, (layer,), max_tokens=tokens),
                        f"rss-{tokens}", overwrite=True, loaded=lm)
    done.set()
    sampler.join()
    from peak_memory import peak_rss_bytes  # benchmarks/ is the script's folder: on sys.path

    print(peak_rss_bytes(), peak[0] - before)


def rss(workspace: str, tok_name: str, layer: int) -> dict:
    peak, growth = {}, {}
    for tokens in (20_000, 200_000):
        res = subprocess.run([sys.executable, __file__, "--workspace", workspace, "--child-rss",
                              str(tokens), "--tokenized", tok_name, "--layer", str(layer)],
                             capture_output=True, text=True, check=True)
        peak[tokens], growth[tokens] = map(int, res.stdout.strip().splitlines()[-1].split())
    return {"peak_rss_20k": peak[20_000], "peak_rss_200k": peak[200_000],
            "rss_ratio_200k_vs_20k": round(peak[200_000] / peak[20_000], 3),
            # The peak above includes loading the model; this is what extraction itself adds.
            "extraction_rss_growth_20k": growth[20_000],
            "extraction_rss_growth_200k": growth[200_000]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tokenized", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        return child_rss(args.workspace, args.tokenized, args.layer, args.child_rss)
    ws = Workspace(args.workspace)
    tok_name = prepare(ws)
    result = {"model": EMBEDDED_NAME, "layer": args.layer, "context_length": CTX,
              "batch_size": BATCH, "threads": torch.get_num_threads(),
              **throughput(ws, tok_name, args.layer, args.batches, args.repeats)}
    if not args.skip_rss:
        result.update(rss(str(ws.root), tok_name, args.layer))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
