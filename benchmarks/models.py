"""Real-size models on this machine without downloads: memory and speed per precision.

Builds models of real families from their published shapes with random weights (saved as
Hugging Face folders in a temporary directory: a random model has the memory and compute of the
real one), registers them in a temporary workspace, and for each precision loads one in a fresh
process through miStudio's own loader, extracts a middle layer from 2 x 128 tokens (truncated
loading: only the blocks up to it are read) and generates 8 steered tokens with a random SAE
there. Each child reports its peak RSS; the planner's estimate for the same load is printed
beside it. Then the faithfulness of int8 on the embedded model at layer 15.

Prints one JSON object; for the Llama-3.2-1B-shaped model, ``peak_rss_gb`` per precision,
``int8_rss_ratio_vs_fp32`` (target <= 0.40) and tokens/s per precision, and
``int8_cosine_embedded`` (target >= 0.99).

    python benchmarks/models.py [--families llama-1b,qwen2-1.5b,gemma2-2b] [--modes ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    # published configurations of the real models (hidden, MLP, layers, heads, KV heads, vocab)
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               tie_word_embeddings=True, rope_theta=500000.0,
                               max_position_embeddings=4096)),
    "qwen2-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                 tie_word_embeddings=True, max_position_embeddings=4096)),
    "gemma2-2b": ("gemma2", dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                                 num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                                 vocab_size=256000, max_position_embeddings=4096)),
    "phi3-mini": ("phi3", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                               max_position_embeddings=4096)),
}
MODES = {"float32": ("float32", "none"), "bfloat16": ("bfloat16", "none"),
         "int8": ("float32", "int8"), "int4": ("float32", "int4")}


def build(family: str, folder: Path) -> float:
    """Save a random model of ``family``'s shape (bfloat16 weights) with a tokenizer; returns
    billions of parameters."""
    import torch
    import transformers as T

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from toy import toy_tokenizer

    model_type, shape = SHAPES[family]
    config = T.AutoConfig.for_model(model_type, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                    **shape)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = T.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)  # ids below 384 are valid in every vocabulary
    del model
    return n / 1e9


def child(folder: str, mode: str, layer: int) -> None:
    """Load through miStudio, extract, steer; print one JSON line (runs in a fresh process)."""
    import torch

    from mistudio.core.models.adapters import hook_key
    from mistudio.core.models.hooks import capture, forward
    from mistudio.core.models.registry import add_model, load_model
    from mistudio.core.sae import SAEConfig, build_sae
    from mistudio.core.steering.generate import GenerationConfig, compare
    from mistudio.core.steering.interventions import Intervention, SiteSteer
    from mistudio.core.store.workspace import Workspace

    torch.set_num_threads(os.cpu_count() or 2)
    dtype, quantize = MODES[mode]
    ws = Workspace(Path(folder).parent / f"ws-{mode}")
    add_model(ws, "m", folder, overwrite=True)
    t0 = time.perf_counter()
    loaded = load_model(ws, "m", "cpu", dtype, quantize=quantize, n_layers=layer + 1)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_gb()
    ids = torch.randint(3, 384, (2, 128), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode(), capture(loaded, [(layer, "resid_post")]) as seen:
        for _ in range(3):
            t = time.perf_counter()
            forward(loaded, ids, torch.ones_like(ids))
            times.append(time.perf_counter() - t)
    acts = seen[hook_key(layer, "resid_post")]
    finite = bool(torch.isfinite(acts).all())
    peak_extract = _rss_gb()  # the figure compared across precisions: load + extract
    del loaded, acts, seen
    gc.collect()
    # steering needs every block: a second, full load (its peak is reported apart)
    lm = load_model(ws, "m", "cpu", dtype, quantize=quantize)
    d = lm.info.d_model
    sae = build_sae(SAEConfig("topk", d_in=d, d_sae=4 * d, k=32))
    sites = {hook_key(layer, "resid_post"): SiteSteer(sae, [Intervention(3, 4.0)], 1.0, 1)}
    t = time.perf_counter()
    compare(lm, sites, "The", GenerationConfig(max_tokens=8))
    steer_ms = (time.perf_counter() - t) / 16 * 1000  # both sides, 8 tokens each
    print(json.dumps({"mode": mode, "load_s": round(load_s, 1),
                      "rss_after_load_gb": round(rss_loaded, 2),
                      "extract_tokens_per_s": round(256 / sorted(times)[1], 1),
                      "steer_ms_per_token": round(steer_ms, 1),
                      "activations_finite": finite,
                      "peak_rss_gb": round(peak_extract, 2),
                      "peak_rss_with_full_model_gb": round(_rss_gb(), 2)}))


def _rss_gb() -> float:
    from peak_memory import peak_rss_bytes  # benchmarks/ is the script's folder: on sys.path

    return peak_rss_bytes() / 2**30


def estimate_gb(folder: Path, mode: str, layer: int) -> float:
    """The planner's weights + activations + runtime for the blocks loaded (no SAE training)."""
    import torch
    import transformers as T

    from mistudio.core.models.quantize import quantized_bytes
    from mistudio.core.models.registry import describe_config
    from mistudio.core.workflows.planner import RUNTIME_BYTES, activation_bytes

    info = describe_config(T.AutoConfig.from_pretrained(folder))
    embed = info.vocab_size * info.d_model
    blocks = (info.n_params - embed) * (layer + 1) / info.n_layers + embed
    dtype, quantize = MODES[mode]
    weights = quantized_bytes(int(blocks), quantize) if quantize != "none" else \
        blocks * torch.finfo(getattr(torch, dtype)).bits // 8
    acts = activation_bytes(info, 256, 128, 4 if dtype == "float32" else 2)
    return round((weights * 1.1 + acts + RUNTIME_BYTES) / 2**30, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="llama-1b,qwen2-1.5b,gemma2-2b")
    p.add_argument("--modes", default="float32,bfloat16,int8,int4")
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "MODE", "LAYER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    out: dict = {"cpu_count": os.cpu_count(), "families": {}}
    with tempfile.TemporaryDirectory(prefix="mistudio-models-") as tmp:
        for family in args.families.split(","):
            folder = Path(tmp) / family
            t = time.perf_counter()
            billions = build(family, folder)
            layers = SHAPES[family][1]["num_hidden_layers"]
            layer = layers // 2
            rows = {"params_b": round(billions, 3), "layer": layer,
                    "build_s": round(time.perf_counter() - t, 1)}
            modes = args.modes.split(",") if family == "llama-1b" else ["bfloat16", "int8"]
            for mode in modes:
                res = subprocess.run([sys.executable, __file__, "--child", str(folder), mode,
                                      str(layer)], capture_output=True, text=True, timeout=3600)
                if res.returncode != 0:
                    rows[mode] = {"error": res.stderr.strip().splitlines()[-1][:300]}
                    continue
                rows[mode] = {**json.loads(res.stdout.strip().splitlines()[-1]),
                              "planner_estimate_gb": estimate_gb(folder, mode, layer)}
                print(f"{family} {mode}: {rows[mode]}", file=sys.stderr)
            out["families"][family] = rows
            _cleanup(folder)
    llama = out["families"].get("llama-1b", {})
    if "float32" in llama and "int8" in llama and "peak_rss_gb" in llama["int8"]:
        out["peak_rss_gb"] = {m: llama[m].get("peak_rss_gb") for m in MODES if m in llama}
        out["tokens_per_s"] = {m: llama[m].get("extract_tokens_per_s") for m in MODES
                               if m in llama}
        out["int8_rss_ratio_vs_fp32"] = round(llama["int8"]["peak_rss_gb"] /
                                              llama["float32"]["peak_rss_gb"], 3)
        out["target_int8_rss_ratio"] = 0.40
    out["int8_cosine_embedded"] = _embedded_cosine()
    print(json.dumps(out, indent=2))


def _embedded_cosine() -> dict:
    from mistudio.core.activations.faithfulness import quantization_faithfulness
    from mistudio.core.models.registry import ensure_embedded_model
    from mistudio.core.store.workspace import Workspace

    ws = Workspace(Path(tempfile.gettempdir()) / "mistudio-bench")
    ensure_embedded_model(ws)
    r = quantization_faithfulness(ws, "smollm2-135m", "int8", recompute=True)
    r4 = quantization_faithfulness(ws, "smollm2-135m", "int4", recompute=True)
    return {"int8_cosine_mean": round(r.cosine_mean, 5), "int8_cosine_min":
            round(r.cosine_min, 5), "int8_relative_error": round(r.relative_error_mean, 4),
            "int4_cosine_mean": round(r4.cosine_mean, 5),
            "int4_relative_error": round(r4.relative_error_mean, 4), "hook": r.hook,
            "tokens": r.tokens, "target": 0.99}


def _cleanup(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    for ws in folder.parent.glob("ws-*"):
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
