"""The README's figures on a CUDA GPU (a consumer card or a Jetson board), in one command.

Runs the main path on the GPU with the embedded model and the built-in corpus: extraction of
layer 15 (bfloat16 where the GPU supports it), training the default TopK SAE (autocast), feature
analysis, and steering (ms per token); then a Llama-3.2-1B-shaped random model extracted in
bfloat16 and int8 with its peak GPU memory. Prints one JSON object naming the device. Without
a CUDA GPU it says so and exits 0.

    python benchmarks/gpu.py [--workspace DIR] [--skip-real-size]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-gpu-bench"))
    p.add_argument("--skip-real-size", action="store_true")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "message": "No CUDA GPU is visible to this torch build "
                          f"({torch.__version__}); nothing was measured."}))
        return
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations
    from mistudio.core.data.datasets import ensure_builtin_dataset
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.models.registry import EMBEDDED_NAME, ensure_embedded_model, load_model
    from mistudio.core.sae.trainer import TrainConfig, train_sae
    from mistudio.core.steering.generate import GenerationConfig
    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.session import Steerer, SteeringSpec
    from mistudio.core.store.workspace import Workspace

    ws = Workspace(args.workspace)
    ensure_embedded_model(ws)
    ensure_builtin_dataset(ws)
    out: dict = {"cuda": True, "device": torch.cuda.get_device_name(0),
                 "torch": torch.__version__, "bf16": torch.cuda.is_bf16_supported()}
    t = time.perf_counter()
    m = extract_activations(ws, ExtractConfig(EMBEDDED_NAME, "pydoc", (15,), batch_sequences=32,
                                              device="cuda"), "gpu-acts", overwrite=True)
    out["extract"] = {"tokens": m.summary.tokens, "tokens_per_s":
                      round(m.summary.tokens_per_s), "wall_s": round(time.perf_counter() - t,
                                                                            1)}
    t = time.perf_counter()
    s = train_sae(ws, TrainConfig("gpu-acts", steps=400, batch_size=4096, device="cuda"),
                  "gpu-sae", overwrite=True).summary
    wall = time.perf_counter() - t
    out["train"] = {"steps": s.steps, "tokens_per_s": round(s.tokens / wall),
                    "explained_variance": round(s.explained_variance, 4), "l0": s.l0,
                    "wall_s": round(wall, 1)}
    t = time.perf_counter()
    a = analyze(ws, AnalyzeConfig("gpu-sae", tokens=100_000, device="cuda"), overwrite=True)
    out["analyze"] = {"tokens_per_s": a.summary.tokens_per_s,
                      "wall_s": round(time.perf_counter() - t, 1)}
    loaded = load_model(ws, EMBEDDED_NAME, "cuda")
    steerer = Steerer(ws, SteeringSpec(("gpu-sae",), (Intervention(1, 4.0),),
                                       generation=GenerationConfig(max_tokens=40)),
                      loaded=loaded)
    steerer.run("The most important thing about Python is")  # warm-up
    t = time.perf_counter()
    steerer.run("The most important thing about Python is")
    out["steer_ms_per_token"] = round((time.perf_counter() - t) / 80 * 1000, 1)
    if not args.skip_real_size:
        out["llama_1b_shaped"] = _real_size(Path(args.workspace))
    print(json.dumps(out, indent=2))


def _real_size(root: Path) -> dict:
    """Extraction of layer 8 of a random Llama-3.2-1B-shaped model: bfloat16 and int8."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from models import build

    from mistudio.core.models.hooks import capture, forward
    from mistudio.core.models.registry import add_model, load_model
    from mistudio.core.store.workspace import Workspace

    folder = root / "llama-1b-shaped"
    if not (folder / "config.json").is_file():
        build("llama-1b", folder)
    ws = Workspace(root)
    add_model(ws, "llama-1b-shaped", str(folder), overwrite=True)
    res = {}
    for mode, (dtype, quantize) in {"bfloat16": ("bfloat16", "none"),
                                    "int8": ("bfloat16", "int8")}.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        lm = load_model(ws, "llama-1b-shaped", "cuda", dtype, quantize=quantize, n_layers=9)
        ids = torch.randint(3, 384, (8, 128), device="cuda")
        with torch.inference_mode(), capture(lm, [(8, "resid_post")]):
            forward(lm, ids, torch.ones_like(ids))
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                forward(lm, ids, torch.ones_like(ids))
            torch.cuda.synchronize()
        res[mode] = {"tokens_per_s": round(5 * ids.numel() / (time.perf_counter() - t)),
                     "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        del lm
    return res


if __name__ == "__main__":
    main()
