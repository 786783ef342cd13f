"""How many features get a good label, with the default explainer and scorer and with the
embedded LLM as explainer and judge.

On an SAE of the embedded model's middle layer (the one ``benchmarks/analyze.py`` trains and
analyses), it labels every live feature with the pattern explainer, scored by simulation on
held-out contexts with hard negatives, then ``--llm-features`` random live features with the
embedded SmolLM2-135M as explainer and detection judge. Prints one JSON object.

    python benchmarks/interp.py [--llm-features 40] [--skip-llm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mistudio.core.features.analysis import AnalyzeConfig, analyze
from mistudio.core.features.labels import LabelConfig, label_features
from mistudio.core.features.store import open_features
from mistudio.core.store.workspace import Workspace

try:
    from benchmarks.quality import prepare_sae
except ImportError:  # run as a script from benchmarks/
    from quality import prepare_sae  # type: ignore[no-redef]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--llm-features", type=int, default=40)
    p.add_argument("--skip-llm", action="store_true")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    acts_name, sae_name = prepare_sae(ws)
    t0 = time.perf_counter()
    analyze(ws, AnalyzeConfig(sae_name, acts_name), "interp-bench", overwrite=True)
    store = open_features(ws, "interp-bench")
    live = store.select(alive_only=True)
    r = label_features(ws, "interp-bench", LabelConfig(top=len(live)))
    out: dict[str, object] = {
        "sae": sae_name, "d_sae": store.n, "live_features": len(live),
        "explainer": "pattern", "scorer": "simulation (held-out, half hard negatives)",
        "features_labelled": r.requested, "features_scored": r.scored,
        "features_score_ge_0_7": r.score_ge_0_7,
        "mean_score": round(r.mean_score, 3) if r.mean_score is not None else None,
        "score_histogram_0_to_1": r.score_histogram,
        "pattern_wall_s": r.wall_s}
    if not args.skip_llm:
        rng = np.random.default_rng(0)
        pick = tuple(int(f) for f in rng.choice(live, size=min(args.llm_features, len(live)),
                                                 replace=False))
        before = store.column("score")[list(pick)]
        r = label_features(ws, "interp-bench", LabelConfig(features=pick, explainer="llm"))
        out.update(llm_explainer=r.explainer, llm_features=len(pick),
                   llm_features_scored=r.scored,
                   llm_features_score_ge_0_7=r.score_ge_0_7,
                   llm_mean_score=round(r.mean_score, 3) if r.mean_score is not None
                   else None,
                   llm_failed=len(pick) - r.scored,
                   pattern_on_same_features_ge_0_7=int(np.nansum(before >= 0.7)),
                   llm_wall_s=r.wall_s)
        store = open_features(ws, "interp-bench")
        out["llm_examples"] = [store.label(f).label for f in pick[:8]]  # type: ignore[union-attr]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
