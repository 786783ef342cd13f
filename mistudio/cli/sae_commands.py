"""CLI commands for sparse autoencoders: train, list, evaluate, import and export."""

from __future__ import annotations

import argparse
import itertools
import os
from typing import Any

from mistudio.cli.config_args import Option, add_config, config_kwargs
from mistudio.cli.output import cli_task, emit, fmt_dict, fmt_num, table
from mistudio.core.activations.massive import ev_phrase
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.store.workspace import Workspace

CLI_ARCHITECTURES = ("skip", "transcoder")
"""Two names the CLI maps onto architectures: skip (ReLU + alpha x) and transcoder (TopK)."""
SWEEP = {"architecture": "arch", "expansion": "expansion", "k": "k",
         "sparsity_coefficient": "l", "target_l0": "targetl0", "lr": "lr",
         "optimizer": "optimizer"}
"""Fields that may list several values (a sweep), and their short names in sweep names."""


def train_configs(args: argparse.Namespace) -> list[tuple[Any, str]]:
    """Every combination of the listed values, each with a name that says what varies."""
    from mistudio.core.sae.train_config import TrainConfig

    base = config_kwargs(args, TrainConfig, skip=tuple(SWEEP))
    lists = {k: getattr(args, k) for k in SWEEP if getattr(args, k)}
    varying = [k for k, v in lists.items() if len(v) > 1]
    out = []
    for combo in itertools.product(*lists.values()):
        kw = {**base, **dict(zip(lists, combo, strict=True))}
        arch = kw.get("architecture")
        if arch == "skip":  # the spec's skip SAE: ReLU + alpha * x
            kw["architecture"] = "relu"
            kw.setdefault("skip", "fixed")
        elif arch == "transcoder":
            if not args.target_hook:
                raise MiStudioError("A transcoder needs the hook point it reconstructs.",
                                    "Give «target_hook» (e.g. «hook=layers.6.mlp_in» and "
                                    "«target_hook=layers.6.mlp_out»).")
            kw["architecture"] = "topk"
        cfg = TrainConfig(**kw)
        name = args.name or f"{cfg.activations}.{cfg.architecture}"
        suffix = "-".join(f"{SWEEP[k]}{v}" for k, v in zip(lists, combo, strict=True)
                          if k in varying)
        out.append((cfg, f"{name}-{suffix}" if suffix else name))
    return out


def cmd_train(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.sae.checkpoints import CHECKPOINT
    from mistudio.core.sae.trainer import MANY_PASSES, passes_note, train_saes

    runs = train_configs(args)
    if args.resume:
        missing = [n for _, n in runs if not (ws.partial_path("sae", n) / CHECKPOINT).is_file()]
        if missing:
            raise MiStudioError(f"No interrupted training run named {missing[0]!r} to resume.",
                                "Drop «resume» to start it, or check the name with "
                                "`mistudio saes list`.")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        manifests = train_saes(ws, runs, overwrite=args.overwrite)
        return
    with cli_task(args) as task:
        manifests = train_saes(ws, runs, task, overwrite=args.overwrite)
    lines = []
    for m in manifests:
        s = m.summary
        lines.append(f"SAE {m.name}: {s.architecture}, {s.d_in} -> {s.d_sae}, "
                     f"{s.steps:,} steps on {s.tokens:,} tokens; {ev_phrase(s)}, "
                     f"L0 {s.l0:.1f}, dead {s.dead_fraction:.1%} (of the latents, on "
                     f"{s.eval_tokens:,} held-out tokens).")
        if s.passes is not None and s.passes > MANY_PASSES:
            lines.append("Note: " + passes_note(s.passes, s.train_rows, s.steps,
                                                s.tokens // max(s.steps, 1)))
    emit(args, manifests[0] if len(manifests) == 1 else manifests, "\n".join(lines))


def cmd_saes(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "list":
        arts = ws.catalog.list("sae")
        emit(args, arts, lambda _: table(
            [[a.name, a.summary.architecture or a.config.get("architecture"),
              a.summary.hook, a.summary.d_sae,
              fmt_num(a.summary.explained_variance), fmt_num(a.summary.l0),
              a.status] for a in arts],
            ["NAME", "ARCH", "HOOK", "D_SAE", "EV", "L0", "STATUS"]))
    elif args.action == "show":
        art = ws.catalog.get("sae", args.name)
        emit(args, art, lambda _: fmt_dict(
            {"name": art.name, "status": art.status, "path": art.path,
             "summary": art.summary.to_json()}))
    elif args.action == "releases":
        from mistudio.core.sae.releases import list_saes, releases

        if args.release or args.search:
            saes = list_saes(args.model, args.release, args.search)
            emit(args, [s.__dict__ for s in saes], lambda _: table(
                [[s.release, s.sae_id, s.hook, s.d_sae, fmt_num(s.l0)] for s in saes],
                ["RELEASE", "SAE ID", "HOOK", "D_SAE", "L0"]) + f"\n{len(saes)} SAEs.")
        else:
            rows = [r for r in releases() if not args.model or
                    args.model.lower() in r["model"].lower()]
            emit(args, rows, lambda _: table(
                [[r["release"], r["model"], r["saes"], ",".join(r["hooks"]), r["title"]]
                 for r in rows], ["RELEASE", "MODEL", "SAES", "HOOKS", "WHAT"])
                + "\nList one release's SAEs with --release NAME; pull one with "
                "`mistudio saes pull RELEASE SAE_ID --online`.")
    elif args.action == "pull":
        from mistudio.core.sae.releases import pull_sae

        with cli_task(args) as task:
            m = pull_sae(ws, args.release, args.sae_id, args.name, args.model, task,
                         args.overwrite)
        s = m.summary
        emit(args, m, f"Pulled {args.release} {args.sae_id} as SAE {m.name}: "
             f"{s.architecture} {s.d_in} -> {s.d_sae} at {s.hook} of "
             f"{m.provenance.model}. Next: `mistudio eval {m.name}`.")
    elif args.action == "remove":
        from mistudio.core.features.carry import remove_sae

        r = remove_sae(ws, args.name)
        emit(args, r, f"Removed SAE {args.name}" + (
            f" and its analyses ({', '.join(r['analyses_removed'])})" if r["analyses_removed"]
            else "") + "." + "".join(f" Their labels are kept in {p}." for p in
                                     r["labels_archived"]))


def cmd_eval(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.sae.evaluation import evaluate_in_model

    with cli_task(args) as task:
        s = evaluate_in_model(ws, args.sae, args.sequences, device=args.device, task=task)
    model = ws.catalog.get("sae", args.sae).provenance.model
    emit(args, {"sae": args.sae, "model": model, **s.to_json()}, "\n".join([
        f"SAE {args.sae} spliced into {model} at {s.hook} ({s.in_model_tokens:,} held-out "
        "tokens):",
        f"  CE loss  clean {s.ce_loss_clean:.4f}  with SAE {s.ce_loss_sae:.4f}  "
        f"zero-ablated {s.ce_loss_zero:.4f}",
        f"  CE loss score {s.ce_loss_score:.3f}   KL divergence {s.kl_div:.4f}",
        f"  {ev_phrase(s)}   L0 {_num(s.l0, '.1f')}   dead {_num(s.dead_fraction, '.1%')}"]
        + ([f"  {s.massive_passed_through:,} massive tokens passed through unchanged"]
           if s.massive_passed_through else [])))


def _num(value: float | None, fmt: str) -> str:
    """A figure that an imported SAE may not have (no held-out evaluation)."""
    return "n/a" if value is None else format(value, fmt)


def cmd_import(args: argparse.Namespace, ws: Workspace) -> None:
    from pathlib import Path

    from mistudio.core.models.registry import ensure_embedded_model
    from mistudio.core.sae.formats import import_sae

    ensure_embedded_model(ws)
    m = import_sae(ws, Path(args.folder), args.name, args.model, args.hook, args.overwrite)
    s = m.summary
    emit(args, m, lambda m: f"Imported SAE {m.name} ({s.imported_format}): "
         f"{s.architecture} {s.d_in} -> {s.d_sae} at {s.hook} of {m.provenance.model}.")


def cmd_export(args: argparse.Namespace, ws: Workspace) -> None:
    from pathlib import Path

    from mistudio.core.sae.formats import export_sae

    info = export_sae(ws, args.sae, Path(args.out), args.format, args.quantize)
    if args.format == "onnx":
        text = (f"Exported {args.sae} as ONNX (encoder.onnx, sae.onnx) to {info['out']}; "
                f"onnxruntime matches PyTorch within {info['max_abs_diff']:.2g} on "
                f"{info['checked_on']}.")
        if "int8" in info:
            q = info["int8"]
            text += (f"\nINT8 graphs ({', '.join(q['files'])}, {q['bytes_int8'] / 2**20:.1f} MB "
                     f"against {q['bytes_float'] / 2**20:.1f} MB): reconstruction error "
                     f"{q['relative_error']:.1%}, explained variance "
                     f"{q['explained_variance_int8']:.3f} (float "
                     f"{q['explained_variance_float']:.3f}), active latents agreeing "
                     f"{q['active_latents_jaccard']:.0%} (Jaccard).")
    else:
        text = f"Exported {args.sae} in the SAELens layout to {info['out']}."
    emit(args, info, text)


def add_sae_commands(add: Any, actions: Any) -> None:
    """train, saes, import, export, eval."""
    from mistudio.core.sae import architecture_names
    from mistudio.core.sae.train_config import TrainConfig

    arch_names = [*architecture_names(), *CLI_ARCHITECTURES]
    sp = add("train", cmd_train, "train sparse autoencoders (or transcoders) on an activation "
             "set; comma-separated values of --arch, --expansion, --k, --l1, --l0, --target-l0, "
             "--lr and --optimizer train a sweep, every combination in one pass over the data")
    add_config(sp, TrainConfig, {
        "architecture": Option("--arch", sweep=True, choices=arch_names,
                               help=f"{', '.join(arch_names[:-2])} (installed plugins' "
                               "too), skip (ReLU + alpha x) or transcoder (TopK, with "
                               "--target-hook); default topk"),
        "sparsity_coefficient": Option(aliases=("--l1", "--l0"), sweep=True),
        **{f: Option(sweep=True) for f in ("expansion", "k", "target_l0", "lr", "optimizer")}})
    sp.add_argument("--name", help="default: ACTIVATIONS.ARCH (a sweep appends what varies)")
    sp.add_argument("--resume", action="store_true",
                    help="require an interrupted run to continue (re-running resumes anyway)")
    sp.add_argument("--overwrite", action="store_true", help="replace an SAE of that name")
    _saes_command(add, actions)
    sp = add("import", cmd_import, "import an SAE (SAELens, sparsify, Gemma Scope, Llama Scope, "
             "dictionary_learning)")
    sp.add_argument("folder")
    sp.add_argument("--name", required=True)
    sp.add_argument("--model", help="workspace model (default: the one its files name)")
    sp.add_argument("--hook", help="hook point it reads, e.g. layers.15.resid_post (default: "
                    "what its files say)")
    sp.add_argument("--overwrite", action="store_true")
    sp = add("export", cmd_export, "export an SAE (SAELens layout, or ONNX for edge inference)")
    sp.add_argument("sae")
    sp.add_argument("--format", choices=["saelens", "onnx"], default="saelens")
    sp.add_argument("--quantize", choices=["none", "int8"], default="none",
                    help="with --format onnx: also INT8 graphs (onnxruntime), with their error")
    sp.add_argument("--out", required=True)
    sp = add("eval", cmd_eval, "evaluate an SAE spliced into its model (CE loss score, KL)")
    sp.add_argument("sae")
    sp.add_argument("--sequences", type=int, default=32, help="held-out sequences to use")
    sp.add_argument("--device", default="auto")


def _saes_command(add: Any, actions: Any) -> None:
    sp = add("saes", cmd_saes, "list, show and remove SAEs; list and pull published ones")
    acts = actions(sp, cmd_saes)
    a = acts.add_parser("releases", help="published SAEs miStudio can pull (Gemma Scope, "
                        "Llama Scope, ...)")
    a.add_argument("--model", help="only those of this model (part of its id: gemma-2-2b)")
    a.add_argument("--release", help="every SAE of one release")
    a.add_argument("--search", help="words of the release, id or hook point (layer_12 16k)")
    a = acts.add_parser("pull", help="download (with --online) or find in the cache, and "
                        "import, a published SAE")
    a.add_argument("release")
    a.add_argument("sae_id")
    a.add_argument("--name", help="workspace name (default: RELEASE.SAE_ID)")
    a.add_argument("--model", help="workspace model to attach it to (default: the release's)")
    a.add_argument("--overwrite", action="store_true")
