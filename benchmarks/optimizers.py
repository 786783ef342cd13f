"""Which optimiser reaches better SAEs per step on the embedded model: Adam or schedule-free
sign-SGD (sparsify's default)?

All variants train in one sweep (the same batches, in the same order) on the middle layer of
the embedded model over the built-in corpus; prints one JSON object with, per variant, the
held-out explained variance, L0 and dead fraction at the end, and the training-batch explained
variance along the way (``ev_curve``: step -> EV), plus ``best`` (highest held-out EV).

    python benchmarks/optimizers.py [--steps 400] [--batch-size 2048] [--arch topk]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mistudio.core.sae.checkpoints import METRICS
from mistudio.core.sae.trainer import TrainConfig, train_saes
from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare
except ImportError:  # run as a script from benchmarks/
    from quality import prepare  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--arch", default="topk")
    p.add_argument("--variants", default="adam,signum,signum:lr=0.003,signum:unit")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    acts = prepare(ws)
    runs = []
    for spec in args.variants.split(","):
        opt, _, extra = spec.partition(":")
        kw: dict[str, object] = {"optimizer": opt}
        for item in filter(None, extra.split(";")):
            if item == "unit":
                kw["unit_norm_decoder"] = True
            else:
                k, v = item.split("=")
                kw[k] = float(v)
        cfg = TrainConfig(acts, architecture=args.arch, steps=args.steps,
                          batch_size=args.batch_size, log_every=25, **kw)  # type: ignore[arg-type]
        name = "opt-" + spec.replace(":", "-").replace("=", "").replace(";", "-")
        runs.append((cfg, name))
    t0 = time.perf_counter()
    manifests = train_saes(ws, runs, overwrite=True)
    out: dict[str, object] = {"steps": args.steps, "batch_size": args.batch_size,
                              "architecture": args.arch, "wall_s": round(time.perf_counter() - t0)}
    results = {}
    for (cfg, name), m in zip(runs, manifests, strict=True):
        s = m.summary
        rows = [json.loads(line) for line in
                (ws.artifact_path("sae", name) / METRICS).read_text().splitlines()]
        results[name] = {"optimizer": cfg.optimizer, "lr": s.lr,
                         "unit_norm_decoder": cfg.unit_norm_decoder,
                         "explained_variance": round(s.explained_variance, 4),
                         "l0": round(s.l0, 2), "dead_fraction": round(s.dead_fraction, 4),
                         "ev_curve": {r["step"]: r["explained_variance"] for r in rows
                                      if r["step"] % 100 == 0 or r["step"] == 25}}
    out["variants"] = results
    out["best"] = max(results, key=lambda n: results[n]["explained_variance"])  # type: ignore[index]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
