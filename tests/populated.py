"""A workspace shaped like one a person has used for a while, built from the toy model.

What the quick start leaves and more: an SAE of 4,096 features, every live one labelled with
the kind of text real labels have (quotes, arrows, long phrases), past training runs of
several architectures, the built-in models beside the toy one, two datasets with long names.
Layout tests on an empty or tiny workspace pass while this one cuts every label.
"""

from __future__ import annotations

import numpy as np

from mistudio.core.store.workspace import Workspace

LABELS = (
    '"⏎" (newline)',
    'tokens after "a" / "the" / "an" / "|"',
    '"def" at the start of a line, before a function name',
    "closing brackets and parentheses: ) ] }",
    "negation: not, never, no, n't",
    '"self" inside a method body',
    "capitalised words after a full stop (sentence starts)",
    "numbers and digits in version strings",
    '"import" / "from" at the start of a line',
    "words inside double quotes",
)


def populate(ws: Workspace) -> str:
    """Fill ``ws`` (the toy workspace with activation set "acts"); returns the SAE to browse."""
    from toy import small_train_config

    from mistudio.core.data.datasets import DatasetConfig, add_dataset
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.store import Label, open_features
    from mistudio.core.models.registry import ensure_bundled_models
    from mistudio.core.sae.trainer import train_sae

    name = "quickstart-topk"
    train_sae(ws, small_train_config(expansion=128, steps=40), name)
    for arch, suffix in (("relu", "standard-relu-x8"), ("batchtopk", "wide-batchtopk-x16")):
        train_sae(ws, small_train_config(architecture=arch, steps=20), f"{suffix}-run-2")
    analyze(ws, AnalyzeConfig(name, tokens=2000, top_contexts=5))
    store = open_features(ws, name)
    alive = np.flatnonzero(~store.column("dead"))
    rng = np.random.default_rng(0)
    store.set_labels([Label(int(f), LABELS[i % len(LABELS)], "pattern", "detection",
                            float(rng.uniform(0.35, 1.0)), "ok", None)
                      for i, f in enumerate(alive)])
    add_dataset(ws, "lecture-notes-week-12-attention-heads",
                DatasetConfig("builtin:pydoc", max_samples=5))
    ensure_bundled_models(ws)  # smollm2-135m and gemma3-270m beside the toy model
    return name
