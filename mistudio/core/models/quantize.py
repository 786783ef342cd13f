"""Weight-only INT8 and INT4 quantization in plain PyTorch, applied while a model loads.

Users look inside the model they deploy, often quantized, on the hardware they have. Weight-only
quantization keeps activations (what miStudio reads and steers) in floating point: every hook
point works as before, only the weights of the linear layers and the embedding are stored in
fewer bits and expanded when used.

- ``int8``: one scale per output channel (absmax / 127). On the CPU, for a few rows at a time
  (generation), the matrix product runs in PyTorch's int8-weight kernel
  (``_weight_int8pack_mm``); otherwise the weight is expanded one layer at a time.
- ``int4``: asymmetric, one scale and zero point per group of 64 inputs, two weights per byte.
  The weight is expanded one layer at a time (memory is the point here; it is slower than
  float on a CPU).

Written here rather than taken from torchao: torchao 0.18's INT4 kernels need CUDA (or its
``mslk`` package), and miStudio must quantize on a laptop CPU and a Jetson the same way.
bitsandbytes' 8-bit and NF4 loading are used instead when asked for on CUDA
(:mod:`mistudio.core.models.registry`).

Quantizing while loading (:func:`load_quantized`) streams the checkpoint tensor by tensor into a
model built on the meta device, so the full-precision model never exists in memory: peak memory
is the quantized weights plus one tensor. Layers above ``n_layers`` are never read at all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mistudio.core.runtime.errors import InvalidInputError

QUANTIZATIONS = ("none", "int8", "int4", "nf4", "bnb8")
"""none, miStudio's int8 / int4 (any device), bitsandbytes NF4 / 8-bit (CUDA with bitsandbytes)."""
GROUP = 64
BITS = {"none": 32, "int8": 8, "int4": 4, "nf4": 4, "bnb8": 8}


KERNEL_ROWS = 64
"""Up to this many input rows, int8 layers on a CPU use PyTorch's int8-weight kernel."""


def _rows_per_chunk(width: int) -> int:
    """Rows quantized at a time: about 16 MB of float32, however large the matrix."""
    return max(1, (4 << 20) // max(width, 1))


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one float scale per output channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # placeholders: the real tensors are made by load(), so none is allocated twice
        self.register_buffer("weight_q", torch.empty(out_features, in_features,
                                                     dtype=torch.int8, device="meta"))
        self.register_buffer("scale", torch.empty(out_features, device="meta"))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @torch.no_grad()
    def load(self, weight: torch.Tensor) -> None:
        rows = weight.shape[0]
        q = torch.empty(weight.shape, dtype=torch.int8)
        scale = torch.empty(rows)
        for a in range(0, rows, _rows_per_chunk(weight.shape[1])):  # bounded float copies
            w = weight[a:a + _rows_per_chunk(weight.shape[1])].float()
            sc = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # [rows]
            q[a:a + len(w)] = (w / sc[:, None]).round_().clamp_(-127, 127).to(torch.int8)
            scale[a:a + len(w)] = sc
        self.weight_q, self.scale = q, scale

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight_q.to(dtype) * self.scale[:, None].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        # PyTorch's int8-weight kernel with bfloat16 inputs is 3-15x faster than a float32
        # matmul for a few rows (generation) and grows with the rows, so that from about 64 rows
        # (a batch of sequences) expanding the weight to float32 once wins and keeps float32
        # inputs; measured on AVX-512 (benchmarks/models.py).
        if x.device.type == "cpu" and x2.shape[0] <= KERNEL_ROWS and x.is_floating_point() \
                and hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(),
                                                   self.weight_q, self.scale.to(torch.bfloat16))
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
            return y + self.bias.to(y.dtype) if self.bias is not None else y
        return F.linear(x, self.dequantize(x.dtype),
                        self.bias.to(x.dtype) if self.bias is not None else None)


class Int4Linear(nn.Module):
    """A linear layer whose weight is 4-bit, packed two per byte, with a float16 scale and zero
    point for each group of ``GROUP`` inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        groups = in_features // GROUP
        self.register_buffer("packed", torch.empty(out_features, in_features // 2,
                                                   dtype=torch.uint8, device="meta"))
        self.register_buffer("scale", torch.empty(out_features, groups, dtype=torch.float16,
                                                  device="meta"))
        self.register_buffer("zero", torch.empty(out_features, groups, dtype=torch.float16,
                                                 device="meta"))
        # the weight in PyTorch's CPU int4 kernel layout, once use_cpu_kernel() ran
        self.register_buffer("cpu_pack", None)
        self.register_buffer("scale_zero", None)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @torch.no_grad()
    def load(self, weight: torch.Tensor) -> None:
        groups = self.in_features // GROUP
        packed = torch.empty(self.out_features, self.in_features // 2, dtype=torch.uint8)
        scales = torch.empty(self.out_features, groups, dtype=torch.float16)
        zeros = torch.empty(self.out_features, groups, dtype=torch.float16)
        step = _rows_per_chunk(self.in_features)
        for a in range(0, self.out_features, step):  # bounded float copies
            w = weight[a:a + step].float().reshape(-1, groups, GROUP)  # [rows, groups, GROUP]
            lo, hi = w.amin(-1), w.amax(-1)
            scale = ((hi - lo) / 15.0).clamp_min(1e-8)
            q = ((w - lo[..., None]) / scale[..., None]).round_().clamp_(0, 15).to(torch.uint8)
            q = q.reshape(len(w), self.in_features)
            packed[a:a + len(w)] = q[:, 0::2] | (q[:, 1::2] << 4)
            scales[a:a + len(w)], zeros[a:a + len(w)] = scale.half(), lo.half()
        self.packed, self.scale, self.zero = packed, scales, zeros

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        if self.cpu_pack is not None:  # only the kernel's layout is kept: read through it
            eye = torch.eye(self.in_features, dtype=torch.bfloat16)
            return self._cpu_matmul(eye).T.to(dtype).contiguous()
        q = torch.stack([self.packed & 15, self.packed >> 4], dim=-1)  # [out, in/2, 2]
        q = q.reshape(self.out_features, -1, GROUP).to(dtype)  # [out, groups, GROUP]
        w = q * self.scale.to(dtype)[..., None] + self.zero.to(dtype)[..., None]
        return w.reshape(self.out_features, self.in_features)

    @torch.no_grad()
    def use_cpu_kernel(self) -> bool:
        """Repack the weight for PyTorch's CPU int4 kernel (3-100x faster than expanding it for
        every call; inputs rounded to bfloat16), dropping the portable layout so that memory does
        not double. False, and nothing changed, where the kernel is missing."""
        ops = torch.ops.aten
        if self.cpu_pack is not None:
            return True
        if not (hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and
                hasattr(ops, "_weight_int4pack_mm_for_cpu")) or self.packed.device.type != "cpu":
            return False
        q = torch.stack([self.packed & 15, self.packed >> 4], dim=-1)  # [out, in/2, 2]
        q = q.reshape(self.out_features, self.in_features).to(torch.int32)
        try:
            pack = ops._convert_weight_to_int4pack_for_cpu(q, 1)
        except RuntimeError:  # a build without it for this CPU
            return False
        scale = self.scale.float()
        # the kernel reads w = (q - 8) * scale + zero; ours is w = q * scale + lo
        zero = self.zero.float() + 8 * scale
        self.cpu_pack = pack
        self.scale_zero = torch.stack([scale.T, zero.T], dim=-1).to(torch.bfloat16).contiguous()
        del q
        self.packed = self.scale = self.zero = None  # type: ignore[assignment]
        return True

    def _cpu_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16).contiguous(),
                                                          self.cpu_pack, GROUP, self.scale_zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_pack is not None and x.device.type == "cpu":
            y = self._cpu_matmul(x.reshape(-1, self.in_features)).to(x.dtype)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y + self.bias.to(y.dtype) if self.bias is not None else y
        return F.linear(x, self.dequantize(x.dtype),
                        self.bias.to(x.dtype) if self.bias is not None else None)


class Int8Embedding(nn.Module):
    """An embedding stored in int8 with one scale per row (what a tied output head reads too)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None,
                 dtype: torch.dtype, embed_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.out_dtype = padding_idx, dtype
        self.embed_scale = embed_scale
        """Gemma's embeddings multiply by sqrt(d_model) inside the module: kept."""
        self.register_buffer("weight_q", torch.empty(num_embeddings, embedding_dim,
                                                     dtype=torch.int8, device="meta"))
        self.register_buffer("scale", torch.empty(num_embeddings, device="meta"))

    load = Int8Linear.load

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.weight_q[ids].to(self.out_dtype) * self.scale[ids, None].to(self.out_dtype)
        return out * self.embed_scale.to(out) if self.embed_scale is not None else out

    def as_head(self) -> Int8Linear:
        """The tied output head: the same int8 rows and scales, read as a linear layer."""
        head = Int8Linear(self.embedding_dim, self.num_embeddings, bias=False)
        head.weight_q, head.scale = self.weight_q, self.scale
        return head


def use_cpu_kernels(model: nn.Module) -> int:
    """Move every int4 layer of a model that runs on the CPU to PyTorch's int4 kernel layout;
    returns how many were."""
    return sum(m.use_cpu_kernel() for m in model.modules() if isinstance(m, Int4Linear))


def _quantized_linear(module: nn.Module, mode: str) -> nn.Module:
    """The quantized twin of a linear layer (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight
    is stored transposed, [in, out])."""
    out_f, in_f = module.weight.shape
    if not isinstance(module, nn.Linear):
        in_f, out_f = out_f, in_f
    cls = Int4Linear if mode == "int4" and in_f % GROUP == 0 else Int8Linear
    return cls(in_f, out_f, module.bias is not None)


def _layer_count_attr(config: Any) -> str:
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, attr):
            return attr
    raise InvalidInputError("The model's configuration does not say how many layers it has.",
                            "Load it without quantization.")


def _checkpoint_keys(folder: Path) -> list[tuple[Path, str]]:
    """(file, tensor name) of every tensor of the checkpoint."""
    from safetensors import safe_open

    out = []
    for file in _checkpoint_files(folder):
        with safe_open(str(file), framework="pt") as fh:
            out += [(file, k) for k in fh.keys()]  # safe_open has no __iter__
    return out


def _checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidInputError(f"{folder} has no safetensors weights to quantize from.",
                                "Quantized loading reads safetensors checkpoints (GGUF models are "
                                "converted to one on first use).")
    return files


@torch.no_grad()
def load_quantized(folder: str | Path, config: Any, mode: str, dtype: torch.dtype = torch.float32,
                   n_layers: int | None = None, trust_remote_code: bool = False) -> nn.Module:
    """A causal LM from a safetensors checkpoint with its linear layers (and its embedding and
    tied head) quantized to ``mode`` as they are read, and only its first ``n_layers`` blocks
    (the rest never read); other tensors in ``dtype``."""
    import copy

    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    from mistudio.core.models.hf import HF_IMPORT_LOCK

    with HF_IMPORT_LOCK:
        from transformers import AutoModelForCausalLM

    if mode not in ("int8", "int4"):
        raise InvalidInputError(f"Unknown quantization {mode!r} for loading.", "Use int8 or int4.")
    config = copy.deepcopy(config)
    total = getattr(config, _layer_count_attr(config))
    keep = total if n_layers is None else max(1, min(n_layers, total))
    setattr(config, _layer_count_attr(config), keep)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 trust_remote_code=trust_remote_code)
    with HF_IMPORT_LOCK:
        from transformers.pytorch_utils import Conv1D

    quantized: dict[str, nn.Module] = {}
    transposed: set[str] = set()
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            transposed.add(name)
        if isinstance(module, nn.Linear | Conv1D) or (isinstance(module, nn.Embedding) and
                                                      module is model.get_input_embeddings()):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = (_quantized_linear(module, mode) if not isinstance(module, nn.Embedding) else
                   Int8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx,
                                 dtype, getattr(module, "embed_scale", None)))
            setattr(parent, child, new)
            quantized[name] = new
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    prefix = getattr(model, "base_model_prefix", "")
    rename = _renamer(model)
    layer_re = re.compile(r"\.(?:layers|h)\.(\d+)\.")
    for file, stored in _checkpoint_keys(Path(folder)):
        key = rename(stored)
        m = layer_re.search(f".{key}")
        if m and int(m.group(1)) >= keep:
            continue  # a layer above the last one needed: never read
        name = key if key in names or key.rsplit(".", 1)[0] in quantized else f"{prefix}.{key}"
        owner = name.rsplit(".", 1)[0]
        if owner not in quantized and name not in names:
            continue
        # one tensor per opening: a mapping kept open would keep every page read so far in
        # the process's memory, the whole checkpoint by the end
        with safe_open(str(file), framework="pt") as fh:
            tensor = fh.get_tensor(stored)
        if owner in quantized and name.endswith(".weight"):
            quantized[owner].load(tensor.T if owner in transposed else tensor)
        elif owner in quantized and name.endswith(".bias"):
            quantized[owner].bias = nn.Parameter(tensor.to(dtype), requires_grad=False)
        else:
            set_module_tensor_to_device(model, name, "cpu", value=tensor, dtype=dtype)
        del tensor
    emb = model.get_input_embeddings()
    if getattr(config, "tie_word_embeddings", False) and isinstance(emb, Int8Embedding):
        model.set_output_embeddings(emb.as_head())
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
               if t.device.type == "meta"]
    if missing:
        raise InvalidInputError(f"The checkpoint lacks {len(missing)} weights ({missing[0]}, "
                                "...) the model needs.", "Load it without quantization.")
    return model.eval()


def _renamer(model: nn.Module) -> Any:
    """The checkpoint-key renames transformers applies when it loads this model (transformers
    5 renames e.g. GPT-NeoX's ``embed_out`` to ``lm_head``). Conversions that split or merge
    tensors are not supported while quantizing and give one clear error when met."""
    try:
        from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping
    except ImportError:  # transformers 4: checkpoints are named as the modules
        return lambda key: key
    rules, other = [], []
    for t in get_model_conversion_mapping(model):
        pats = [re.compile(p) for p in t.source_patterns]
        if isinstance(t, WeightRenaming):
            rules.extend(zip(pats, t.target_patterns, strict=False))
        else:
            other.extend(pats)

    def rename(key: str) -> str:
        if any(p.search(key) for p in other):
            raise InvalidInputError(f"This checkpoint needs its tensor {key!r} converted while "
                                    "loading, which quantized loading does not do.",
                                    "Load the model without quantization.")
        for pat, target in rules:
            key = pat.sub(target, key)
        return key

    return rename


def quantized_bytes(n_params: int, mode: str) -> int:
    """Memory of ``n_params`` weights in ``mode`` (scales included)."""
    if mode == "none":
        return n_params * 4
    per = {"int8": 1.0 + 4 / 576, "bnb8": 1.0 + 4 / 576, "int4": 0.5 + 4 / GROUP,
           "nf4": 0.5 + 2 / GROUP}[mode]
    return int(n_params * per)
