"""``mistudio``: the scriptable face of the core library.

Every subcommand takes ``--workspace``, ``--json`` and ``--online``. Errors the user can fix
print one line (the problem and the fix) and exit with status 2; Ctrl-C cancels the running job
cleanly (a second Ctrl-C aborts).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mistudio import __version__
from mistudio.core.errors import Cancelled, MiStudioError
from mistudio.core.jobs import CallbackTask, CancelToken
from mistudio.core.workspace import Workspace


class CliProgress:
    """A progress bar on a terminal, or a status line every few seconds in a log."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._status = ""
        self._last_line = 0.0
        self._last_text = ""

    def progress(self, fraction: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=1000, file=sys.stderr, leave=False,
                                 bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
            self._bar.n = int(fraction * 1000)
            self._bar.set_description_str(self._status[:50], refresh=False)
            self._bar.refresh()
        else:
            line = f"[{fraction:4.0%}] {self._status}"
            if line != self._last_text and (time.monotonic() - self._last_line > 5
                                            or fraction >= 1.0):
                self._last_line, self._last_text = time.monotonic(), line
                print(line, file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def cli_task(args: argparse.Namespace) -> Iterator[CallbackTask]:
    """A task wired to the terminal; Ctrl-C sets its cancel token instead of killing the job."""
    bar = CliProgress(enabled=not args.json and not getattr(args, "quiet", False))
    token = CancelToken()

    def on_sigint(_sig: int, _frame: Any) -> None:
        if token.is_set():
            raise KeyboardInterrupt
        token.cancel()
        print("\nCancelling... (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield CallbackTask(bar.progress, bar.status, cancel=token)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str] | str) -> None:
    """Print ``data`` as JSON with --json, else the human-readable text."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text(data) if callable(text) else text)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _fmt_dict(d: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines.append(_fmt_dict(v, indent + 2))
        else:
            lines.append(" " * indent + f"{k}: {v}")
    return "\n".join(lines)


# -- commands -----------------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core import datasets as ds

    if args.action == "add":
        cfg = ds.DatasetConfig(args.source, args.text_column, args.split, args.hf_config,
                               args.max_samples)
        with cli_task(args) as task:
            m = ds.add_dataset(ws, args.name, cfg, task, overwrite=args.overwrite)
        emit(args, m, lambda m: f"Added dataset {m['name']}: {m['summary']['documents']:,} "
             f"documents, {m['summary']['characters']:,} characters "
             f"(text column {m['config']['text_column']!r}).")
    elif args.action == "list":
        arts = ws.catalog.list("dataset")
        emit(args, [a._asdict() for a in arts], lambda _: _table(
            [[a.name, a.config.get("source"), a.summary.get("documents"), a.status] for a in arts],
            ["NAME", "SOURCE", "DOCUMENTS", "STATUS"]))
    elif args.action == "show":
        art = ws.catalog.get("dataset", args.name)
        toks = [t for t in ws.catalog.list("tokenized") if t.config.get("dataset") == args.name]
        data = {**art._asdict(), "tokenized": [t.name for t in toks]}
        emit(args, data, lambda d: _fmt_dict({k: d[k] for k in
             ("name", "status", "path", "config", "summary", "tokenized")}))
    elif args.action == "remove":
        _remove(ws, "dataset", args.name)
        emit(args, {"removed": args.name}, f"Removed dataset {args.name}.")


def cmd_models(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core import models as mdl

    mdl.ensure_embedded_model(ws)
    if args.action == "add":
        m = mdl.add_model(ws, args.name, args.source, args.trust_remote_code, args.overwrite)
        emit(args, m, lambda m: f"Registered model {m['name']}: {m['summary']['family']}, "
             f"{m['summary']['n_layers']} layers, d_model {m['summary']['d_model']}, "
             f"{m['summary']['n_params'] / 1e6:.1f}M parameters.")
    elif args.action == "list":
        arts = ws.catalog.list("model")
        emit(args, [a._asdict() for a in arts], lambda _: _table(
            [[a.name, a.summary.get("family"), f"{a.summary.get('n_params', 0) / 1e6:.1f}M",
              a.summary.get("n_layers"), a.summary.get("d_model"), a.config.get("source")]
             for a in arts], ["NAME", "FAMILY", "PARAMS", "LAYERS", "D_MODEL", "SOURCE"]))
    elif args.action == "show":
        from dataclasses import asdict

        from mistudio.core.devices import estimate_model_bytes, resolve_device, resolve_dtype
        from mistudio.core.workspace import human_bytes

        info = mdl.model_info(ws, args.name)
        dtype = resolve_dtype("auto", resolve_device("auto"))
        data = {"name": args.name, **asdict(info),
                "estimated_memory": human_bytes(estimate_model_bytes(info.n_params, dtype)),
                "hook_points": [f"layers.{i}.{h}" for i in range(info.n_layers)
                                for h in info.hook_points]}
        emit(args, data, lambda d: _fmt_dict({k: v for k, v in d.items() if k != "hook_points"})
             + f"\nhook points: layers.0..{info.n_layers - 1} x {', '.join(info.hook_points)}")
    elif args.action == "remove":
        mdl.remove_model(ws, args.name)
        emit(args, {"removed": args.name}, f"Removed model {args.name}.")


def cmd_tokenize(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.models import ensure_embedded_model
    from mistudio.core.tokenization import TokenizeConfig, tokenize_dataset

    ensure_embedded_model(ws)
    _ensure_default_dataset(ws, args.dataset)
    cfg = TokenizeConfig(args.dataset, args.model, args.context_length, args.mode, args.prepend_bos)
    with cli_task(args) as task:
        m = tokenize_dataset(ws, cfg, args.name, task, overwrite=args.overwrite)
    s = m["summary"]
    emit(args, m, lambda m: f"Tokenized set {m['name']}: {s['sequences']:,} sequences of "
         f"{cfg.context_length} tokens, {s['tokens']:,} tokens from {s['documents']:,} documents.")


def cmd_tokenized(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "list":
        arts = ws.catalog.list("tokenized")
        emit(args, [a._asdict() for a in arts], lambda _: _table(
            [[a.name, a.config.get("dataset"), a.config.get("model"),
              a.config.get("context_length"), a.summary.get("sequences"), a.summary.get("tokens")]
             for a in arts], ["NAME", "DATASET", "MODEL", "CTX", "SEQUENCES", "TOKENS"]))
    else:
        from mistudio.core.tokenization import open_tokenized

        m = open_tokenized(ws, args.name).manifest
        emit(args, m, lambda m: _fmt_dict({k: m[k] for k in ("name", "config", "summary")}) +
             "\ntop tokens: " + ", ".join(f"{t['token']!r} ({t['count']})"
                                          for t in m["stats"]["top_tokens"][:15]))


def cmd_extract(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.extraction import ExtractConfig, default_layer, extract_activations
    from mistudio.core.models import ensure_embedded_model, model_info

    ensure_embedded_model(ws)
    _ensure_default_dataset(ws, args.dataset)
    layers = tuple(args.layer) if args.layer else (default_layer(model_info(ws, args.model).n_layers),)
    cfg = ExtractConfig(args.model, args.dataset, layers, tuple(args.hook or ["resid_post"]),
                        args.context_length, args.max_tokens, args.batch_size, args.dtype,
                        args.chunk_rows, args.keep_first_position, args.device, args.model_dtype)
    name = args.name or f"{args.model}.{'-'.join(map(str, layers))}.{'-'.join(cfg.hooks)}"
    with cli_task(args) as task:
        m = extract_activations(ws, cfg, name, task, overwrite=args.overwrite)
    s = m["summary"]
    emit(args, m, lambda m: f"Activation set {m['name']}: {s['tokens']:,} tokens x "
         f"{s['d_model']} at {', '.join(s['hook_points'])} ({s['chunks']} chunks, "
         f"{(s['tokens_per_s'] or 0):,.0f} tokens/s).")


def cmd_activations(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "list":
        arts = ws.catalog.list("activations")
        emit(args, [a._asdict() for a in arts], lambda _: _table(
            [[a.name, a.config.get("model"), ",".join(
                f"{layer}.{hook}" for layer, hook in a.config.get("sites", [])),
              a.summary.get("tokens"), a.status] for a in arts],
            ["NAME", "MODEL", "HOOK POINTS", "TOKENS", "STATUS"]))
    elif args.action == "show":
        from mistudio.core.activations import open_activations

        m = open_activations(ws, args.name).manifest
        emit(args, m, lambda m: _fmt_dict({"name": m["name"], "status": m["status"],
                                            "summary": m["summary"], "stats": m["stats"]}))
    elif args.action == "remove":
        _remove(ws, "activations", args.name)
        emit(args, {"removed": args.name}, f"Removed activation set {args.name}.")


def _ensure_default_dataset(ws: Workspace, name: str) -> None:
    """The default dataset name means the built-in corpus: add it on first use."""
    from mistudio.core.datasets import ensure_builtin_dataset

    if name == "pydoc" and ws.catalog.find("tokenized", name) is None:
        ensure_builtin_dataset(ws, name)


def _remove(ws: Workspace, kind: str, name: str) -> None:
    import shutil
    from pathlib import Path

    art = ws.catalog.get(kind, name)
    shutil.rmtree(Path(art.path), ignore_errors=True)
    ws.catalog.delete(kind, name)


def cmd_train(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.sae.trainer import TrainConfig, train_sae

    fields = ("hook", "target_hook", "architecture", "expansion", "k", "skip", "steps",
              "batch_size", "lr", "seed", "device", "grad_accumulation", "checkpoint_every")
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
        emit(args, [a._asdict() for a in arts], lambda _: _table(
            [[a.name, a.summary.get("architecture", a.config.get("architecture")),
              a.summary.get("hook"), a.summary.get("d_sae"),
              _fmt_num(a.summary.get("explained_variance")), _fmt_num(a.summary.get("l0")),
              a.status] for a in arts],
            ["NAME", "ARCH", "HOOK", "D_SAE", "EV", "L0", "STATUS"]))
    elif args.action == "show":
        art = ws.catalog.get("sae", args.name)
        emit(args, art._asdict(), lambda _: _fmt_dict(
            {"name": art.name, "status": art.status, "path": art.path, "summary": art.summary}))
    elif args.action == "remove":
        _remove(ws, "sae", args.name)
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


def _fmt_num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def cmd_doctor(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.doctor import doctor

    emit(args, doctor(ws), _fmt_dict)


def cmd_catalog(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.catalog import rebuild_catalog

    ws.close()
    backup, count = rebuild_catalog(ws.root)
    emit(args, {"artifacts": count, "backup": str(backup) if backup else None},
         f"Re-indexed {count} artifacts." + (f" The old catalog is kept as {backup}." if backup else ""))


def cmd_jobs(args: argparse.Namespace, ws: Workspace) -> None:
    jobs = ws.catalog.jobs()
    emit(args, [j._asdict() for j in jobs], lambda _: _table(
        [[j.id, j.kind, j.target, j.status, time.strftime("%Y-%m-%d %H:%M", time.localtime(j.started)),
          j.message[:60]] for j in jobs], ["ID", "KIND", "TARGET", "STATUS", "STARTED", "MESSAGE"]))


def cmd_quickstart(args: argparse.Namespace, ws: Workspace) -> None:
    if not args.headless:
        raise MiStudioError("The desktop app is not part of this build yet.",
                            "Run `mistudio quickstart --headless`.")
    from mistudio.core.quickstart import run_quickstart

    with cli_task(args) as task:
        r = run_quickstart(ws, task, args.max_tokens, device=args.device,
                           train_steps=args.train_steps, batch_size=args.batch_size)
    a = r["activations"]
    emit(args, r, lambda r: "\n".join([
        "miStudio quick start: done in {:.0f} s".format(r["seconds"]),
        f"  workspace   {r['workspace']}",
        f"  model       {r['model']['name']} ({r['model']['family']}, {r['model']['n_layers']} "
        f"layers, d_model {r['model']['d_model']}, {r['model']['n_params'] / 1e6:.0f}M params)",
        f"  dataset     {r['dataset']['name']} ({r['dataset']['documents']:,} documents)",
        f"  tokenized   {r['tokenized']['name']} ({r['tokenized']['tokens']:,} tokens)",
        f"  activations {a['name']}: layer {a['layer']} {a['hook']}, {a['tokens']:,} tokens x "
        f"{a['d_model']}" + (" (reused)" if a["reused"] else
                             f", {(a.get('tokens_per_s') or 0):,.0f} tokens/s"),
        "  sae         {name}: {architecture} {d_in} -> {d_sae}, {steps} steps; explained variance "
        "{explained_variance:.3f}, L0 {l0:.1f}, dead {dead_fraction:.1%}{reused}".format(
            **{**r["sae"], "reused": " (reused)" if r["sae"]["reused"] else ""}),
        "Next: `mistudio saes show quickstart-topk`.",
    ]))


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", help="workspace folder (default: $MISTUDIO_HOME or the "
                        "per-user data folder)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--online", action="store_true",
                        help="allow Hugging Face hub downloads for this command")
    p = argparse.ArgumentParser(prog="mistudio", description="miStudio: local mechanistic "
                                "interpretability workbench.", parents=[common])
    p.add_argument("--version", action="version", version=f"mistudio {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def actions(sp: argparse.ArgumentParser, func: Callable) -> argparse._SubParsersAction:
        acts = sp.add_subparsers(dest="action", metavar="ACTION", required=True)
        acts.add_parser("list", parents=[common], help="list them").set_defaults(func=func)
        for verb in ("show", "remove"):
            a = acts.add_parser(verb, parents=[common], help=f"{verb} one")
            a.add_argument("name")
            a.set_defaults(func=func)
        return acts

    sp = add("datasets", cmd_datasets, "add, list, show and remove text datasets")
    a = actions(sp, cmd_datasets).add_parser("add", parents=[common], help="add a dataset")
    a.add_argument("name")
    a.add_argument("--source", default="builtin:pydoc", help="builtin:pydoc, a file or folder, a "
                   "save_to_disk folder, or hf:ID (default: builtin:pydoc)")
    a.add_argument("--text-column")
    a.add_argument("--split", default="train")
    a.add_argument("--hf-config", help="configuration name of a Hugging Face dataset")
    a.add_argument("--max-samples", type=int)
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_datasets)

    sp = add("models", cmd_models, "register, list, show and remove models")
    a = actions(sp, cmd_models).add_parser("add", parents=[common], help="register a model")
    a.add_argument("name")
    a.add_argument("--source", required=True, help="embedded, a model folder, a .gguf file or hf:ID")
    a.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own Python code (only for sources you trust)")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_models)

    sp = add("tokenize", cmd_tokenize, "tokenize a dataset into fixed-length sequences")
    sp.add_argument("dataset")
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--context-length", type=int, default=128)
    sp.add_argument("--mode", choices=["concat", "truncate"], default="concat")
    sp.add_argument("--prepend-bos", choices=["auto", "yes", "no"], default="auto")
    sp.add_argument("--name", help="default: DATASET.MODEL.ctxN")
    sp.add_argument("--overwrite", action="store_true")

    actions(add("tokenized", cmd_tokenized, "list and show tokenized sets"), cmd_tokenized)

    sp = add("extract", cmd_extract, "extract activations at one or more hook points")
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--dataset", default="pydoc", help="dataset or tokenized set")
    sp.add_argument("--layer", type=int, action="append", help="repeatable (default: middle)")
    sp.add_argument("--hook", action="append", help="resid_pre, resid_post, mlp_in, mlp_out or "
                    "attn_out; repeatable (default: resid_post)")
    sp.add_argument("--name")
    sp.add_argument("--max-tokens", type=int)
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--context-length", type=int, default=128)
    sp.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    sp.add_argument("--chunk-rows", type=int, default=65536)
    sp.add_argument("--keep-first-position", action="store_true")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--model-dtype", default="auto")
    sp.add_argument("--overwrite", action="store_true")

    actions(add("activations", cmd_activations, "list, show and remove activation sets"),
            cmd_activations)

    sp = add("train", cmd_train, "train a sparse autoencoder (or transcoder) on an activation set")
    sp.add_argument("--activations", required=True, help="activation set name")
    sp.add_argument("--name", help="default: ACTIVATIONS.ARCH")
    sp.add_argument("--arch", dest="architecture",
                    choices=["topk", "batchtopk", "jumprelu", "relu", "skip", "transcoder"])
    sp.add_argument("--hook", help="hook point of the set to encode (default: its first)")
    sp.add_argument("--target-hook", help="hook point to reconstruct (makes a transcoder)")
    sp.add_argument("--expansion", type=int)
    sp.add_argument("--k", type=int)
    sp.add_argument("--l1", type=float, help="L1 coefficient (relu)")
    sp.add_argument("--l0", type=float, help="L0 coefficient (jumprelu)")
    sp.add_argument("--skip", choices=["none", "fixed", "learned", "affine"])
    sp.add_argument("--steps", type=int)
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--grad-accumulation", type=int)
    sp.add_argument("--lr", type=float)
    sp.add_argument("--checkpoint-every", type=int)
    sp.add_argument("--seed", type=int)
    sp.add_argument("--device")
    sp.add_argument("--overwrite", action="store_true")
    actions(add("saes", cmd_saes, "list, show and remove trained SAEs"), cmd_saes)
    sp = add("import", cmd_import, "import an SAE (SAELens, sparsify, Gemma Scope, dictionary_learning)")
    sp.add_argument("folder")
    sp.add_argument("--name", required=True)
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--hook", required=True, help="hook point it reads, e.g. layers.15.resid_post")
    sp.add_argument("--overwrite", action="store_true")
    sp = add("export", cmd_export, "export an SAE (SAELens layout)")
    sp.add_argument("sae")
    sp.add_argument("--format", choices=["saelens"], default="saelens")
    sp.add_argument("--out", required=True)
    sp = add("eval", cmd_eval, "evaluate an SAE spliced into its model (CE loss score, KL)")
    sp.add_argument("sae")
    sp.add_argument("--sequences", type=int, default=32, help="held-out sequences to use")
    sp.add_argument("--device", default="auto")
    add("doctor", cmd_doctor, "what device, memory, disk, model and corpus miStudio sees")
    sp = add("catalog", cmd_catalog, "maintain the workspace catalog")
    sp.add_argument("action", choices=["rebuild"])
    add("jobs", cmd_jobs, "recent jobs and their outcome")
    sp = add("quickstart", cmd_quickstart, "the whole workflow on the embedded defaults")
    sp.add_argument("--headless", action="store_true", help="run in the terminal")
    sp.add_argument("--max-tokens", type=int, help="tokens to extract (default: the whole corpus)")
    sp.add_argument("--train-steps", type=int, default=400)
    sp.add_argument("--batch-size", type=int, default=2048)
    sp.add_argument("--device", default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("\nStart with: mistudio quickstart --headless", file=sys.stderr)
        return 0
    if args.online:
        from mistudio.core.hub import set_online

        set_online(True)
    ws = None
    try:
        ws = Workspace(args.workspace)
        args.func(args, ws)
        return 0
    except MiStudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("Cancelled. Completed work is kept; run the same command to resume where "
              "supported.", file=sys.stderr)
        return 130
    finally:
        if ws is not None:
            ws.close()


if __name__ == "__main__":
    raise SystemExit(main())
