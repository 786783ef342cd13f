"""CLI commands for steering: steer (side by side) and presets."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from mistudio.cli.config_args import Option, add_config, config_kwargs
from mistudio.cli.output import cli_task, emit, table
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.store.workspace import Workspace


def parse_feature(text: str) -> tuple[int, float]:
    """``123=+4``, ``77=-2`` or ``5`` (coefficient 0, for ablate)."""
    idx, _, coef = text.partition("=")
    try:
        return int(idx), float(coef) if coef else 0.0
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected INDEX=COEFFICIENT like 123=+4, got {text!r}"
                                         ) from err


def _spec_from_args(args: argparse.Namespace, ws: Workspace) -> Any:
    from mistudio.core.steering.generate import GenerationConfig
    from mistudio.core.steering.interventions import Intervention
    from mistudio.core.steering.presets import load_preset
    from mistudio.core.steering.session import SteeringSpec

    gen = GenerationConfig(**config_kwargs(args, GenerationConfig))
    if args.preset and not args.feature:
        spec = load_preset(ws, args.preset)
        return SteeringSpec(spec.saes, spec.interventions, spec.strength, spec.units, spec.model,
                            gen if args.override_sampling else spec.generation)
    if not args.sae:
        raise MiStudioError("No SAE to steer with.", "Pass --sae NAME (or --preset NAME).")
    bare = [str(i) for i, c in (args.feature or []) if c == 0]
    if bare and args.method == "add":  # adding 0 changes nothing: a forgotten coefficient
        raise MiStudioError(f"Feature {bare[0]} has no coefficient, so adding it changes nothing.",
                            f"Give one, e.g. --feature {bare[0]}=+8 (or --method ablate).")
    ivs = tuple(Intervention(i, c, args.method, args.sae) for i, c in (args.feature or []))
    saes = (args.sae, *[w for w in (args.watch or []) if w != args.sae])
    return SteeringSpec(saes, ivs, **config_kwargs(args, SteeringSpec,
                                                   skip=("saes", "interventions", "generation")),
                        generation=gen)


def _mark_diff(tokens_a: list[str], tokens_b: list[str], color: bool) -> tuple[str, str]:
    """Both texts with the tokens after the first difference marked."""
    first = next((i for i, (a, b) in enumerate(zip(tokens_a, tokens_b, strict=False)) if a != b),
                 min(len(tokens_a), len(tokens_b)))

    def render(tokens: list[str]) -> str:
        head, tail = "".join(tokens[:first]), "".join(tokens[first:])
        if not tail:
            return head
        return head + (f"\x1b[1;31m{tail}\x1b[0m" if color else f"[[{tail}]]")

    return render(tokens_a), render(tokens_b)


def cmd_steer(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.steering.presets import rate, save_preset
    from mistudio.core.steering.session import run_steering

    if args.rate and not (args.save or args.preset):
        raise MiStudioError("A rating is stored with a preset.",
                            "Add --save NAME (or --preset NAME) to --rate.")
    spec = _spec_from_args(args, ws)
    with cli_task(args) as task:
        r = run_steering(ws, spec, args.prompt, task, args.device)
    if args.save:
        save_preset(ws, args.save, spec, overwrite=True)
    if args.rate:
        rate(ws, args.save or args.preset, r, args.rate)
    tok_text = _tokens_text(ws, spec, r)

    def render(r: dict[str, Any]) -> str:
        color = sys.stdout.isatty()
        plain, steered = _mark_diff(*tok_text, color)
        width = shutil.get_terminal_size((100, 20)).columns
        lines = [f"Prompt: {r['prompt']}"]
        if width >= 100:  # side by side
            col = (width - 3) // 2
            # newlines shown as ⏎: a feature whose effect is a line break must show it
            left = textwrap.wrap("UNSTEERED: " + plain.replace("\n", "⏎ "), col) or [""]
            right = textwrap.wrap("STEERED: " + steered.replace("\n", "⏎ "), col) or [""]
            for i in range(max(len(left), len(right))):
                a = left[i] if i < len(left) else ""
                b = right[i] if i < len(right) else ""
                lines.append(f"{a:<{col}} | {b}")
        else:
            lines += ["UNSTEERED:", plain, "", "STEERED:", steered]
        for side in ("plain", "steered"):
            if r[side]["error"]:
                lines.append(f"{side}: {r[side]['error']}")
        div = r["diverges_at"]
        lines.append("")
        lines.append(f"Diverges at token {div}" if div is not None else "Identical outputs")
        lines.append(f"KL(steered || unsteered) mean {r['kl_mean']:.4f}; perplexity under the "
                     f"unsteered model: plain {r['perplexity_plain']:.2f}, steered "
                     f"{r['perplexity_steered']:.2f}; similarity {r['similarity']:.3f}")
        for key, v in r["feature_activations"].items():
            lines.append(f"Feature {key.split('#')[1]} mean activation: plain {v.get('plain', 0):.2f}"
                         f" -> steered {v.get('steered', 0):.2f}")
        if r["gained"]:
            j = r["diverges_at"] or 0
            if j < len(r["gained"]):
                lines.append(f"At token {j}: gained " + ", ".join(
                    f"{t!r} +{v:.2f}" for t, v in r["gained"][j]) + "; lost " + ", ".join(
                    f"{t!r} -{v:.2f}" for t, v in r["lost"][j]))
        return "\n".join(lines)

    if r["steered"]["error"] or r["plain"]["error"]:  # the text so far, then one error line
        if not args.json:
            print(render(r))
        raise MiStudioError(r["steered"]["error"] or r["plain"]["error"],
                            "Use smaller coefficients (a feature's max activation is a good "
                            "scale: `mistudio feature ANALYSIS INDEX` shows it).")
    emit(args, r, render)


def _tokens_text(ws: Workspace, spec: Any, r: dict[str, Any]) -> tuple[list[str], list[str]]:
    from mistudio.core.models.registry import load_tokenizer

    art = ws.catalog.get("sae", spec.saes[0])
    tok = load_tokenizer(ws, spec.model or art.provenance.model)
    return ([tok.decode([t]) for t in r["plain"]["token_ids"]],
            [tok.decode([t]) for t in r["steered"]["token_ids"]])


def cmd_presets(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.steering import presets

    if args.action != "list" and not args.name:
        raise MiStudioError(f"`presets {args.action}` needs a preset name"
                            + (" (import: a file)." if args.action == "import" else "."),
                            "See `mistudio presets list`.")
    if args.action == "list":
        items = presets.list_presets(ws)
        emit(args, items, lambda _: table([[p["name"], ",".join(p.get("saes", [])),
                                            p.get("features", ""), p.get("ratings", ""),
                                            p.get("note", "")] for p in items],
                                          ["NAME", "SAES", "FEATURES", "RATINGS", "NOTE"]))
    elif args.action == "show":
        data = presets.load_preset_data(ws, args.name)
        emit(args, data, lambda d: "\n".join(
            [f"{d['name']}: {', '.join(d['spec']['saes'])}, strength {d['spec']['strength']}, "
             f"units {d['spec']['units']}"]
            + [f"  feature {i['feature']} {i['method']} {i['coefficient']:+g}"
               for i in d["spec"]["interventions"]]
            + [f"  rating: {x['better']} ({x.get('comment', '')})" for x in d.get("ratings", [])]))
    elif args.action == "delete":
        presets.delete_preset(ws, args.name)
        emit(args, {"deleted": args.name}, f"Deleted preset {args.name}.")
    elif args.action == "export":
        out = presets.export_preset(ws, args.name, Path(args.file))
        emit(args, {"exported": str(out)}, f"Exported preset {args.name} to {out}.")
    elif args.action == "import":
        data = presets.import_preset(ws, Path(args.name), args.as_name, args.overwrite)
        emit(args, data, f"Imported preset {data['name']}.")
    elif args.action == "save":
        spec = _spec_from_args(args, ws)
        presets.save_preset(ws, args.name, spec, args.note or "", args.overwrite)
        emit(args, {"saved": args.name}, f"Saved preset {args.name}.")


def parse_scorer_feature(text: str) -> tuple[str, int]:
    """``SAE:INDEX`` (a feature to score the activation of)."""
    sae, _, idx = text.rpartition(":")
    try:
        return sae, int(idx)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected SAE:INDEX like my-sae:123, got {text!r}"
                                         ) from err


def cmd_steer_eval(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.steering.evaluate import SteerEvalConfig, evaluate_steering
    from mistudio.core.steering.presets import add_evaluation
    from mistudio.core.steering.scorers import load_prompts

    spec = _spec_from_args(args, ws)
    cfg = SteerEvalConfig(tuple(load_prompts(args.prompts)),
                          **config_kwargs(args, SteerEvalConfig, skip=("prompts",)))
    with cli_task(args) as task:
        result = evaluate_steering(ws, spec, cfg, task, args.device)
    data = result.to_dict()
    saved = ""
    if args.preset and args.keep:
        n = add_evaluation(ws, args.preset, data)
        saved = f"\nKept with preset {args.preset} ({n} evaluation{'s' if n != 1 else ''})."
    emit(args, data, lambda d: eval_report(d) + saved)


def eval_report(d: dict[str, Any]) -> str:
    """The evaluation as text: per strength, each scorer's change and the perplexity cost;
    then the best and worst continuations at the last strength."""
    cfg = d["config"]
    lines = [f"{len(cfg['prompts'])} prompts x {cfg['samples']} samples x {cfg['max_tokens']} "
             f"tokens per side; {d['tokens_generated']:,} tokens in {d['seconds']:.0f} s."]
    rows = []
    for p in d["points"]:
        for s in p["scores"]:
            rel = f"{s['relative']:+.0%}" if s["relative"] is not None else ""
            rows.append([f"{p['strength']:g}x", s["scorer"], f"{s['plain']:.4g}",
                         f"{s['steered']:.4g}", f"{s['change']:+.4g}",
                         f"[{s['ci_low']:+.3g}, {s['ci_high']:+.3g}]", rel,
                         f"{p['perplexity_plain']:.2f} -> {p['perplexity_steered']:.2f}"])
    lines.append(table(rows, ["STRENGTH", "SCORER", "PLAIN", "STEERED", "CHANGE", "95% CI",
                              "REL", "PERPLEXITY"]))
    last = d["points"][-1]
    for title, items in (("Steering helped most", last["best"]),
                         ("Steering helped least", last["worst"])):
        lines.append(f"{title} (at {last['strength']:g}x):")
        for e in items[:2]:
            lines.append(f"  {e['prompt']!r}\n    unsteered: {e['plain'].strip()[:100]!r}"
                         f"\n    steered:   {e['steered'].strip()[:100]!r}")
    return "\n".join(lines)


def _spec_options(sp: argparse.ArgumentParser) -> None:
    """The steering spec: SAEs, features, method, strength, units, model."""
    from mistudio.core.steering.session import SteeringSpec

    sp.add_argument("--sae", help="SAE whose features to steer with")
    sp.add_argument("--watch", action="append",
                    help="another SAE (e.g. at a later layer) whose most changed features to "
                    "report; repeatable")
    sp.add_argument("--feature", type=parse_feature, action="append",
                    help="INDEX=COEFFICIENT, repeatable (e.g. --feature 123=+4 --feature 77=-2)")
    sp.add_argument("--method", choices=["add", "clamp", "ablate", "cap"], default="add")
    add_config(sp, SteeringSpec, skip=("saes", "interventions", "generation"))


def _generation_options(sp: argparse.ArgumentParser) -> None:
    from mistudio.core.steering.generate import GenerationConfig

    add_config(sp, GenerationConfig, skip=("steer_prompt",))
    sp.add_argument("--generated-only", dest="steer_prompt", action="store_false", default=None,
                    help="steer only generated tokens, not the prompt")


def add_steer_commands(add: Any) -> None:
    """steer, steer-eval, presets."""
    from mistudio.core.steering.evaluate import SteerEvalConfig

    sp = add("steer", cmd_steer, "generate with and without steering, side by side")
    _spec_options(sp)
    _generation_options(sp)
    sp.add_argument("--prompt", default="The most important thing about Python is")
    sp.add_argument("--preset", help="use a saved preset (with --rate: rate under it)")
    sp.add_argument("--override-sampling", action="store_true",
                    help="with --preset: use this command's sampling settings")
    sp.add_argument("--save", help="save these settings as a preset")
    sp.add_argument("--rate", choices=["plain", "steered", "tie"],
                    help="which side better matches your intent (stored with the preset)")
    sp.add_argument("--device", default="auto")

    sp = add("steer-eval", cmd_steer_eval, "evaluate steering over a prompt set: concept "
             "scores with bootstrap intervals, coherence (perplexity), a strength sweep")
    _spec_options(sp)
    add_config(sp, SteerEvalConfig, {
        "strengths": Option(sweep=True, help="multipliers of the coefficients, e.g. 0.5,1,2 (a "
                            "sweep; default: 1)"),
        "classifier_label": Option("--label", help="the classifier label to score (e.g. "
                                   "toxic)")}, skip=("prompts", "feature_scorers"))
    sp.add_argument("--prompts", default="everyday",
                    help="a built-in set (everyday, python) or a file: .txt, one per line, or "
                    ".jsonl with a prompt field")
    sp.add_argument("--score-feature", dest="feature_scorers", type=parse_scorer_feature,
                    action="append", help="SAE:INDEX whose activation to score (default: the "
                    "steered features)")
    sp.add_argument("--preset", help="evaluate a saved preset")
    sp.add_argument("--override-sampling", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument("--keep", action="store_true", help="with --preset: keep the result with it")
    sp.add_argument("--device", default="auto")

    sp = add("presets", cmd_presets, "list, show, save, delete, export and import presets")
    sp.add_argument("action", choices=["list", "show", "save", "delete", "export", "import"])
    sp.add_argument("name", nargs="?", help="preset name (import: the file)")
    sp.add_argument("file", nargs="?", help="export: file or folder to write")
    sp.add_argument("--as", dest="as_name", help="import: name to save it under")
    sp.add_argument("--note")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--preset", help=argparse.SUPPRESS)
    sp.add_argument("--override-sampling", action="store_true", help=argparse.SUPPRESS)
    _spec_options(sp)
    _generation_options(sp)
