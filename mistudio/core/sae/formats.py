"""Importing SAEs made elsewhere: SAELens folders, sparsify folders, Gemma Scope ``params.npz``,
Llama Scope checkpoints and dictionary_learning ``ae.pt``. Nothing is unpickled: safetensors,
``np.load`` without pickle, and ``torch.load(weights_only=True)`` for the one format that is a
torch file.

The hook point and the model come from the files themselves where they say so
(:mod:`mistudio.core.sae.hooknames`); the user's choice only overrides them. After conversion the
shapes are checked against the model and hook point, and the SAE is saved in the workspace in
the SAELens layout like one trained here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mistudio import __version__
from mistudio.core.models.adapters import HOOK_POINTS, parse_hook_key
from mistudio.core.models.registry import model_info
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.sae import SAEConfig, SparseCoder, build_sae
from mistudio.core.sae.hooknames import FoundHook, match_model, read_hook, read_json_if
from mistudio.core.sae.io import CFG_FILE, WEIGHTS_FILE, config_from_saelens, load_tensors, save_sae
from mistudio.core.store.files import building, write_json_atomic
from mistudio.core.store.manifests import SAEManifest, SAEProvenance, SAESummary, made_now
from mistudio.core.store.workspace import Workspace


class ForeignSAE(NamedTuple):
    """An SAE read from another tool's files."""

    sae: SparseCoder
    meta: dict[str, Any]
    """Metadata found in the files (SAELens ``metadata``, dictionary_learning's trainer)."""
    fmt: str
    """saelens, sparsify, gemmascope, llamascope or dictionary_learning."""
    found: FoundHook
    """The hook point and model the files name."""


def detect_format(folder: Path) -> str:
    if (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return "saelens"
    if (folder / "hyperparams.json").is_file() and \
            (folder / "checkpoints" / "final.safetensors").is_file():
        return "llamascope"
    if (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file():
        return "sparsify"
    if (folder / "params.npz").is_file():
        return "gemmascope"
    if (folder / "ae.pt").is_file():
        return "dictionary_learning"
    raise InvalidInputError(
        f"{folder} holds no SAE miStudio can read.",
        "Expected cfg.json + sae_weights.safetensors (SAELens), cfg.json + sae.safetensors "
        "(sparsify), params.npz (Gemma Scope), hyperparams.json + checkpoints/final.safetensors "
        "(Llama Scope) or ae.pt (dictionary_learning).")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise CorruptedError(f"{path} cannot be read ({err}).", "Check the file.") from err


def read_foreign(folder: Path) -> ForeignSAE:
    """The coder, the metadata and hook point its files carry, and the format's name."""
    fmt = detect_format(folder)
    meta: dict[str, Any] = {}
    cfg: dict[str, Any] | None = None
    if fmt == "saelens":
        cfg = json.loads((folder / CFG_FILE).read_text())
        norm = cfg.get("normalize_activations")
        if norm not in (None, "none", False):
            raise InvalidInputError(f"The SAE in {folder} expects its inputs rescaled "
                                    f"(normalize_activations: {norm}), which miStudio does not "
                                    "apply.", "Use an SAE saved with normalize_activations none.")
        tensors = _safetensors(folder / WEIGHTS_FILE)
        sae_cfg = config_from_saelens(cfg, tensors)
        meta = dict(cfg.get("metadata") or {})
    elif fmt == "sparsify":
        cfg = json.loads((folder / "cfg.json").read_text())
        raw = _safetensors(folder / "sae.safetensors")
        if "encoder.weight" not in raw:
            raise CorruptedError(f"{folder}/sae.safetensors has no encoder.weight.", "Check it.")
        d_sae, d_in = raw["encoder.weight"].shape
        tensors = {"W_enc": raw["encoder.weight"].T.contiguous(), "b_enc": raw["encoder.bias"],
                   "W_dec": raw["W_dec"], "b_dec": raw["b_dec"]}
        skip = "none"
        if "W_skip" in raw:
            tensors["W_skip"] = raw["W_skip"]
            skip = "affine"
        sae_cfg = SAEConfig("topk", d_in, d_sae, int(raw["W_dec"].shape[1]) if
                            raw["W_dec"].shape[1] != d_in else None, int(cfg.get("k", 32)), skip,
                            transcoder=bool(cfg.get("transcode", False)))
    elif fmt == "llamascope":
        cfg = json.loads((folder / "hyperparams.json").read_text())
        sae_cfg, tensors = _llama_scope(cfg, _safetensors(folder / "checkpoints" /
                                                          "final.safetensors"), folder)
    elif fmt == "gemmascope":
        with np.load(folder / "params.npz", allow_pickle=False) as npz:
            tensors = {k: torch.from_numpy(np.asarray(npz[k], np.float32)) for k in npz.files}
        d_in, d_sae = tensors["W_enc"].shape
        sae_cfg = SAEConfig("jumprelu", d_in, d_sae, apply_b_dec_to_input=False)
    else:
        raw = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
        if "encoder.weight" in raw:  # the standard AutoEncoder: ReLU, bias subtracted first
            d_sae, d_in = raw["encoder.weight"].shape
            tensors = {"W_enc": raw["encoder.weight"].T.contiguous(),
                       "b_enc": raw["encoder.bias"], "W_dec": raw["decoder.weight"].T.contiguous(),
                       "b_dec": raw["bias"] if "bias" in raw else raw["b_dec"]}
            k = int(raw["k"]) if "k" in raw else None
            sae_cfg = SAEConfig("topk" if k else "relu", d_in, d_sae, k=k or 1)
        else:
            d_in, d_sae = raw["W_enc"].shape
            tensors = dict(raw)
            sae_cfg = SAEConfig("jumprelu", d_in, d_sae, apply_b_dec_to_input=False)
        cfg_path = folder / "config.json"
        if cfg_path.is_file():
            trainer = json.loads(cfg_path.read_text()).get("trainer", {})
            meta = {"model_name": trainer.get("lm_name"), "layer": trainer.get("layer")}
    if fmt == "sparsify":
        cfg = read_json_if(folder / "cfg.json")
    sae = build_sae(sae_cfg)
    load_tensors(sae, tensors, folder)
    return ForeignSAE(sae.eval(), meta, fmt, read_hook(folder, fmt, cfg))


def _llama_scope(hp: dict[str, Any], raw: dict[str, torch.Tensor],
                 folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Llama Scope's released checkpoints as a plain JumpReLU on raw activations.

    Their hyperparams say how they were trained: on activations scaled to norm sqrt(d_model)
    (``norm_activation: dataset-wise`` with ``dataset_average_activation_norm`` in/out), with the
    decoder norm inside the sparsity (``sparsity_include_decoder_norm``: a latent is
    (W_enc x + b_enc) * ||W_dec row||, thresholded by one ``jump_relu_threshold``), and the
    decoder bias not subtracted before encoding. All of it folds into the weights:
    W_enc' = W_enc * ||W_dec|| * sqrt(d) / norm_in, b_enc' = b_enc * ||W_dec||, W_dec' = W_dec /
    ||W_dec|| * norm_out / sqrt(d), b_dec' = b_dec * norm_out / sqrt(d)."""
    for key in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"):
        if key not in raw:
            raise CorruptedError(f"{folder}/checkpoints/final.safetensors has no {key}.",
                                 "Check that the download is complete.")
    W_enc_FD, b_enc_F = raw["encoder.weight"].float(), raw["encoder.bias"].float()
    W_dec_DF, b_dec_D = raw["decoder.weight"].float(), raw["decoder.bias"].float()
    d_sae, d_in = W_enc_FD.shape
    d_out = W_dec_DF.shape[0]
    norms = hp.get("dataset_average_activation_norm") or {}
    scale_in = (d_in ** 0.5) / float(norms["in"]) if norms.get("in") else 1.0
    scale_out = float(norms["out"]) / (d_out ** 0.5) if norms.get("out") else 1.0
    dec_norm_F = W_dec_DF.norm(dim=0).clamp_min(1e-12) if hp.get(
        "sparsity_include_decoder_norm", True) else torch.ones(d_sae)
    threshold = float(hp.get("jump_relu_threshold", 0.0))
    tensors = {"W_enc": (W_enc_FD * dec_norm_F[:, None] * scale_in).T.contiguous(),
               "b_enc": b_enc_F * dec_norm_F,
               "W_dec": (W_dec_DF / dec_norm_F[None, :] * scale_out).T.contiguous(),
               "b_dec": b_dec_D * scale_out,
               "threshold": torch.full((d_sae,), threshold)}
    transcoder = hp.get("hook_point_out", hp.get("hook_point_in")) != hp.get("hook_point_in")
    cfg = SAEConfig("jumprelu", d_in, d_sae, d_out if d_out != d_in or transcoder else None,
                    apply_b_dec_to_input=bool(hp.get("apply_decoder_bias_to_pre_encoder", False)),
                    transcoder=transcoder)
    return cfg, tensors


def import_sae(ws: Workspace, folder: Path, name: str, model: str | None = None,
               hook: str | None = None, overwrite: bool = False,
               fold_centering: bool = False, task: TaskState | None = None) -> SAEManifest:
    """Convert and register an SAE. ``model`` and ``hook`` default to what the files say
    (checked against the workspace); given, they override it. ``fold_centering``: the SAE was
    trained on TransformerLens activations with ``center_writing_weights`` (each token's residual
    minus its mean), which is folded into the encoder so it reads the model's raw residual."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{folder} is a file, not an SAE's folder.",
                                "Give the folder that holds the SAE's weights and config "
                                "(e.g. cfg.json and sae_weights.safetensors).")
    if not folder.is_dir():
        raise NotFoundError(f"The folder {folder} does not exist.", "Check the path.")
    ws.refuse_existing("sae", name, overwrite)
    sae, meta, fmt, found = read_foreign(folder)
    model, hook = _placement(ws, sae, found, folder, model, hook)
    if fold_centering:
        _fold_centering(sae)
    summary = SAESummary(architecture=sae.cfg.architecture, d_in=sae.cfg.d_in,
                         d_sae=sae.cfg.d_sae, hook=hook, target_hook=found.target,
                         imported_format=fmt)
    config = {"source": str(folder), "format": fmt, "transcoder": sae.cfg.transcoder}
    with ws.build("sae", name, "import", config, overwrite) as b:
        save_sae(b.folder, sae, {**meta, "model_name": model, "hook_name": hook,
                                 "hook_name_out": found.target, "imported_from": str(folder),
                                 "imported_format": fmt, "hook_name_in_files": found.said,
                                 "model_in_files": found.model},
                 {"imported": True, "summary": summary.to_json(), "mistudio": __version__})
        b.manifest = SAEManifest(name, config=config, summary=summary,
                                 provenance=SAEProvenance(**made_now(), model=model))
    return b.manifest


def _placement(ws: Workspace, sae: SparseCoder, found: FoundHook, folder: Path,
               model: str | None, hook: str | None) -> tuple[str, str]:
    """The workspace model and hook point an imported SAE reads, checked against its width."""
    model = model or match_model(ws, found.model)
    if model is None:
        known = ", ".join(a.name for a in ws.catalog.list("model")) or "none"
        said = f" (its files name {found.model!r})" if found.model else ""
        raise InvalidInputError(f"No model of this workspace matches the SAE{said}; registered: "
                                f"{known}.", "Register that model first, or choose one with "
                                "«model=NAME».")
    info = model_info(ws, model)
    hook = hook or found.hook
    if hook is None:
        raise InvalidInputError(f"The files in {folder} do not say which hook point the SAE "
                                "reads.", f"Give it («hook»), e.g. layers."
                                f"{info.n_layers // 2}.resid_post.")
    _, point = _check_hook(hook, info, model)
    if found.target is not None:
        _check_hook(found.target, info, model)
    width = info.width(point)
    if sae.cfg.d_in != width:
        raise InvalidInputError(
            f"The SAE reads {sae.cfg.d_in}-wide activations but {hook} of {model!r} is "
            f"{width} wide" + (f" (its files say {found.said})" if found.said else "") + ".",
            "Import it for the model and hook point it was trained on.")
    return model, hook


def _check_hook(hook: str, info: Any, model: str) -> tuple[int, str]:
    try:
        layer, point = parse_hook_key(hook)
    except ValueError:
        raise InvalidInputError(f"Hook point {hook!r} is not of the form layers.L.HOOK.",
                                f"For example layers.{info.n_layers // 2}.resid_post.") from None
    if point not in HOOK_POINTS or not 0 <= layer < info.n_layers:
        raise InvalidInputError(f"Model {model!r} has no hook point {hook!r}.",
                                f"Use layers.0-{info.n_layers - 1} with one of {', '.join(HOOK_POINTS)}.")
    return layer, point


@torch.no_grad()
def _fold_centering(sae: SparseCoder) -> None:
    """pre = (C x - b_dec) W + b_enc with C = I - 11^T / d equals (x - b_dec) W' + b_enc' for
    W' = C W and b_enc' = b_enc - mean(b_dec) * (1^T W); without the b_dec subtraction, only W."""
    W = sae.W_enc_DF
    col_sum_F = W.sum(0)  # 1^T W
    if sae.cfg.apply_b_dec_to_input:
        sae.b_enc_F.sub_(sae.b_dec_O.mean() * col_sum_F)
    W.sub_(col_sum_F[None, :] / W.shape[0])


def export_sae(ws: Workspace, name: str, out: Path, fmt: str = "saelens",
               quantize: str = "none", task: TaskState | None = None) -> dict[str, Any]:
    """Copy ``saes/NAME`` to ``out`` in the SAELens layout, or write ONNX graphs there.

    ``out`` must be new or empty; it is built under a temporary name and renamed when complete.
    ONNX exports are checked in onnxruntime on rows of the SAE's own activation set (when the
    workspace still has it) and the result is written to ``out/export.json``; ``quantize="int8"``
    adds INT8 graphs with their measured error.
    """
    import shutil

    from mistudio.core.sae.io import EXTRA_FILE, SPARSITY_FILE, load_sae

    if fmt not in ("saelens", "onnx"):
        raise InvalidInputError(f"Unknown export format {fmt!r}.", "Use saelens or onnx.")
    if quantize not in ("none", "int8") or (quantize == "int8" and fmt != "onnx"):
        raise InvalidInputError(f"Export quantization {quantize!r} with format {fmt!r} is not "
                                "available.", "Use «format=onnx» with «quantize=int8».")
    art = ws.catalog.get("sae", name)
    if art.status != "complete":
        raise InvalidInputError(f"SAE {name!r} has not finished training.",
                                "Resume its training first.")
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"{out} exists and is not an empty folder.",
                                "Choose a new or empty folder («out»).")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    src = Path(art.path)
    info: dict[str, Any] = {"sae": name, "format": fmt, "out": str(out)}
    if out.exists():
        out.rmdir()  # empty: nothing is lost, and building() renames the result into place
    sae, _ = load_sae(src)  # the files must read back as an SAE before anything is written
    bad = [n for n, t in sae.state_dict().items() if t.is_floating_point() and
           not bool(torch.isfinite(t).all())]
    if bad:
        raise CorruptedError(f"The weights of SAE {name!r} hold NaN or infinite values "
                             f"({', '.join(bad)}); nothing was exported.",
                             "Train it again (a lower learning rate helps), or re-import it.")
    with building(out, tmp):
        if fmt == "saelens":
            for f in (CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE, EXTRA_FILE):
                if (src / f).exists():
                    shutil.copy2(src / f, tmp / f)
        else:
            from mistudio.core.sae.onnx_export import export_onnx, quantize_onnx

            sample = _sample_rows(ws, art.provenance.activations, art.summary.hook)
            result = export_onnx(sae, tmp, sample)
            info.update(max_abs_diff=result.max_abs_diff, max_abs_value=result.max_abs_value,
                        files=[result.encoder.name, result.full.name],
                        checked_on="activations" if sample is not None else "random inputs")
            if quantize == "int8":
                rows = sample if sample is not None else np.random.default_rng(0).standard_normal(
                    (256, sae.cfg.d_in)).astype(np.float32)
                info["int8"] = quantize_onnx(result, sae, rows)
                info["files"] += info["int8"]["files"]
            write_json_atomic(tmp / "export.json", info)
    return info


def _sample_rows(ws: Workspace, activations: str | None, hook: str | None) -> np.ndarray | None:
    from mistudio.core.activations.store import open_activations

    if not activations or not hook or ws.catalog.find("activations", activations) is None:
        return None
    acts = open_activations(ws, activations)
    if hook not in acts.keys:
        return None
    return acts.rows(hook, 0, min(256, acts.n_rows)).astype(np.float32)
