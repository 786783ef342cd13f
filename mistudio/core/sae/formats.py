"""Importing SAEs made elsewhere: SAELens folders, sparsify folders, Gemma Scope ``params.npz``
and dictionary_learning ``ae.pt``. Nothing is unpickled: safetensors, ``np.load`` without pickle,
and ``torch.load(weights_only=True)`` for the one format that is a torch file.

After conversion the shapes are checked against the chosen model and hook point, and the SAE is
saved in the workspace in the SAELens layout like one trained here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mistudio import __version__
from mistudio.core.adapters import HOOK_POINTS, parse_hook_key
from mistudio.core.errors import CorruptedError, InvalidInputError, NotFoundError
from mistudio.core.models import model_info
from mistudio.core.sae import SAEConfig, SparseCoder, build_sae
from mistudio.core.sae.io import CFG_FILE, WEIGHTS_FILE, config_from_saelens, load_tensors, save_sae
from mistudio.core.workspace import MANIFEST, Workspace, building, write_json_atomic


def detect_format(folder: Path) -> str:
    if (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return "saelens"
    if (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file():
        return "sparsify"
    if (folder / "params.npz").is_file():
        return "gemmascope"
    if (folder / "ae.pt").is_file():
        return "dictionary_learning"
    raise InvalidInputError(
        f"{folder} holds no SAE miStudio can read.",
        "Expected cfg.json + sae_weights.safetensors (SAELens), cfg.json + sae.safetensors "
        "(sparsify), params.npz (Gemma Scope) or ae.pt (dictionary_learning).")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise CorruptedError(f"{path} cannot be read ({err}).", "Check the file.") from err


def read_foreign(folder: Path) -> tuple[SparseCoder, dict[str, Any], str]:
    """(coder, metadata found in the files, format name)."""
    fmt = detect_format(folder)
    meta: dict[str, Any] = {}
    if fmt == "saelens":
        cfg = json.loads((folder / CFG_FILE).read_text())
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
    sae = build_sae(sae_cfg)
    load_tensors(sae, tensors, folder)
    return sae.eval(), meta, fmt


def import_sae(ws: Workspace, folder: Path, name: str, model: str, hook: str,
               overwrite: bool = False) -> dict[str, Any]:
    """Convert and register an SAE; refuses one whose width does not match the model."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"The folder {folder} does not exist.", "Check the path.")
    final, partial = ws.artifact_path("sae", name), ws.partial_path("sae", name)
    ws.refuse_existing("sae", name, overwrite)
    info = model_info(ws, model)
    try:
        layer, point = parse_hook_key(hook)
    except ValueError:
        raise InvalidInputError(f"Hook point {hook!r} is not of the form layers.L.HOOK.",
                                f"For example layers.{info.n_layers // 2}.resid_post.") from None
    if point not in HOOK_POINTS or not 0 <= layer < info.n_layers:
        raise InvalidInputError(f"Model {model!r} has no hook point {hook!r}.",
                                f"Use layers.0-{info.n_layers - 1} with one of {', '.join(HOOK_POINTS)}.")
    sae, meta, fmt = read_foreign(folder)
    if sae.cfg.d_in != info.d_model:
        raise InvalidInputError(
            f"The SAE reads {sae.cfg.d_in}-wide activations but {model!r} has d_model "
            f"{info.d_model}.", "Import it for the model it was trained on.")
    metadata = {**meta, "model_name": model, "hook_name": hook, "imported_from": str(folder),
                "imported_format": fmt}
    summary = {"architecture": sae.cfg.architecture, "d_in": sae.cfg.d_in,
               "d_sae": sae.cfg.d_sae, "hook": hook, "imported_format": fmt}
    with ws.writer("sae", name, "import"), building(final, partial) as out:
        save_sae(out, sae, metadata, {"imported": True, "summary": summary,
                                      "mistudio": __version__})
        manifest = {"kind": "sae", "name": name, "status": "complete",
                    "config": {"source": str(folder), "format": fmt},
                    "provenance": {"model": model, "created": time.time()}, "summary": summary}
        write_json_atomic(out / MANIFEST, manifest)
    ws.register(manifest)
    return manifest


def export_sae(ws: Workspace, name: str, out: Path, fmt: str = "saelens") -> dict[str, Any]:
    """Copy ``saes/NAME`` to ``out`` in the SAELens layout, or write ONNX graphs there.

    ``out`` must be new or empty; it is built under a temporary name and renamed when complete.
    ONNX exports are checked in onnxruntime on rows of the SAE's own activation set (when the
    workspace still has it) and the result is written to ``out/export.json``.
    """
    import shutil

    from mistudio.core.sae.io import EXTRA_FILE, SPARSITY_FILE, load_sae

    if fmt not in ("saelens", "onnx"):
        raise InvalidInputError(f"Unknown export format {fmt!r}.", "Use saelens or onnx.")
    art = ws.catalog.get("sae", name)
    if art.status != "complete":
        raise InvalidInputError(f"SAE {name!r} has not finished training.",
                                "Resume its training first.")
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"{out} exists and is not an empty folder.",
                                "Choose a new or empty --out folder.")
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
            from mistudio.core.sae.onnx_export import export_onnx

            sample = _sample_rows(ws, art.provenance.get("activations"), art.summary.get("hook"))
            result = export_onnx(sae, tmp, sample)
            info.update(max_abs_diff=result.max_abs_diff, max_abs_value=result.max_abs_value,
                        files=[result.encoder.name, result.full.name],
                        checked_on="activations" if sample is not None else "random inputs")
            write_json_atomic(tmp / "export.json", info)
    return info


def _sample_rows(ws: Workspace, activations: str | None, hook: str | None) -> np.ndarray | None:
    from mistudio.core.activations import open_activations

    if not activations or not hook or ws.catalog.find("activations", activations) is None:
        return None
    acts = open_activations(ws, activations)
    if hook not in acts.keys:
        return None
    return acts.rows(hook, 0, min(256, acts.n_rows)).astype(np.float32)
