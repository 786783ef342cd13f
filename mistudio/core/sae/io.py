"""Saving and loading sparse coders in the SAELens layout (the ecosystem's interchange format).

A saved SAE is a folder::

    cfg.json                   SAELens config: architecture, d_in, d_sae, dtype, ... metadata
    sae_weights.safetensors    W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out], b_dec,
                               threshold (jumprelu), W_skip [d_out, d_in] (skip variants)
    sparsity.safetensors       sparsity: log10 feature density
    mistudio.json              miStudio's extras: exact SAEConfig, training config, metrics

Weights are saved for raw activations: training runs on activations scaled to a fixed mean norm,
and that scale is folded into the weights here, so every reader can use them as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from mistudio.core.runtime.errors import CorruptedError, InvalidInputError
from mistudio.core.sae import SAEConfig, SparseCoder, build_sae
from mistudio.core.sae.architectures import architecture, by_saelens_name
from mistudio.core.store.files import atomic_write, read_json, write_json_atomic
from mistudio.core.store.workspace import Workspace

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
EXTRA_FILE = "mistudio.json"


def saelens_architecture(cfg: SAEConfig) -> str:
    """The SAELens name of an architecture (BatchTopK is saved as JumpReLU)."""
    base = architecture(cfg.architecture).saelens
    if cfg.transcoder or cfg.skip != "none":
        prefix = "" if base == "standard" else f"{base}_"
        return f"{prefix}{'skip_' if cfg.skip != 'none' else ''}transcoder"
    return base


@torch.no_grad()
def export_tensors(sae: SparseCoder, scale_in: float = 1.0,
                   scale_out: float = 1.0) -> dict[str, torch.Tensor]:
    """SAELens-named tensors for raw activations, the normalisation folded in (see module doc)."""
    cfg = sae.cfg
    out = {
        "W_enc": sae.W_enc_DF * scale_in,
        "b_enc": sae.b_enc_F.clone(),
        "W_dec": sae.W_dec_FO / scale_out,
        "b_dec": sae.b_dec_O / scale_out,
    }
    out.update(sae.extra_tensors(scale_in, scale_out))
    if cfg.skip == "affine":
        out["W_skip"] = (sae.W_skip_DO * (scale_in / scale_out)).T
    elif cfg.skip in ("fixed", "learned"):
        alpha = float(sae.skip_alpha) * scale_in / scale_out
        out["W_skip"] = torch.eye(cfg.d_in) * alpha
    return {k: v.detach().float().contiguous().cpu() for k, v in out.items()}


def inference_config(cfg: SAEConfig) -> SAEConfig:
    """What a saved coder is at inference: BatchTopK becomes JumpReLU, skips become affine."""
    data = cfg.to_dict()
    saved_as = architecture(cfg.architecture).saved_as
    if saved_as:
        data["architecture"] = saved_as
    if cfg.skip != "none":
        data["skip"] = "affine"
    return SAEConfig.from_dict(data)


def save_sae(folder: Path, sae: SparseCoder, metadata: dict[str, Any], extra: dict[str, Any],
             scale_in: float = 1.0, scale_out: float = 1.0,
             log10_density: torch.Tensor | None = None) -> None:
    """Write the four files into ``folder`` (which the caller renames into place when done)."""
    cfg = sae.cfg
    tensors = export_tensors(sae, scale_in, scale_out)
    saelens_cfg = {
        "architecture": saelens_architecture(cfg), "d_in": cfg.d_in, "d_sae": cfg.d_sae,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": cfg.apply_b_dec_to_input
        and not cfg.transcoder, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": metadata,
    }
    if cfg.architecture == "topk":
        saelens_cfg["k"] = cfg.k
    if cfg.out_dim != cfg.d_in or cfg.transcoder:
        saelens_cfg["d_out"] = cfg.out_dim
    folder.mkdir(parents=True, exist_ok=True)
    _write_safetensors(folder / WEIGHTS_FILE, tensors)
    if log10_density is not None:
        _write_safetensors(folder / SPARSITY_FILE,
                           {"sparsity": log10_density.float().contiguous().cpu()})
    write_json_atomic(folder / CFG_FILE, saelens_cfg)
    write_json_atomic(folder / EXTRA_FILE, {**extra, "sae_config": inference_config(cfg).to_dict(),
                                            "trained_config": cfg.to_dict()})


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors' own writer creates files readable by their owner only (0600): write its
    bytes through the workspace's atomic writer instead (0644, fsynced, all or nothing)."""
    with atomic_write(path) as fh:
        fh.write(save(tensors))


def load_sae(folder: Path, device: torch.device | str = "cpu") -> tuple[SparseCoder, dict[str, Any]]:
    """A saved coder ready for inference on raw activations, and its SAELens config."""
    fix = "Train or import it again."
    saelens_cfg = read_json(folder / CFG_FILE, f"SAE at {folder}", fix)
    extra = read_json(folder / EXTRA_FILE, f"SAE at {folder}", fix) if (
        folder / EXTRA_FILE).exists() else {}
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as err:
        raise CorruptedError(f"The weights of the SAE at {folder} cannot be read ({err}).",
                             fix) from err
    if "sae_config" in extra:
        cfg = SAEConfig.from_dict(extra["sae_config"])
    else:
        cfg = config_from_saelens(saelens_cfg, tensors)
    sae = build_sae(cfg)
    load_tensors(sae, tensors, folder)
    return sae.to(device).eval().requires_grad_(False), saelens_cfg


def config_from_saelens(cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SAEConfig:
    arch = str(cfg.get("architecture", "standard"))
    base = by_saelens_name(arch)
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    d_out = int(cfg.get("d_out", d_in))
    return SAEConfig(base, d_in, d_sae, d_out if d_out != d_in else None, int(cfg.get("k", 1)),
                     skip="affine" if "W_skip" in tensors else "none",
                     apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                     transcoder="transcoder" in arch)


@torch.no_grad()
def load_tensors(sae: SparseCoder, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """Copy SAELens-named tensors into a coder, checking names and shapes."""
    cfg = sae.cfg
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
                "W_dec": (cfg.d_sae, cfg.out_dim), "b_dec": (cfg.out_dim,)}
    expected.update(sae.extra_shapes())
    if cfg.skip == "affine":
        expected["W_skip"] = (cfg.out_dim, cfg.d_in)
    for name, shape in expected.items():
        if name not in tensors:
            raise CorruptedError(f"The SAE weights in {where} have no tensor {name!r}.",
                                 "Check that the file is complete, or train it again.")
        if tuple(tensors[name].shape) != shape:
            raise InvalidInputError(f"Tensor {name!r} in {where} has shape "
                                    f"{tuple(tensors[name].shape)}, expected {shape}.",
                                    "The file does not match its cfg.json.")
    sae.W_enc_DF.copy_(tensors["W_enc"])
    sae.b_enc_F.copy_(tensors["b_enc"])
    sae.W_dec_FO.copy_(tensors["W_dec"])
    sae.b_dec_O.copy_(tensors["b_dec"])
    sae.load_extra({k: tensors[k] for k in sae.extra_shapes()})
    if cfg.skip == "affine":
        sae.W_skip_DO.copy_(tensors["W_skip"].T)


def read_extra(folder: Path) -> dict[str, Any]:
    path = folder / EXTRA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def open_sae(ws: Workspace, name: str, device: str = "cpu") -> tuple[SparseCoder, dict[str, Any]]:
    """A trained or imported SAE of the workspace, ready for inference on raw activations, with
    its SAELens cfg.json."""
    art = ws.catalog.get("sae", name)
    if art.status != "complete":
        raise InvalidInputError(f"SAE {name!r} has not finished training (step "
                                f"{art.summary.steps}).",
                                "«do:resume».")
    return load_sae(Path(art.path), device)
