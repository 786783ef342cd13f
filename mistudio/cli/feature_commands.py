"""CLI commands for features: analyze, features (the table), feature (one feature), label."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from mistudio.cli.config_args import Option, add_config, config_kwargs
from mistudio.cli.output import cli_task, emit, table
from mistudio.core.features.formula import Formula
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.store.workspace import Workspace

BEFORE_ATTR = 24  # attribution shown for the last tokens up to the peak
SORT_KEYS = {"freq": "frequency", "max": "max_activation", "mean": "mean_activation",
             "score": "score", "label": "label", "index": "feature"}


def cmd_analyze(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.features.analysis import AnalyzeConfig, analyze
    from mistudio.core.features.carry import describe as describe_kept

    given = config_kwargs(args, AnalyzeConfig)
    with cli_task(args) as task:
        if args.dataset:
            given["activations"] = activations_for_dataset(
                ws, args.sae, args.dataset, AnalyzeConfig(**given).tokens, task)
        m = analyze(ws, AnalyzeConfig(**given), args.name, task, overwrite=args.overwrite)
    s = m.summary
    kept = describe_kept(m.previous_labels)
    emit(args, m, f"Analysed {m.name}: {s.n_tokens:,} tokens, {s.alive:,} live features, "
         f"{s.dead:,} dead, {s.dense:,} dense ({s.tokens_per_s:,.0f} tokens/s). "
         + (f"{kept} " if kept else "") + f"Next: `mistudio features {m.name}`.")


def activations_for_dataset(ws: Workspace, sae: str, dataset: str, tokens: int, task: Any) -> str:
    """Extract the SAE's hook point from another dataset (reused when already there)."""
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations
    from mistudio.core.models.adapters import parse_hook_key

    art = ws.catalog.get("sae", sae)
    model, hook = art.provenance.model, art.summary.hook
    if not model or not hook:
        raise MiStudioError(f"SAE {sae!r} does not record its model and hook point.",
                            "Pass --activations with a matching set instead.")
    layer, site = parse_hook_key(hook)
    name = f"{dataset}.{model}.{layer}.{site}.{tokens}"
    if ws.catalog.find("activations", name) is None:
        task.set_status(f"Extracting {hook} from {dataset}")
        extract_activations(ws, ExtractConfig(model, dataset, (layer,), (site,), max_tokens=tokens),
                            name)
    return name


def warn_if_stale(ws: Workspace, analysis: str) -> None:
    """One warning line when the analysis no longer describes its SAE's weights."""
    from mistudio.core.features.carry import stale_reason

    reason = stale_reason(ws, analysis)
    if reason:
        print(f"warning: analysis {analysis!r} is out of date: {reason}. Run `mistudio "
              f"analyze {analysis} --overwrite` to describe the SAE as it is now (hand labels "
              "are archived with it).", file=sys.stderr)


def cmd_features(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.features.store import open_features

    store = open_features(ws, args.analysis)
    warn_if_stale(ws, args.analysis)
    ranges = {"frequency": (args.min_freq, args.max_freq)}
    if args.min_score is not None:
        ranges["score"] = (args.min_score, None)
    idx = store.select(ranges, args.search, alive_only=not args.all, family=args.family)
    idx = store.order(idx, SORT_KEYS[args.sort], descending=args.sort not in ("label", "index"))
    shown = idx[: args.limit]
    cols = {c: store.column(c) for c in ("frequency", "max_activation", "mean_activation",
                                         "score", "fuzzing", "label", "family")}

    def num(name: str, f: int) -> float | None:
        return None if np.isnan(cols[name][f]) else float(cols[name][f])

    rows = [{"feature": int(f), "frequency": float(cols["frequency"][f]),
             "max_activation": float(cols["max_activation"][f]),
             "mean_activation": float(cols["mean_activation"][f]),
             "score": num("score", f), "fuzzing": num("fuzzing", f),
             "family": cols["family"][f], "label": cols["label"][f]} for f in shown]
    emit(args, {"matching": len(idx), "features": rows}, lambda _: table(
        [[r["feature"], f"{r['frequency']:.4%}", f"{r['max_activation']:.2f}",
          "" if r["score"] is None else f"{r['score']:.2f}",
          "" if r["fuzzing"] is None else f"{r['fuzzing']:.2f}", r["family"][:16],
          r["label"][:60]] for r in rows],
        ["FEATURE", "FREQ", "MAX", "DETECT", "FUZZ", "FAMILY", "LABEL"])
        + f"\n{len(shown):,} of {len(idx):,} matching features.")


def _highlight(tokens: list[str], acts: np.ndarray, marked: int, color: bool) -> str:
    peak = float(acts.max()) if acts.size and acts.max() > 0 else 1.0
    out = []
    for i, (t, a) in enumerate(zip(tokens, acts, strict=True)):
        if a <= 0:
            out.append(t)
        elif color:  # white -> red background by activation; the marked token underlined
            level = round(4 * float(a) / peak)
            code = (231, 224, 217, 210, 203)[level]
            underline = "\x1b[4m" if i == marked else ""
            out.append(f"\x1b[48;5;{code}m\x1b[30m{underline}{t}\x1b[0m")
        else:
            out.append(f"[[{t}]]" if i == marked else f"[{t}]")
    return "".join(out)


def cmd_feature(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.features.examples import FeatureReader, analysis_token_text
    from mistudio.core.features.store import open_features
    from mistudio.core.models.registry import load_tokenizer

    store = open_features(ws, args.analysis)
    warn_if_stale(ws, args.analysis)
    reader = FeatureReader(store.folder)
    model = reader.manifest.provenance.model
    text = analysis_token_text(store.folder, lambda: load_tokenizer(ws, model))
    f = args.index
    store.check_index(f)  # one clear line for an index out of range, before any reading
    top = reader.top_examples(f, args.examples)
    quant = reader.quantile_examples(f, n_bins=5, per_bin=1) if args.quantiles else []
    data = _feature_data(store, reader, text, f, top + quant)
    if (args.ablate or args.attribute) and top:
        data.update(_model_checks(args, ws, store, f, top[0], text))
    color = sys.stdout.isatty() and not args.no_color
    emit(args, data, lambda d: _feature_text(d, args.analysis, store, text, top + quant, color))


def _feature_data(store: Any, reader: Any, text: Any, f: int, shown: list[Any]) -> dict[str, Any]:
    """One feature's numbers, label, logit lens, neighbours, histogram and examples."""
    from mistudio.core.features.store import describe_columns

    info = describe_columns(store, f)
    lb = store.label(f)

    def example(e: Any) -> dict[str, Any]:
        return {"sequence": e.sequence, "kind": e.kind, "activation": e.activation,
                "marked": e.marked, "tokens": text.many(e.token_ids),
                "activations": [round(float(a), 4) for a in e.activations]}

    return {"feature": f, "stats": {k: info[k] for k in ("frequency", "log10_density",
                                                          "max_activation", "mean_activation",
                                                          "dead", "dense")},
            "plugin_columns": {c: info[c] for c in store.plugin_columns},
            "label": lb._asdict() if lb else None,
            "logit_lens": {"promoted": text.many(info["logit_pos_ids"]),
                           "suppressed": text.many(info["logit_neg_ids"])},
            "neighbours": list(zip(info["neighbour_ids"], info["neighbour_cos"], strict=True)),
            "cooccurring": [(i, s) for i, s in zip(info["cooccur_ids"], info["cooccur_score"],
                                                    strict=True) if i >= 0],
            "histogram": reader.histograms[f].tolist(),
            "examples": [example(e) for e in shown]}


def _model_checks(args: argparse.Namespace, ws: Workspace, store: Any, f: int, top: Any,
                  text: Any) -> dict[str, Any]:
    """Ablation over the top contexts and attribution of the top one (they run the model)."""
    from mistudio.core.features.ablation import FeatureModel

    fm = FeatureModel(ws, store.folder)
    out: dict[str, Any] = {}
    if args.ablate:
        out["ablation"] = fm.ablate(f, args.ablate)._asdict()
    if args.attribute:
        att = fm.attribute(f, top.sequence, int(top.positions[top.marked]), args.attribute)
        out["attribution"] = {"sequence": att.sequence, "position": att.position,
                              "method": att.method, "activation": att.activation,
                              "tokens": text.many(att.token_ids[-BEFORE_ATTR:]),
                              "scores": [round(float(v), 4) for v in att.scores[-BEFORE_ATTR:]]}
    return out


def _feature_text(d: dict[str, Any], analysis: str, store: Any, text: Any, shown: list[Any],
                  color: bool) -> str:
    """The feature as lines of text: numbers, label, logit lens, neighbours, examples."""
    s, lb = d["stats"], store.label(d["feature"])
    lines = [f"Feature {d['feature']} of {analysis}: fires on {s['frequency']:.3%} of tokens, "
             f"max {s['max_activation']:.2f}, mean when active {s['mean_activation']:.2f}"
             + (" (dead)" if s["dead"] else "") + (" (dense)" if s["dense"] else "")]
    if d["plugin_columns"]:
        lines.append("Plugins: " + ", ".join(f"{k.replace('_', ' ')} {float(v):.3g}"
                                             for k, v in d["plugin_columns"].items()))
    if lb:
        score = "unscored" if lb.score is None else \
            f"held-out detection {float(np.float32(lb.score)):.2f}"  # as the table rounds it
        if lb.fuzzing is not None:
            score += f", fuzzing {lb.fuzzing:.2f}"
        failed = f", not labelled: {lb.detail}" if lb.status != "ok" else ""
        family = f"{lb.family}; " if lb.family else ""
        lines.append(f"Label: {lb.label}   [{family}{lb.source}, {score}{failed}]")
        formula = Formula.from_text(lb.formula) if lb.formula else None
        if formula is not None:
            lines.append(f"Rule: {formula.shown()}")
    lines.append("Promotes:   " + "  ".join(repr(t) for t in d["logit_lens"]["promoted"]))
    lines.append("Suppresses: " + "  ".join(repr(t) for t in d["logit_lens"]["suppressed"]))
    labels = store.column("label")
    lines.append("Nearest (decoder cosine): " + ", ".join(
        f"{i} ({c:.2f}{': ' + labels[i][:20] if labels[i] else ''})"
        for i, c in d["neighbours"][:5]))
    lines.append("Fires with: " + (", ".join(f"{i} ({c:.2f})" for i, c in d["cooccurring"][:5])
                                   or "(none)"))
    bars = " ▁▂▃▄▅▆▇█"
    h = np.array(d["histogram"], dtype=float)
    if h.max() > 0:
        lines.append("Activations 0 -> max: " + "".join(bars[round(8 * v / h.max())] for v in h))
    lines += _model_check_lines(d)
    lines.append("")
    for e in shown:
        body = _highlight(text.many(e.token_ids), e.activations, e.marked, color)
        lines.append(f"{e.kind:>11} {e.activation:7.2f}  " + body.replace("⏎", "⏎ "))
    return "\n".join(lines)


def _model_check_lines(d: dict[str, Any]) -> list[str]:
    lines = []
    if "ablation" in d:
        a = d["ablation"]
        lines.append(f"Ablation on {len(a['per_context'])} top contexts ({a['tokens']:,} "
                     f"predictions): CE {a['ce_clean']:.4f} -> {a['ce_ablated']:.4f} "
                     f"(change {a['delta']:+.4f})")
    if "attribution" in d:
        a = d["attribution"]
        ranked = sorted(zip(a["tokens"], a["scores"], strict=True), key=lambda p: -abs(p[1]))
        lines.append(f"Tokens driving the peak ({a['method']}): " + ", ".join(
            f"{t!r} {v:+.3f}" for t, v in ranked[:6]))
    return lines


def cmd_map(args: argparse.Namespace, ws: Workspace) -> None:
    import csv
    from pathlib import Path

    from mistudio.core.features.feature_map import MAP_FILE, feature_map
    from mistudio.core.features.store import open_features

    with cli_task(args) as task:
        fmap = feature_map(ws, args.analysis, task, recompute=args.recompute)
    store = open_features(ws, args.analysis)
    if args.csv:
        from mistudio.core.store.files import atomic_write

        out = Path(args.csv).expanduser()
        freq, labels = store.column("frequency"), store.column("label")
        with atomic_write(out, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["feature", "x", "y", "frequency", "label"])
            for i, (x, y) in enumerate(fmap.xy):
                w.writerow([i, f"{x:.5f}", f"{y:.5f}", f"{freq[i]:.6g}", labels[i]])
    emit(args, {"method": fmap.method, "features": len(fmap.xy),
                "file": str(store.folder / MAP_FILE), "csv": args.csv},
         f"Map of {len(fmap.xy):,} features ({fmap.method}) in {store.folder / MAP_FILE}"
         + (f"; CSV in {args.csv}" if args.csv else "") + ".")


def _recover(args: argparse.Namespace, ws: Workspace) -> None:
    from pathlib import Path

    from mistudio.core.features.label_db import recover_labels

    r = recover_labels(Path(ws.catalog.get("features", args.analysis).path))
    emit(args, {"kept_as": str(r.kept_as), "saved": r.saved, "human": r.human},
         f"Recovered {r.saved:,} labels ({r.human:,} written by hand) into a new labels file; "
         f"the damaged one is kept as {r.kept_as}.")


def cmd_label(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.features.labels import LabelConfig, label_features
    from mistudio.core.features.store import human_label, open_features

    if args.recover:
        _recover(args, ws)
        return
    if args.set is not None:
        if args.feature is None:
            raise MiStudioError("--set needs the feature to label.", "Add --feature INDEX.")
        label = human_label(args.feature, args.set)
        store = open_features(ws, args.analysis)
        store.check_index(args.feature)
        store.set_labels([label])
        emit(args, {"feature": args.feature, "label": label.label},
             f"Feature {args.feature}: labelled {label.label!r}.")
        return
    prompt = None
    if args.prompt_file:
        from pathlib import Path

        path = Path(args.prompt_file).expanduser()
        if not path.is_file():
            raise MiStudioError(f"No prompt file at {path}.", "Check --prompt-file.")
        prompt = path.read_text(encoding="utf-8")
    cfg = LabelConfig(**config_kwargs(args, LabelConfig, skip=("prompt",)), prompt=prompt)
    if args.compare:
        _compare(args, ws, cfg)
        return
    with cli_task(args) as task:
        r = label_features(ws, args.analysis, cfg, task)
    emit(args, r, label_run_words(r))


def _compare(args: argparse.Namespace, ws: Workspace, cfg: Any) -> None:
    """Explainers side by side on the same features (nothing stored)."""
    from mistudio.core.features.label_compare import compare_explainers, sample_features

    names = [n.strip() for n in args.compare.split(",") if n.strip()]
    feats = list(cfg.features) or sample_features(ws, args.analysis, cfg.top or 20, cfg.seed)
    with cli_task(args) as task:
        c = compare_explainers(ws, args.analysis, names, feats, cfg, task)
    rows = []
    for i, f in enumerate(c.features):
        for name in c.explainers:
            lb = c.labels[name][i]
            rows.append([f, name, "-" if lb.detection is None else f"{lb.detection:.2f}",
                         "-" if lb.fuzzing is None else f"{lb.fuzzing:.2f}",
                         (lb.label if lb.status == "ok" else f"({lb.detail})")[:70]])
    text = "\n".join(f"note: {n}" for n in c.notes)
    text += ("\n" if text else "") + table(rows, ["feature", "explainer", "detection",
                                                   "fuzzing", "label"])
    summary = c.summary()
    text += "\n" + "\n".join(
        f"{name}: mean detection {s['mean_detection']}, fuzzing {s['mean_fuzzing']}, "
        f"{s['detection_ge_0_7']} of {s['labelled']} reach 0.7" for name, s in summary.items())
    emit(args, {"features": c.features, "summary": summary, "notes": c.notes,
                "labels": {k: [lb._asdict() for lb in v] for k, v in c.labels.items()}}, text)


def label_run_words(r: Any) -> str:
    """A label run's result in a few lines."""
    mean = "n/a" if r.mean_score is None else f"{r.mean_score:.2f}"
    fuzz = "n/a" if r.mean_fuzzing is None else f"{r.mean_fuzzing:.2f}"
    lines = [f"note: {r.note}"] if r.note else []
    lines.append(f"Chose {r.chosen}.")
    lines.append(f"Labelled {r.labelled_now:,} features with {r.explainer} ({r.skipped:,} already "
                 f"labelled" + (f", {r.left:,} left for the next run: out of time" if r.left
                                else "") + ").")
    lines.append(f"{r.score_ge_0_7:,} of {r.scored:,} labels reach 0.7 held-out detection, "
                 f"{r.concept_ge_0_7:,} of them naming a concept; mean detection {mean}, "
                 f"fuzzing {fuzz}.")
    if r.unlabelled:
        lines.append(f"{r.unlabelled:,} features left unlabelled, each with its reason "
                     "(`mistudio feature ANALYSIS INDEX` shows it).")
    if r.concepts and r.concepts != "not used":
        lines.append(f"Linguistic concepts: {r.concepts}.")
    if r.families:
        lines.append("Families: " + ", ".join(f"{k} {v:,}" for k, v in r.families.items()) + ".")
    lines.append(f"See `mistudio features {r.analysis} --sort score`.")
    return "\n".join(lines)


def add_feature_commands(add: Any) -> None:
    """analyze, features, feature, map, label."""
    from mistudio.core.features.analysis import AnalyzeConfig
    from mistudio.core.features.labels import LabelConfig

    sp = add("analyze", cmd_analyze, "run an SAE over tokens: feature statistics, examples, "
             "logit lens, neighbours")
    sp.add_argument("sae")
    add_config(sp, AnalyzeConfig, {"device": Option(default="cpu"),
                                    "top_contexts": Option(aliases=("--top-k",))}, skip=("sae",))
    sp.add_argument("--dataset", help="extract the SAE's hook point from this dataset first")
    sp.add_argument("--name", help="analysis name (default: the SAE's name)")
    sp.add_argument("--overwrite", action="store_true",
                    help="redo it; its labels are carried over (same SAE weights) or archived")
    _browse_commands(add)
    sp = add("label", cmd_label, "describe features automatically (or set one label by hand)")
    sp.add_argument("analysis")
    add_config(sp, LabelConfig, {"features": Option(metavar="INDEX")}, skip=("prompt",))
    sp.add_argument("--prompt-file", help="your explainer prompt, with {examples} in it")
    sp.add_argument("--feature", type=int, help="with --set: the feature to label")
    sp.add_argument("--set", help="your own label for --feature")
    sp.add_argument("--compare", metavar="EXPLAINERS",
                    help="comma-separated explainers (e.g. concept,pattern,endpoint:MODEL) "
                         "side by side on the same features (--features, or --top N at random; "
                         "default 20); nothing is stored")
    sp.add_argument("--recover", action="store_true",
                    help="recover a damaged labels file: it is kept aside, and every label it "
                         "still holds goes into a new one")


def _browse_commands(add: Any) -> None:
    sp = add("features", cmd_features, "list, filter, sort and search the features of an "
             "analysis")
    sp.add_argument("analysis")
    sp.add_argument("--sort", choices=list(SORT_KEYS), default="freq")
    sp.add_argument("--search", help="words in the label (prefix match)")
    sp.add_argument("--min-freq", type=float)
    sp.add_argument("--max-freq", type=float)
    sp.add_argument("--min-score", type=float, help="held-out detection at least this")
    sp.add_argument("--family", help="only labels of this family (quotes, negation, names, ...)")
    sp.add_argument("--all", action="store_true", help="include dead features")
    sp.add_argument("--limit", type=int, default=30)
    sp = add("feature", cmd_feature, "one feature: examples, logit lens, neighbours, label")
    sp.add_argument("analysis")
    sp.add_argument("index", type=int)
    sp.add_argument("--examples", type=int, default=10)
    sp.add_argument("--quantiles", action="store_true", help="also examples from 5 quantiles")
    sp.add_argument("--no-color", action="store_true")
    sp.add_argument("--ablate", type=int, nargs="?", const=10, metavar="CONTEXTS",
                    help="loss change with the feature removed, on its top contexts")
    sp.add_argument("--attribute", nargs="?", const="grad", choices=["grad", "ig"],
                    help="input tokens driving its top example (activation x gradient, or "
                    "integrated gradients)")
    sp = add("map", cmd_map, "2D map (UMAP) of the features' decoder directions")
    sp.add_argument("analysis")
    sp.add_argument("--csv", help="also write feature,x,y,frequency,label to this file")
    sp.add_argument("--recompute", action="store_true")
