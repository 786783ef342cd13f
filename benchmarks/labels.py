"""Labels a person can read, on the quick start's SAE: how many features get a concept label
that holds on held-out text, how varied the best ones are, how long labelling everything takes,
and the token explainer against the concept explainer on the same features.

In ``--workspace`` (the quick start is run there first if it has no quick-start analysis) it
drops the cached concept annotations, labels every live feature with the concept explainer
(``label_all_s``: annotating the text and labelling, on this machine's cores), then labels 200
random live features with the token explainer and the concept explainer on the same held-out
windows (``mistudio label --compare``). Every figure is recomputed from the labels file after
the run. Prints one JSON object.

    python benchmarks/labels.py [--workspace DIR] [--compare 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mistudio.core.data.tokenization import open_tokenized
from mistudio.core.features.concepts.annotate import CACHE_DIR
from mistudio.core.features.formula import Formula
from mistudio.core.features.label_compare import compare_explainers, sample_features
from mistudio.core.features.labels import LabelConfig, label_features
from mistudio.core.features.store import open_features
from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.quickstart import QUICKSTART_SAE, QuickstartConfig, run_quickstart

NAMED_FAMILIES = ("quotes", "negation", "names", "numbers", "code keywords", "string literals")


def _from_disk(ws: Workspace, analysis: str) -> dict[str, object]:
    """The judged figures, read back from the labels file."""
    store = open_features(ws, analysis)
    labels = [lb for lb in store.all_labels().values() if lb.source == "concept"]
    ok = [lb for lb in labels if lb.status == "ok" and lb.detection is not None]
    concept = [lb for lb in ok if lb.detection >= 0.7 and lb.formula
               and Formula.from_text(lb.formula).names_concept]  # type: ignore[union-attr]
    best = sorted(ok, key=lambda lb: (-lb.detection, -(lb.fuzzing or 0), lb.feature))[:100]
    families = Counter(lb.family for lb in ok if lb.family)
    good = Counter(lb.family for lb in ok if lb.family and lb.detection >= 0.7)
    return {
        "live_features": int((~store.column("dead")).sum()),
        "labelled": len(ok), "unlabelled": len(labels) - len(ok),
        "unlabelled_reasons": Counter((lb.detail or "").split(" (")[0]
                                      for lb in labels if lb.status != "ok").most_common(3),
        "labels_ge_0_7": sum(lb.detection >= 0.7 for lb in ok),
        "concept_labels_ge_0_7": len(concept),
        "distinct_labels_top100": len({lb.label for lb in best}),
        "top100_min_detection": round(best[-1].detection, 3) if best else None,
        "mean_detection": round(float(np.mean([lb.detection for lb in ok])), 4),
        "mean_fuzzing": round(float(np.mean([lb.fuzzing for lb in ok if lb.fuzzing is not None])),
                              4),
        "families_named": {f: families.get(f, 0) for f in NAMED_FAMILIES},
        "families_named_ge_0_7": {f: good.get(f, 0) for f in NAMED_FAMILIES},
        "families_all": dict(families.most_common()),
        "examples_top": [f"{lb.feature}: {lb.label} ({lb.family}, {lb.detection:.2f}/"
                         f"{lb.fuzzing or 0:.2f})" for lb in best[:12]],
        "examples_concepts": [f"{lb.feature}: {lb.label} ({lb.family}, {lb.detection:.2f})"
                              for lb in sorted(concept, key=lambda lb: -lb.detection)[:12]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "mistudio-bench"))
    p.add_argument("--compare", type=int, default=200, help="features in the comparison")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    t0 = time.perf_counter()
    if ws.catalog.find("features", QUICKSTART_SAE) is None:
        run_quickstart(ws, QuickstartConfig())
    quickstart_s = round(time.perf_counter() - t0, 1)
    folder = open_features(ws, QUICKSTART_SAE).folder
    from mistudio.core.features.examples import FeatureReader

    tokenized = open_tokenized(ws, FeatureReader(folder).manifest.provenance.tokenized)
    shutil.rmtree(tokenized.path / CACHE_DIR, ignore_errors=True)  # time the annotation too
    t1 = time.perf_counter()
    run = label_features(ws, QUICKSTART_SAE, LabelConfig(overwrite=True))
    label_all_s = round(time.perf_counter() - t1, 1)
    out: dict[str, object] = {"analysis": QUICKSTART_SAE, "d_sae": open_features(
        ws, QUICKSTART_SAE).n, "label_all_s": label_all_s, "label_all_target_s": 600,
        "left_for_next_run": run.left, "concepts": run.concepts}
    out.update(_from_disk(ws, QUICKSTART_SAE))
    feats = sample_features(ws, QUICKSTART_SAE, args.compare, seed=0)
    c = compare_explainers(ws, QUICKSTART_SAE, ["pattern", "concept"], feats)
    out["compare_features"] = len(feats)
    out["compare"] = c.summary()
    out["compare_examples"] = [
        {"feature": f, **{name: f"{c.labels[name][i].label} ({c.labels[name][i].detection})"
                          for name in c.explainers}} for i, f in enumerate(feats[:6])]
    out["quickstart_s"] = quickstart_s
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
