"""The ONNX operators of each built-in activation function: "pre" (x W_enc + bias) in,
"latents" out. An architecture names its builder (:mod:`.architectures`); a plugin writes its
own the same way. Each returns the nodes and the initialisers they read."""

from __future__ import annotations

from typing import Any

import numpy as np


def relu_nodes(cfg: Any, tensors: dict[str, np.ndarray], helper: Any) -> tuple[list[Any], dict]:
    return [helper.make_node("Relu", ["pre"], ["latents"])], {}


def topk_nodes(cfg: Any, tensors: dict[str, np.ndarray], helper: Any) -> tuple[list[Any], dict]:
    """The k largest pre-activations per row, ReLU'd, scattered into zeros."""
    from onnx import numpy_helper

    nodes = [helper.make_node("TopK", ["pre", "k"], ["top_vals", "top_idx"], axis=-1),
             helper.make_node("Relu", ["top_vals"], ["top_relu"]),
             helper.make_node("Shape", ["pre"], ["pre_shape"]),
             helper.make_node("ConstantOfShape", ["pre_shape"], ["zeros"],
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("ScatterElements", ["zeros", "top_idx", "top_relu"], ["latents"],
                              axis=1)]
    return nodes, {"k": np.array([cfg.k], dtype=np.int64)}


def jumprelu_nodes(cfg: Any, tensors: dict[str, np.ndarray],
                   helper: Any) -> tuple[list[Any], dict]:
    """pre where pre > threshold, else 0 (JumpReLU, and BatchTopK saved as one)."""
    from onnx import TensorProto

    nodes = [helper.make_node("Greater", ["pre", "threshold"], ["above"]),
             helper.make_node("Cast", ["above"], ["gate"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["pre", "gate"], ["latents"])]
    return nodes, {"threshold": tensors["threshold"]}
