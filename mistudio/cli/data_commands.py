"""CLI commands for datasets, models, tokenization, extraction and the workspace."""

from __future__ import annotations

import argparse
import time
from typing import Any

from mistudio.cli.config_args import Option, add_config, config_kwargs
from mistudio.cli.output import cli_task, emit, fmt_dict, table
from mistudio.core.activations.massive import describe_positions, ev_phrase
from mistudio.core.runtime.errors import MiStudioError
from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.results import QuickstartResult, SteeringDemo


def cmd_datasets(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.data import datasets as ds

    if args.action == "add":
        cfg = ds.DatasetConfig(**config_kwargs(args, ds.DatasetConfig))
        with cli_task(args) as task:
            m = ds.add_dataset(ws, args.name, cfg, task, overwrite=args.overwrite)
        emit(args, m, lambda m: f"Added dataset {m.name}: {m.summary.documents:,} "
             f"documents, {m.summary.characters:,} characters "
             f"(text column {m.config['text_column']!r}).")
    elif args.action == "list":
        arts = ws.catalog.list("dataset")
        emit(args, arts, lambda _: table(
            [[a.name, a.config.get("source"), a.summary.documents, a.status] for a in arts],
            ["NAME", "SOURCE", "DOCUMENTS", "STATUS"]))
    elif args.action == "show":
        art = ws.catalog.get("dataset", args.name)
        toks = [t for t in ws.catalog.list("tokenized") if t.config.get("dataset") == args.name]
        data = {**art.to_json(), "tokenized": [t.name for t in toks]}
        emit(args, data, lambda d: fmt_dict({k: d[k] for k in
             ("name", "status", "path", "config", "summary", "tokenized")}))
    elif args.action == "remove":
        ws.remove("dataset", args.name)
        emit(args, {"removed": args.name}, f"Removed dataset {args.name}.")


def cmd_models(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.models import registry as mdl

    with cli_task(args) as task:  # the first time, each built-in model's header is read
        mdl.ensure_bundled_models(ws, task)
    if args.action == "plan":
        from mistudio.core.models.devices import resolve_device
        from mistudio.core.workflows.planner import plan_memory, plan_text

        info = mdl.model_info(ws, args.name)
        plan = plan_memory(info, resolve_device(args.device), args.batch_tokens)
        emit(args, plan.to_dict(), lambda _: f"{args.name}: {info.n_params / 1e9:.2f}B "
             f"parameters, {info.n_layers} layers, d_model {info.d_model}\n" + plan_text(plan))
        return
    if args.action == "faithfulness":
        from mistudio.core.activations.faithfulness import faithfulness_line, quantization_faithfulness

        with cli_task(args) as task:
            r = quantization_faithfulness(ws, args.name, args.quantize, args.layer, args.hook,
                                          args.tokens, args.device, task)
        emit(args, r, faithfulness_line)
        return
    if args.action == "add":
        m = mdl.add_model(ws, args.name, args.source, args.trust_remote_code, args.overwrite)
        emit(args, m, lambda m: f"Registered model {m.name}: {m.summary.family}, "
             f"{m.summary.n_layers} layers, d_model {m.summary.d_model}, "
             f"{m.summary.n_params / 1e6:.1f}M parameters.")
    elif args.action == "list":
        arts = ws.catalog.list("model")
        emit(args, arts, lambda _: table(
            [[a.name, a.summary.family, f"{a.summary.n_params / 1e6:.1f}M",
              a.summary.n_layers, a.summary.d_model, a.config.get("source")]
             for a in arts], ["NAME", "FAMILY", "PARAMS", "LAYERS", "D_MODEL", "SOURCE"]))
    elif args.action == "show":
        from mistudio.core.models.devices import estimate_model_bytes, resolve_device, resolve_dtype
        from mistudio.core.store.files import human_bytes

        info = mdl.model_info(ws, args.name)
        dtype = resolve_dtype("auto", resolve_device("auto"))
        data = {"name": args.name, **info.to_json(),
                "estimated_memory": human_bytes(estimate_model_bytes(info.n_params, dtype)),
                "hook_points": [f"layers.{i}.{h}" for i in range(info.n_layers)
                                for h in info.hook_points]}
        emit(args, data, lambda d: fmt_dict({k: v for k, v in d.items() if k != "hook_points"})
             + f"\nhook points: layers.0..{info.n_layers - 1} x {', '.join(info.hook_points)}")
    elif args.action == "remove":
        mdl.remove_model(ws, args.name)
        emit(args, {"removed": args.name}, f"Removed model {args.name}.")


def cmd_tokenize(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.data.tokenization import TokenizeConfig, tokenize_dataset
    from mistudio.core.models.registry import ensure_embedded_model

    ensure_embedded_model(ws)
    _ensure_default_dataset(ws, args.dataset)
    cfg = TokenizeConfig(args.dataset, **config_kwargs(args, TokenizeConfig, skip=("dataset",)))
    with cli_task(args) as task:
        m = tokenize_dataset(ws, cfg, args.name, task, overwrite=args.overwrite)
    s = m.summary
    emit(args, m, lambda m: f"Tokenized set {m.name}: {s.sequences:,} sequences of "
         f"{cfg.context_length} tokens, {s.tokens:,} tokens from {s.documents:,} documents.")


def cmd_tokenized(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "remove":
        ws.remove("tokenized", args.name)
        emit(args, {"removed": args.name}, f"Removed tokenized set {args.name}.")
    elif args.action == "list":
        arts = ws.catalog.list("tokenized")
        emit(args, arts, lambda _: table(
            [[a.name, a.config.get("dataset"), a.config.get("model"),
              a.config.get("context_length"), a.summary.sequences, a.summary.tokens]
             for a in arts], ["NAME", "DATASET", "MODEL", "CTX", "SEQUENCES", "TOKENS"]))
    else:
        from mistudio.core.data.tokenization import open_tokenized

        m = open_tokenized(ws, args.name).manifest
        prov = m.provenance
        bos = (f"{prov.bos_token or prov.bos_token_id!s} first in every sequence"
               if prov.bos_token_id is not None else "not prepended")
        emit(args, m, lambda m: fmt_dict({"name": m.name, "config": m.config,
                                          "summary": m.summary.to_json()}) +
             f"\nBOS: {bos}" +
             "\ntop tokens: " + ", ".join(f"{t.token!r} ({t.count})"
                                          for t in m.stats.top_tokens[:15]))


def cmd_extract(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.activations.extraction import ExtractConfig, default_layer, extract_activations
    from mistudio.core.models.registry import ensure_embedded_model, model_info

    ensure_embedded_model(ws)
    _ensure_default_dataset(ws, args.dataset)
    given = config_kwargs(args, ExtractConfig)
    given.setdefault("layers", (default_layer(model_info(ws, args.model).n_layers),))
    cfg = ExtractConfig(**given)
    name = args.name or (f"{cfg.model}.{'-'.join(map(str, cfg.layers))}.{'-'.join(cfg.hooks)}"
                         + (f".{cfg.quantize}" if cfg.quantize != "none" else ""))
    with cli_task(args) as task:
        m = extract_activations(ws, cfg, name, task, overwrite=args.overwrite)
    s = m.summary
    emit(args, m, lambda m: f"Activation set {m.name}: {s.tokens:,} tokens x "
         f"{s.d_model} at {', '.join(s.hook_points)} ({s.chunks} chunks, "
         f"{(s.tokens_per_s or 0):,.0f} tokens/s).\nMassive tokens: "
         f"{describe_positions(m.massive)} (kept on disk, left out of training, "
         "evaluation and analysis at the hook point that flagged them unless --keep-massive)."
         + "".join(f"\nStored wider: {key} as {how}." for key, how in m.storage.items()))


def cmd_activations(args: argparse.Namespace, ws: Workspace) -> None:
    if args.action == "list":
        arts = ws.catalog.list("activations")
        emit(args, arts, lambda _: table(
            [[a.name, a.config.get("model"), ",".join(
                h.removeprefix("layers.") for h in a.summary.hook_points),
              a.summary.tokens, a.summary.massive_tokens, a.status]
             for a in arts],
            ["NAME", "MODEL", "HOOK POINTS", "TOKENS", "MASSIVE", "STATUS"]))
    elif args.action == "show":
        from mistudio.core.activations.store import open_activations

        m = open_activations(ws, args.name).manifest
        emit(args, m, lambda m: fmt_dict({"name": m.name, "status": m.status,
                                          "summary": m.summary.to_json(),
                                          "stats": {k: v.to_json() for k, v in m.stats.items()}})
             + f"\nmassive tokens: {describe_positions(m.massive)}")
    elif args.action == "remove":
        ws.remove("activations", args.name)
        emit(args, {"removed": args.name}, f"Removed activation set {args.name}.")
    elif args.action == "import":
        from mistudio.core.activations.importing import ImportConfig, import_activations

        cfg = ImportConfig(**config_kwargs(args, ImportConfig))
        with cli_task(args) as task:
            m = import_activations(ws, cfg, args.name, task, overwrite=args.overwrite)
        emit(args, m, lambda m: f"Activation set {m.name}: {m.summary.tokens:,} rows of width "
             f"{m.d_model} from {cfg.source} ({m.summary.massive_tokens:,} massive rows flagged). "
             f"Next: `mistudio train --activations {m.name}`.")


def _ensure_default_dataset(ws: Workspace, name: str) -> None:
    """The default dataset name means the built-in corpus: add it on first use."""
    from mistudio.core.data.datasets import ensure_builtin_dataset

    if name == "pydoc" and ws.catalog.find("tokenized", name) is None:
        ensure_builtin_dataset(ws, name)


def cmd_doctor(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.workflows.doctor import doctor

    emit(args, doctor(ws), fmt_dict)


def cmd_catalog(args: argparse.Namespace, ws: Workspace) -> None:
    from mistudio.core.store.catalog import rebuild_catalog

    ws.close()
    backup, result = rebuild_catalog(ws.root)
    lines = [f"Re-indexed {result.count} artifacts."]
    if backup:
        lines.append(f"The catalog was damaged; the old file is kept as {backup}.")
    if result.skipped:
        lines.append(f"Not indexed ({len(result.skipped)}):")
        lines += [f"  {folder}: {why}" for folder, why in result.skipped]
    emit(args, {"artifacts": result.count, "backup": str(backup) if backup else None,
                "skipped": [{"folder": f, "reason": r} for f, r in result.skipped]},
         "\n".join(lines))


def cmd_jobs(args: argparse.Namespace, ws: Workspace) -> None:
    jobs = ws.catalog.jobs()
    emit(args, jobs, lambda _: table(
        [[j.id, j.kind, j.target, j.status, time.strftime("%Y-%m-%d %H:%M", time.localtime(j.started)),
          j.message[:60]] for j in jobs], ["ID", "KIND", "TARGET", "STATUS", "STARTED", "MESSAGE"]))


def cmd_quickstart(args: argparse.Namespace, ws: Workspace) -> None:
    if not args.headless:
        raise MiStudioError("The quick start runs in the terminal with --headless.",
                            "Run `mistudio quickstart --headless`, or open the app (`mistudio`) "
                            "and choose Help > Quick start.")
    from mistudio.core.workflows.quickstart import QuickstartConfig, run_quickstart

    cfg = QuickstartConfig(**config_kwargs(args, QuickstartConfig))
    with cli_task(args) as task:
        r = run_quickstart(ws, cfg, task)
    emit(args, r, quickstart_text)


def quickstart_text(r: QuickstartResult) -> str:
    """The quick start's result as the README shows it."""
    a, sae, f = r.activations, r.sae, r.features
    in_model = (f", CE loss score {sae.ce_loss_score:.3f}, KL {sae.kl_div:.3f}"
                if sae.ce_loss_score is not None else "")
    return "\n".join([
        f"miStudio quick start: done in {r.seconds:.0f} s",
        f"  workspace   {r.workspace}",
        f"  model       {r.model.name} ({r.model.family}, {r.model.n_layers} layers, d_model "
        f"{r.model.d_model}, {r.model.n_params / 1e6:.0f}M params)",
        f"  dataset     {r.dataset.name} ({r.dataset.documents:,} documents)",
        f"  tokenized   {r.tokenized.name} ({r.tokenized.tokens:,} tokens)",
        f"  activations {a.name}: layer {a.layer} {a.hook}, {a.tokens:,} tokens x {a.d_model}"
        + (" (reused)" if a.reused else f", {(a.tokens_per_s or 0):,.0f} tokens/s"),
        f"              massive tokens: {describe_positions(a.massive)}",
        f"  sae         {sae.name}: {sae.architecture} {sae.d_in} -> {sae.d_sae}, {sae.steps} "
        f"steps; held-out {ev_phrase(sae)}, L0 {sae.l0:.1f}, dead {sae.dead_fraction:.1%}"
        f"{in_model}"
        + (" (reused)" if sae.reused else ""),
        f"  features    {f.name}: {f.alive:,} live, {f.dead:,} dead on {f.n_tokens:,} tokens; "
        f"{f.score_ge_0_7:,} of {f.labelled:,} labels reach 0.7 held-out detection, "
        f"{f.concept_ge_0_7:,} of them naming a concept (labelled in {f.label_s:.0f} s)"
        + (" (analysis reused)" if f.reused else ""),
        "      best feature of each family (held-out detection / fuzzing):",
        *[f"      {b.feature:>5}  {b.score:.2f} / {_fz(b.fuzzing)}  {b.family:<22} {b.label}"
          for b in f.best],
        *_steer_lines(r.steering),
        f"Next: `mistudio features {sae.name} --sort score`, "
        f"`mistudio feature {sae.name} INDEX`, "
        f"`mistudio steer --sae {sae.name} --feature INDEX=+20`.",
    ])


def _fz(value: float | None) -> str:
    return "  - " if value is None else f"{value:.2f}"


def _steer_lines(s: SteeringDemo | None) -> list[str]:
    if not s:
        return []
    picked = (f"              chosen from {len({r.feature for r in s.sweep})} features x "
              f"{len({r.coefficient_x_max for r in s.sweep})} strengths over 3 prompts x 2 "
              f"samples: the feature's mean activation in the text {s.concept_plain:.3f} -> "
              f"{s.concept_steered:.3f}, perplexity x{s.perplexity_ratio:.2f} (limit 2)"
              ) if s.sweep else None
    return [f"  steering    feature {s.feature} ({s.label}) at {s.coefficient_x_max:g} x max, "
            f"prompt {s.prompt!r}:", *([picked] if picked else []),
            f"      unsteered: {s.plain.strip()!r}",
            f"      steered:   {s.steered.strip()!r}  (KL {s.kl_mean:.3f}; perplexity "
            f"{s.perplexity_plain:.1f} -> {s.perplexity_steered:.1f})"]


def add_data_commands(add: Any, actions: Any) -> None:
    """datasets, models, tokenize, tokenized, extract, activations, doctor, catalog, jobs,
    quickstart."""
    from mistudio.core.activations.extraction import ExtractConfig
    from mistudio.core.activations.importing import ImportConfig
    from mistudio.core.data.sources import BUILTIN_PYDOC, DatasetConfig
    from mistudio.core.data.tokenization import TokenizeConfig
    from mistudio.core.models.registry import EMBEDDED_NAME
    from mistudio.core.workflows.quickstart import QuickstartConfig

    sp = add("datasets", cmd_datasets, "add, list, show and remove text datasets")
    a = actions(sp, cmd_datasets).add_parser("add", help="add a dataset")
    a.add_argument("name")
    add_config(a, DatasetConfig, {"source": Option(default=BUILTIN_PYDOC)})
    _overwrite(a)
    _model_commands(add, actions)
    sp = add("tokenize", cmd_tokenize, "tokenize a dataset into fixed-length sequences")
    sp.add_argument("dataset")
    add_config(sp, TokenizeConfig, {"model": Option(default=EMBEDDED_NAME)}, skip=("dataset",))
    sp.add_argument("--name", help="default: DATASET.MODEL.ctxN (plus .bos when BOS is first)")
    _overwrite(sp)
    actions(add("tokenized", cmd_tokenized, "list, show and remove tokenized sets"),
            cmd_tokenized)
    sp = add("extract", cmd_extract, "extract activations at one or more hook points")
    add_config(sp, ExtractConfig, {
        "model": Option(default=EMBEDDED_NAME), "dataset": Option(default="pydoc"),
        "layers": Option("--layer", repeat=True, required=False, help="a block to read, "
                         "0-based; repeatable (default: the middle one)"),
        "hooks": Option("--hook", repeat=True),
        "batch_sequences": Option(aliases=("--batch-size",))})
    sp.add_argument("--name", help="default: MODEL.LAYERS.HOOKS")
    _overwrite(sp)
    acts = actions(add("activations", cmd_activations, "list, show, remove and import "
                       "activation sets"), cmd_activations)
    a = acts.add_parser("import", help="an activation set from rows made elsewhere: a .npy, "
                        ".npz or .safetensors file, or SAELens's cached activations (train and "
                        "evaluate SAEs on them)")
    add_config(a, ImportConfig)
    a.add_argument("--name", required=True, help="the activation set's name")
    _overwrite(a)
    add("doctor", cmd_doctor, "what device, memory, disk, model and corpus miStudio sees")
    add("catalog", cmd_catalog, "maintain the workspace catalog").add_argument(
        "action", choices=["rebuild"])
    add("jobs", cmd_jobs, "recent jobs and their outcome")
    sp = add("quickstart", cmd_quickstart, "the whole workflow on the embedded defaults")
    sp.add_argument("--headless", action="store_true", help="run in the terminal")
    add_config(sp, QuickstartConfig, skip=("model", "dataset"))


def _model_commands(add: Any, actions: Any) -> None:
    sp = add("models", cmd_models, "register, list, show and remove models; plan memory; "
             "check a quantization")
    acts = actions(sp, cmd_models)
    a = acts.add_parser("plan", help="what fits on a device: each dtype and quantization with "
                        "its weights, activations and SAE training memory")
    a.add_argument("name")
    a.add_argument("--device", default="auto")
    a.add_argument("--batch-tokens", type=int, default=1024, help="tokens per forward pass")
    a = acts.add_parser("faithfulness", help="activations of a quantized model against full "
                        "precision on the same tokens (cosine, error)")
    a.add_argument("name")
    a.add_argument("--quantize", choices=["int8", "int4", "nf4", "bnb8"], default="int8")
    a.add_argument("--layer", type=int, help="default: the middle one")
    a.add_argument("--hook", default="resid_post")
    a.add_argument("--tokens", type=int, default=2048)
    a.add_argument("--device", default="cpu")
    a = acts.add_parser("add", help="register a model")
    a.add_argument("name")
    a.add_argument("--source", required=True, help="embedded, a model folder, a .gguf file or "
                   "hf:ID")
    a.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own Python code (only for sources you trust)")
    _overwrite(a)


def _overwrite(sp: Any) -> None:
    sp.add_argument("--overwrite", action="store_true",
                    help="replace an existing one of that name")
