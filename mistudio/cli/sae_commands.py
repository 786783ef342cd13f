"""CLI commands for sparse autoencoders: train, list, evaluate, import and export."""

from __future__ import annotations

import argparse

from mistudio.cli.output import cli_task, emit, fmt_dict, fmt_num, table
from mistudio.core.errors import MiStudioError
from mistudio.core.workspace import Workspace


def cmd_train(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.sae.trainer import TrainConfig, train_sae

    fields = ("hook", "target_hook", "architecture", "expansion", "k", "skip", "steps",
              "batch_size", "lr", "seed", "device", "grad_accumulation", "checkpoint_every",
              "resample_dead_every")
    kwargs = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    if kwargs.get("architecture") == "skip":  # the spec's skip SAE: ReLU + alpha * x
        kwargs["architecture"] = "relu"
        kwargs.setdefault("skip", "fixed")
    elif kwargs.get("architecture") == "transcoder":
        if not args.target_hook:
            raise MiStudioError("A transcoder needs the hook point it reconstructs.",
                                "Pass --target-hook (e.g. --hook layers.6.mlp_in "
                                "--target-hook layers.6.mlp_out).")
        kwargs["architecture"] = "topk"
    if args.l1 is not None or args.l0 is not None:
        kwargs["sparsity_coefficient"] = args.l1 if args.l1 is not None else args.l0
    cfg = TrainConfig(args.activations, **kwargs)
    name = args.name or f"{args.activations}.{cfg.architecture}"
    with cli_task(args) as task:
        m = train_sae(ws, cfg, name, task, overwrite=args.overwrite)
    s = m["summary"]
    emit(args, m, lambda m: f"SAE {m['name']}: {s['architecture']}, {s['d_in']} -> {s['d_sae']}, "
         f"{s['steps']:,} steps on {s['tokens']:,} tokens; explained variance "
         f"{s['explained_variance']:.3f}, L0 {s['l0']:.1f}, dead {s['dead_fraction']:.1%}.")


def cmd_saes(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "list":
        arts = ws.catalog.list("sae")
        emit(args, [a._asdict() for a in arts], lambda _: table(
            [[a.name, a.summary.get("architecture", a.config.get("architecture")),
              a.summary.get("hook"), a.summary.get("d_sae"),
              fmt_num(a.summary.get("explained_variance")), fmt_num(a.summary.get("l0")),
              a.status] for a in arts],
            ["NAME", "ARCH", "HOOK", "D_SAE", "EV", "L0", "STATUS"]))
    elif args.action == "show":
        art = ws.catalog.get("sae", args.name)
        emit(args, art._asdict(), lambda _: fmt_dict(
            {"name": art.name, "status": art.status, "path": art.path, "summary": art.summary}))
    elif args.action == "remove":
        ws.remove("sae", args.name)
        emit(args, {"removed": args.name}, f"Removed SAE {args.name}.")


def cmd_eval(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.sae.evaluation import evaluate_in_model

    with cli_task(args) as task:
        r = evaluate_in_model(ws, args.sae, args.sequences, device=args.device, task=task)
    emit(args, r, lambda r: "\n".join([
        f"SAE {args.sae} spliced into {r['model']} at {r['hook']} ({r['eval_tokens']:,} held-out "
        "tokens):",
        f"  CE loss  clean {r['ce_loss_clean']:.4f}  with SAE {r['ce_loss_sae']:.4f}  "
        f"zero-ablated {r['ce_loss_zero']:.4f}",
        f"  CE loss score {r['ce_loss_score']:.3f}   KL divergence {r['kl_div']:.4f}",
        f"  explained variance {r['explained_variance']:.3f}   L0 {r['l0']:.1f}   "
        f"dead {r['dead_fraction']:.1%}"]))


def cmd_import(args: argparse.Namespace, ws: Workspace) -> None:
    from pathlib import Path

    from mistudio.core.models import ensure_embedded_model
    from mistudio.core.sae.formats import import_sae

    ensure_embedded_model(ws)
    m = import_sae(ws, Path(args.folder), args.name, args.model, args.hook, args.overwrite)
    s = m["summary"]
    emit(args, m, lambda m: f"Imported SAE {m['name']} ({s['imported_format']}): "
         f"{s['architecture']} {s['d_in']} -> {s['d_sae']} at {s['hook']} of {args.model}.")


def cmd_export(args: argparse.Namespace, ws: Workspace) -> None:
    import shutil
    from pathlib import Path

    art = ws.catalog.get("sae", args.sae)
    out = Path(args.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise MiStudioError(f"{out} exists and is not empty.", "Choose a new or empty --out folder.")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from mistudio.core.sae.io import CFG_FILE, EXTRA_FILE, SPARSITY_FILE, WEIGHTS_FILE

    for f in (CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE, EXTRA_FILE):
        if (Path(art.path) / f).exists():
            shutil.copy2(Path(art.path) / f, tmp / f)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    emit(args, {"sae": args.sae, "out": str(out), "format": args.format},
         f"Exported {args.sae} in the SAELens layout to {out}.")
