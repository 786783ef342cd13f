"""ONNX export of a sparse coder for edge inference (onnxruntime on a Jetson, a phone, a browser).

The graphs are written directly with ``onnx.helper`` from the SAELens tensors, not traced from
PyTorch: an SAE is a handful of operators, and building them by hand keeps the export
independent of torch's exporter (which changes between releases and needs extra packages).

Two files, both taking raw activations ``x`` [batch, d_in] (float32, any batch size):

    encoder.onnx   x -> latents [batch, d_sae]
    sae.onnx       x -> latents, reconstruction [batch, d_out] (skip connection included)

After writing, :func:`export_onnx` runs both in onnxruntime on sample inputs and compares them
with PyTorch; the largest difference is returned (and the export refused above ``tolerance``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mistudio.core.runtime.errors import InvalidInputError, ResourceError
from mistudio.core.sae import SparseCoder
from mistudio.core.sae.architectures import architecture
from mistudio.core.sae.io import export_tensors, inference_config

ENCODER_FILE = "encoder.onnx"
FULL_FILE = "sae.onnx"
OPSET = 17


class OnnxExport(NamedTuple):
    """Where the graphs went and how closely onnxruntime reproduces PyTorch."""

    encoder: Path
    full: Path
    max_abs_diff: float
    """Largest |onnxruntime - PyTorch| over latents and reconstruction on the sample inputs."""
    max_abs_value: float
    """Largest |PyTorch| value of the same outputs (the scale the difference is relative to)."""


def _graphs(sae: SparseCoder) -> tuple[bytes, bytes]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = inference_config(sae.cfg)
    t = {k: v.numpy().astype(np.float32) for k, v in export_tensors(sae).items()}
    bias_F = t["b_enc"]
    if cfg.apply_b_dec_to_input and not cfg.transcoder:  # (x - b_dec) W + b = x W + (b - b_dec W)
        bias_F = bias_F - t["b_dec"] @ t["W_enc"]
    inits = {"W_enc": t["W_enc"], "bias_enc": bias_F.astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "W_enc"], ["xW"]),
             helper.make_node("Add", ["xW", "bias_enc"], ["pre"])]
    act = architecture(cfg.architecture).onnx_activation
    if act is None:
        raise InvalidInputError(f"The {sae.cfg.architecture} architecture has no ONNX export.",
                                "Export it in the SAELens layout («format=saelens»).")
    act_nodes, act_inits = act(cfg, t, helper)
    nodes += act_nodes
    inits.update(act_inits)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", cfg.d_in])
    lat_info = helper.make_tensor_value_info("latents", TensorProto.FLOAT, ["batch", cfg.d_sae])

    def model(nodes_: list, inits_: dict[str, np.ndarray], outputs: list, name: str) -> bytes:
        graph = helper.make_graph(nodes_, name, [x_info], outputs,
                                  [numpy_helper.from_array(v, k) for k, v in inits_.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mistudio")
        m.ir_version = min(m.ir_version, 10)  # readable by onnxruntime releases of 2024 on
        onnx.checker.check_model(m)
        return m.SerializeToString()

    encoder = model(nodes, inits, [lat_info], "sae_encoder")
    full_nodes = [*nodes, helper.make_node("MatMul", ["latents", "W_dec"], ["dec"]),
                  helper.make_node("Add", ["dec", "b_dec"], ["recon_no_skip" if "W_skip" in t
                                                             else "reconstruction"])]
    full_inits = {**inits, "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "W_skip" in t:  # SAELens stores W_skip as [d_out, d_in]: x @ W_skip^T
        full_inits["W_skip_T"] = np.ascontiguousarray(t["W_skip"].T)
        full_nodes += [helper.make_node("MatMul", ["x", "W_skip_T"], ["skip"]),
                       helper.make_node("Add", ["recon_no_skip", "skip"], ["reconstruction"])]
    rec_info = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT,
                                             ["batch", cfg.out_dim])
    full = model(full_nodes, full_inits, [lat_info, rec_info], "sae")
    return encoder, full


def run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Run an exported graph in onnxruntime on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})


@torch.no_grad()
def export_onnx(sae: SparseCoder, folder: Path, sample_BD: np.ndarray | None = None,
                tolerance: float = 1e-4) -> OnnxExport:
    """Write ``encoder.onnx`` and ``sae.onnx`` into ``folder`` and check them in onnxruntime.

    ``sample_BD`` are raw activations to compare on (random ones otherwise). The export is
    refused if any output differs from PyTorch by more than ``tolerance`` x max(1, |output|).
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ResourceError("ONNX export needs the onnx and onnxruntime packages.",
                            "pip install onnx onnxruntime") from err
    sae = sae.cpu().eval()
    encoder, full = _graphs(sae)
    folder.mkdir(parents=True, exist_ok=True)
    enc_path, full_path = folder / ENCODER_FILE, folder / FULL_FILE
    enc_path.write_bytes(encoder)
    full_path.write_bytes(full)
    if sample_BD is None:
        sample_BD = np.random.default_rng(0).standard_normal((64, sae.cfg.d_in)).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(sample_BD, dtype=np.float32))
    ref_lat = sae.encode(x).numpy()
    ref_rec = sae.reconstruct(x).numpy()
    (onnx_lat,) = run_onnx(enc_path, sample_BD)
    full_lat, full_rec = run_onnx(full_path, sample_BD)
    diff = max(float(np.abs(a - b).max()) for a, b in
               ((onnx_lat, ref_lat), (full_lat, ref_lat), (full_rec, ref_rec)))
    scale = max(float(np.abs(ref_lat).max()), float(np.abs(ref_rec).max()))
    if diff > tolerance * max(1.0, scale):
        raise InvalidInputError(f"The ONNX graphs differ from PyTorch by up to {diff:.3g} "
                                f"(outputs up to {scale:.3g}).",
                                "Report this as a bug with the SAE's cfg.json; use the SAELens "
                                "format meanwhile.")
    return OnnxExport(enc_path, full_path, diff, scale)


def quantize_onnx(export: OnnxExport, sae: SparseCoder, sample_BD: np.ndarray) -> dict[str, Any]:
    """INT8 copies of both graphs (``encoder.int8.onnx``, ``sae.int8.onnx``) through
    onnxruntime's dynamic quantization (int8 weights, activations quantized per batch), for
    boards that run ONNX models in int8 (Hailo, Coral, Jetson through TensorRT's ONNX parser),
    and how far they are from PyTorch on ``sample_BD``: the reconstruction's relative error and
    explained variance, and how many of the active latents agree."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process image models, on the root logger
    try:
        for src in (export.encoder, export.full):
            dst = src.with_name(src.name.replace(".onnx", ".int8.onnx"))
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            paths[src.name] = dst
    finally:
        root.setLevel(level)
    x = torch.from_numpy(np.ascontiguousarray(sample_BD, dtype=np.float32))
    with torch.no_grad():
        ref_lat, ref_rec = sae.encode(x).numpy(), sae.reconstruct(x).numpy()
    lat, rec = run_onnx(paths[export.full.name], sample_BD)
    (enc_lat,) = run_onnx(paths[export.encoder.name], sample_BD)
    active_ref, active = ref_lat > 0, lat > 0
    union = (active_ref | active).sum(1)
    jaccard = float(np.mean((active_ref & active).sum(1) / np.maximum(union, 1)))
    total_var = float(((sample_BD - sample_BD.mean(0)) ** 2).sum()) or 1.0
    return {"files": [p.name for p in paths.values()],
            "relative_error": float(np.linalg.norm(rec - ref_rec) / max(
                np.linalg.norm(ref_rec), 1e-12)),
            "explained_variance_float": float(1 - ((sample_BD - ref_rec) ** 2).sum() / total_var),
            "explained_variance_int8": float(1 - ((sample_BD - rec) ** 2).sum() / total_var),
            "active_latents_jaccard": jaccard,
            "encoder_matches_full_graph": bool(np.allclose(enc_lat, lat, atol=1e-5)),
            "bytes_float": sum(p.stat().st_size for p in (export.encoder, export.full)),
            "bytes_int8": sum(p.stat().st_size for p in paths.values())}
