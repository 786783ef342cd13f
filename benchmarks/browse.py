"""Feature-browser speed: open, filter, sort and search 10k and 100k synthetic features through
the same storage code the app uses (``mistudio.core.features.store``).

Each analysis folder gets the numeric table (Arrow) and labels for every feature (SQLite +
FTS5). Times are the median of several repeats, in milliseconds, for: opening the store and
reading the columns the table shows (``open``), a range filter on frequency plus max activation
(``filter``), a sort of all features by frequency (``sort``) and a label search as you type
(``search``), each also through the app's table model and filter bar (``model_*``: the
permutation, the model reset and the first page of rows). Target: under 100 ms each for 100k.
Opening reads the numeric columns and the labels of the first page; all label texts
(``labels_load``), the first sort by label text (``sort_label``, cached until labels change)
and the scores (``score_load``) are timed apart. Prints one JSON object.

    python benchmarks/browse.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mistudio.core.features.store import FeatureStore, Label, write_table

WORDS = ["class", "def", "import", "return", "newline", "the", "string", "number", "bracket",
         "comment", "keyword", "after", "before", "python", "module", "error", "list", "dict"]


def make(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    freq = 10 ** rng.uniform(-6, -0.5, n)
    write_table(folder, {
        "feature": np.arange(n, dtype=np.int32), "frequency": freq.astype(np.float32),
        "log10_density": np.log10(freq).astype(np.float32),
        "max_activation": rng.gamma(2.0, 2.0, n).astype(np.float32),
        "mean_activation": rng.gamma(2.0, 1.0, n).astype(np.float32),
        "dead": rng.random(n) < 0.02, "dense": freq > 0.1,
        "logit_pos_ids": rng.integers(0, 49152, (n, 10), dtype=np.int32),
        "neighbour_ids": rng.integers(0, n, (n, 10), dtype=np.int32)})
    store = FeatureStore(folder)
    labels = [Label(i, " ".join(rng.choice(WORDS, 3)) + f" #{i}", "pattern", "simulation",
                    float(rng.random()), "ok", None) for i in range(n)]
    store.set_labels(labels)


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2), out


def measure(folder: Path, repeats: int) -> dict[str, float]:
    def open_store() -> FeatureStore:
        s = FeatureStore(folder)
        for c in ("frequency", "max_activation", "mean_activation", "dead"):
            s.column(c)
        s.labels_for(s.order(np.arange(s.n), "frequency")[:50])  # the first page
        return s

    def load(what: str) -> None:
        s = FeatureStore(folder)
        s.column(what)

    open_ms, store = timed(open_store, repeats)
    assert isinstance(store, FeatureStore)
    labels_ms, _ = timed(lambda: load("label"), repeats)
    scores_ms, _ = timed(lambda: load("score"), repeats)
    store.column("score")
    sort_score_ms, _ = timed(lambda: store.order(np.arange(store.n), "score"), repeats)
    filter_ms, idx = timed(lambda: store.select(
        {"frequency": (1e-4, 1e-2), "max_activation": (1.0, None)}, alive_only=True), repeats)
    sort_ms, _ = timed(lambda: store.order(np.arange(store.n), "frequency"), repeats)
    search_ms, hits = timed(lambda: store.select(search="brack"), repeats)
    sort_label_ms, _ = timed(lambda: store.order(np.arange(store.n), "label"), repeats)
    return {"open_ms": open_ms, "filter_ms": filter_ms, "sort_ms": sort_ms,
            "search_ms": search_ms, "sort_label_ms": sort_label_ms, "labels_load_ms": labels_ms,
            "score_load_ms": scores_ms, "sort_score_ms": sort_score_ms,
            "filtered": len(idx), "search_hits": len(hits)}  # type: ignore[arg-type]


def measure_model(folder: Path, repeats: int) -> dict[str, float]:
    """The same steps through the app's table model and filter bar (what a user waits for:
    the new permutation, the model reset, and the first page of rows drawn)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 - models need one
    from mistudio.gui.feature_table import COLUMNS, FeatureTableModel, FilterBar

    model = FeatureTableModel()
    bar = FilterBar(model)

    def first_page() -> None:
        for row in range(min(40, model.rowCount())):
            for col in range(len(COLUMNS)):
                model.data(model.index(row, col))

    def open_model() -> None:
        model.set_store(FeatureStore(folder))
        bar.apply()
        first_page()

    def step(set_up) -> float:  # type: ignore[no-untyped-def]
        ms, _ = timed(lambda: (set_up(), bar.apply(), first_page()), repeats)
        return ms

    open_ms, _ = timed(open_model, repeats)
    out = {"model_open_ms": open_ms,
           "model_filter_ms": step(lambda: bar.min_freq.setValue(0.01)),
           "model_search_ms": step(lambda: bar.search.setText("brack")),
           "model_sort_ms": 0.0}
    bar.search.clear()
    bar.min_freq.setValue(0.0)
    bar.apply()
    score = [k for k, _ in COLUMNS].index("score")
    freq = [k for k, _ in COLUMNS].index("frequency")
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        model.sort(score if i % 2 == 0 else freq)  # a real change of order every time
        first_page()
        times.append((time.perf_counter() - t) * 1000)
    out["model_sort_ms"] = round(statistics.median(times), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, tag in ((10_000, "10k"), (100_000, "100k")):
            folder = Path(tmp) / tag
            t = time.perf_counter()
            make(folder, n)
            out[f"build_s_{tag}"] = round(time.perf_counter() - t, 2)
            for k, v in {**measure(folder, args.repeats),
                         **measure_model(folder, args.repeats)}.items():
                out[f"{k.replace('_ms', '')}_ms_{tag}" if k.endswith("_ms") else f"{k}_{tag}"] = v
    out["target_ms"] = 100
    out["meets_target_100k"] = all(out[f"{k}_ms_100k"] < 100  # type: ignore[operator]
                                   for k in ("open", "filter", "sort", "search", "model_open",
                                             "model_filter", "model_sort", "model_search"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
