"""``mistudio``: the scriptable face of the core library.

Every subcommand takes ``--workspace``, ``--json`` and ``--online``. Errors the user can fix
print one line (the problem and the fix) and exit with status 2; Ctrl-C cancels the running job
cleanly (a second Ctrl-C aborts).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from mistudio import __version__
from mistudio.cli.data_commands import (
    cmd_activations,
    cmd_catalog,
    cmd_datasets,
    cmd_doctor,
    cmd_extract,
    cmd_jobs,
    cmd_models,
    cmd_quickstart,
    cmd_tokenize,
    cmd_tokenized,
)
from mistudio.cli.feature_commands import add_feature_commands
from mistudio.cli.output import CliProgress, cli_task, emit
from mistudio.cli.sae_commands import (
    ARCH_CHOICES,
    cmd_eval,
    cmd_export,
    cmd_import,
    cmd_saes,
    cmd_train,
    num_list,
    str_list,
)
from mistudio.cli.steer_commands import add_steer_commands
from mistudio.core.runtime.errors import Cancelled, MiStudioError, as_user_error
from mistudio.core.store.workspace import Workspace

__all__ = ["CliProgress", "build_parser", "cli_task", "emit", "main"]


def _global_options(top_level: bool) -> argparse.ArgumentParser:
    """--workspace, --json and --online, accepted before or after the subcommand. The
    subcommands' copies default to SUPPRESS, so they never reset a value given before the
    subcommand (argparse's parents would otherwise write their own None / False over it)."""
    opts = argparse.ArgumentParser(add_help=False)
    kw: dict[str, Any] = {} if top_level else {"default": argparse.SUPPRESS}
    opts.add_argument("--workspace", help="workspace folder (default: $MISTUDIO_HOME or the "
                      "per-user data folder)", **kw)
    opts.add_argument("--json", action="store_true", help="machine-readable output", **kw)
    opts.add_argument("--online", action="store_true",
                      help="allow Hugging Face hub downloads for this command", **kw)
    return opts


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(top_level=False)
    p = argparse.ArgumentParser(prog="mistudio", description="miStudio: local mechanistic "
                                "interpretability workbench.", parents=[_global_options(True)])
    p.add_argument("--version", action=_VersionAction, nargs=0,
                   help="version, git commit, PyTorch and Qt versions, device")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation offline: a tiny extract, train, analyze and "
                   "steer on the embedded model, and the app's window (offscreen); exit 0 if "
                   "all work")
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

    sp = add("models", cmd_models, "register, list, show and remove models; plan memory; "
             "check a quantization")
    acts = actions(sp, cmd_models)
    a = acts.add_parser("plan", parents=[common], help="what fits on a device: each dtype and "
                        "quantization with its weights, activations and SAE training memory")
    a.add_argument("name")
    a.add_argument("--device", default="auto")
    a.add_argument("--batch-tokens", type=int, default=1024, help="tokens per forward pass")
    a.set_defaults(func=cmd_models)
    a = acts.add_parser("faithfulness", parents=[common], help="activations of a quantized "
                        "model against full precision on the same tokens (cosine, error)")
    a.add_argument("name")
    a.add_argument("--quantize", choices=["int8", "int4", "nf4", "bnb8"], default="int8")
    a.add_argument("--layer", type=int, help="default: the middle one")
    a.add_argument("--hook", default="resid_post")
    a.add_argument("--tokens", type=int, default=2048)
    a.add_argument("--device", default="cpu")
    a.set_defaults(func=cmd_models)
    a = acts.add_parser("add", parents=[common], help="register a model")
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
    sp.add_argument("--prepend-bos", choices=["auto", "yes", "no"], default="auto",
                    help="start each sequence with BOS: auto (default) whenever the tokenizer "
                    "defines one, so the attention sink sits on a position extraction drops")
    sp.add_argument("--name", help="default: DATASET.MODEL.ctxN (plus .bos when BOS is first)")
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
    sp.add_argument("--massive-factor", type=float, default=10.0,
                    help="flag tokens whose norm exceeds this multiple of the median (attention "
                    "sinks); training, evaluation and analysis leave them out (default 10)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--model-dtype", default="auto")
    sp.add_argument("--quantize", choices=["none", "int8", "int4", "nf4", "bnb8"], default="none",
                    help="read the activations of the model with quantized weights: int8 / int4 "
                    "(any device) or nf4 / bnb8 (bitsandbytes on CUDA); recorded in the set")
    sp.add_argument("--overwrite", action="store_true")

    actions(add("activations", cmd_activations, "list, show and remove activation sets"),
            cmd_activations)

    sp = add("train", cmd_train, "train sparse autoencoders (or transcoders) on an activation set; "
             "comma-separated values of --arch, --expansion, --k, --l1, --l0, --target-l0, --lr and "
             "--optimizer train a sweep, every combination in one pass over the data")
    sp.add_argument("--activations", required=True, help="activation set name")
    sp.add_argument("--name", help="default: ACTIVATIONS.ARCH (a sweep appends what varies)")
    sp.add_argument("--arch", dest="architecture", type=str_list(ARCH_CHOICES),
                    help="topk (default), batchtopk, jumprelu, relu, skip or transcoder")
    sp.add_argument("--hook", help="hook point of the set to encode (default: its first)")
    sp.add_argument("--target-hook", help="hook point to reconstruct (makes a transcoder)")
    sp.add_argument("--expansion", type=num_list(int))
    sp.add_argument("--k", type=num_list(int))
    sp.add_argument("--l1", type=num_list(float), help="L1 coefficient (relu)")
    sp.add_argument("--l0", type=num_list(float), help="L0 coefficient (jumprelu)")
    sp.add_argument("--target-l0", type=num_list(float),
                    help="relu/jumprelu: adapt the coefficient until L0 reaches this")
    sp.add_argument("--ghost-grads", action="store_true", help="relu/jumprelu: ghost gradients")
    sp.add_argument("--skip", choices=["none", "fixed", "learned", "affine"])
    sp.add_argument("--optimizer", type=str_list(("adam", "signum")),
                    help="adam (default) or signum (schedule-free sign-SGD)")
    sp.add_argument("--unit-norm-decoder", action="store_true")
    sp.add_argument("--steps", type=int)
    sp.add_argument("--batch-size", type=int, help="tokens per step (256 to 8192 typical)")
    sp.add_argument("--grad-accumulation", type=int)
    sp.add_argument("--lr", type=num_list(float))
    sp.add_argument("--warmup-steps", type=int)
    sp.add_argument("--mixed-precision", choices=["auto", "none", "bfloat16", "float16"])
    sp.add_argument("--checkpoint-every", type=int)
    sp.add_argument("--early-stop-patience", type=int,
                    help="stop after N log intervals without a 1%% MSE improvement")
    sp.add_argument("--resample-dead-every", type=int,
                    help="give dead latents new directions every N steps (default: off)")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--device")
    sp.add_argument("--keep-massive", action="store_true",
                    help="train and evaluate on massive tokens too (flagged at extraction)")
    sp.add_argument("--resume", action="store_true",
                    help="require an interrupted run to continue (re-running resumes anyway)")
    sp.add_argument("--overwrite", action="store_true")
    sp = add("saes", cmd_saes, "list, show and remove SAEs; list and pull published ones")
    acts = actions(sp, cmd_saes)
    a = acts.add_parser("releases", parents=[common],
                        help="published SAEs miStudio can pull (Gemma Scope, Llama Scope, ...)")
    a.add_argument("--model", help="only those of this model (part of its id: gemma-2-2b)")
    a.add_argument("--release", help="every SAE of one release")
    a.add_argument("--search", help="words of the release, id or hook point (layer_12 16k)")
    a.set_defaults(func=cmd_saes)
    a = acts.add_parser("pull", parents=[common],
                        help="download (with --online) or find in the cache, and import, a "
                        "published SAE")
    a.add_argument("release")
    a.add_argument("sae_id")
    a.add_argument("--name", help="workspace name (default: RELEASE.SAE_ID)")
    a.add_argument("--model", help="workspace model to attach it to (default: the release's)")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_saes)
    sp = add("import", cmd_import, "import an SAE (SAELens, sparsify, Gemma Scope, dictionary_learning)")
    sp.add_argument("folder")
    sp.add_argument("--name", required=True)
    sp.add_argument("--model", help="workspace model (default: the one its files name)")
    sp.add_argument("--hook", help="hook point it reads, e.g. layers.15.resid_post (default: "
                    "what its files say: SAELens hook_name, Llama Scope hook_point_in, sparsify "
                    "and Gemma Scope folder names)")
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
    add("doctor", cmd_doctor, "what device, memory, disk, model and corpus miStudio sees")
    sp = add("catalog", cmd_catalog, "maintain the workspace catalog")
    sp.add_argument("action", choices=["rebuild"])
    add("jobs", cmd_jobs, "recent jobs and their outcome")
    add_feature_commands(add)
    add_steer_commands(add)
    sp = add("gui", cmd_gui, "open the desktop app (also: `mistudio` with no command)")
    sp.add_argument("--quit-after", type=int, metavar="MS", help="close after MS (smoke tests)")
    sp.add_argument("--startup-time", action="store_true",
                    help="print the seconds from start to the window drawn, then quit")

    sp = add("quickstart", cmd_quickstart, "the whole workflow on the embedded defaults")
    sp.add_argument("--headless", action="store_true", help="run in the terminal")
    sp.add_argument("--max-tokens", type=int, help="tokens to extract (default: the whole corpus)")
    sp.add_argument("--train-steps", type=int, default=400)
    sp.add_argument("--label-top", type=int, default=300,
                    help="features to label with the pattern explainer")
    sp.add_argument("--batch-size", type=int, default=2048)
    sp.add_argument("--device", default="auto")
    return p


class _VersionAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from mistudio.buildinfo import build_info, version_text

        info = build_info()
        print(json.dumps(info, indent=2) if getattr(namespace, "json", False)
              else version_text(info))
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test(args)
    if args.command is None:
        if argv is None and _gui_available():  # `mistudio` alone, or a double click: the app
            from mistudio.gui.app import run_app

            return run_app(args.workspace)
        parser.print_help()
        print("\nStart with: mistudio quickstart --headless", file=sys.stderr)
        return 0
    if args.online:
        from mistudio.core.runtime.online import set_online

        set_online(True)
    ws = None
    try:
        ws = Workspace(args.workspace)
        args.func(args, ws)
        return 0
    except MiStudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = None  # type: ignore[assignment]  # nothing more can be written there
        return 0
    except OSError as err:
        user = as_user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        return user.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("Cancelled. Completed work is kept; run the same command to resume where "
              "supported.", file=sys.stderr)
        return 130
    finally:
        if ws is not None:
            ws.close()


def self_test(args: argparse.Namespace) -> int:
    """The core's self-test, then the window built and closed offscreen."""
    import os
    import time

    from mistudio.core.workflows.selftest import self_test as core_self_test

    try:
        with cli_task(args) as task:
            report = core_self_test(task)
    except MiStudioError as err:
        print(f"self-test FAILED: {err}", file=sys.stderr)
        return 1
    t = time.perf_counter()
    try:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from mistudio.gui.app import smoke_window

        report["steps"]["window"] = {**smoke_window(), "seconds": round(time.perf_counter() - t,
                                                                        2)}
    except ImportError as err:  # a CLI-only installation has no Qt
        report["steps"]["window"] = {"skipped": f"no Qt ({err})"}
    emit(args, report, lambda r: "\n".join(
        [f"  {name:<9} {s.get('seconds', 0):6.1f} s  " + ", ".join(
            f"{k} {v}" for k, v in s.items() if k != "seconds") for name, s in r["steps"].items()]
        + [f"self-test passed in {r['seconds']:.0f} s: miStudio {__version__} works offline "
           "on this machine."]))
    return 0


def _gui_available() -> bool:
    try:
        from mistudio.gui.app import can_show_window
    except ImportError:  # a build without PySide6: the CLI still works
        return False
    return can_show_window()


def cmd_gui(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.gui.app import can_show_window, run_app

    if not can_show_window():
        raise MiStudioError("There is no display to show the window on.",
                            "Run it on a desktop, or set QT_QPA_PLATFORM=offscreen to test.")
    ws.close()
    code = run_app(str(ws.root), args.quit_after, args.startup_time)
    if code:
        raise MiStudioError(f"The app ended with status {code}.", "See the messages above.")


if __name__ == "__main__":
    raise SystemExit(main())
