"""Device and dtype choice, and how much memory there is to load a model into."""

from __future__ import annotations

import functools
from typing import Any

import torch

from mistudio.core.runtime.errors import InvalidInputError, ResourceError
from mistudio.core.store.files import human_bytes

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InvalidInputError(f"Unknown device {device!r}.",
                                "Use auto, cpu, cuda, cuda:N or mps.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("CUDA was requested but this torch build sees no CUDA GPU.",
                                "Use «device=cpu», or install a CUDA build of torch.")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on the CPU, bfloat16 on GPUs that support it, else float16."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise InvalidInputError(f"Unknown dtype {dtype!r}.", f"Use auto or one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def available_memory(device: torch.device) -> int:
    """Bytes free for a model on ``device`` (system RAM for CPU, MPS and unified-memory boards)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_model_bytes(n_params: int, dtype: torch.dtype, quantize: str = "none") -> int:
    """Weights plus a margin for buffers, activations of a small batch and the allocator."""
    from mistudio.core.models.quantize import quantized_bytes

    per_param = torch.finfo(dtype).bits // 8
    weights = n_params * per_param if quantize == "none" else quantized_bytes(n_params, quantize)
    return int(weights * 1.2) + 256 * 2**20


def require_memory(n_params: int, dtype: torch.dtype, device: torch.device, what: str,
                   quantize: str = "none") -> dict[Any, int] | None:
    """Refuse to load a model that will not fit, before trying (and swapping or crashing).
    On a CUDA device a model that fits the GPU and system RAM together is split between them:
    the returned ``max_memory`` for accelerate's ``device_map="auto"`` (None: it fits)."""
    need = estimate_model_bytes(n_params, dtype, quantize)
    have = available_memory(device)
    if need <= have:
        return None
    if device.type == "cuda" and quantize in ("none", "nf4", "bnb8"):
        ram = available_memory(torch.device("cpu"))
        if need <= int(have * 0.9) + int(ram * 0.8):
            return {device.index or 0: int(have * 0.9), "cpu": int(ram * 0.8)}
    smaller = " or «model_dtype=float16»" if dtype == torch.float32 else ""
    raise ResourceError(
        f"{what} needs about {human_bytes(need)} on {device.type} but only "
        f"{human_bytes(have)} is free.",
        f"Close other programs, quantize it («quantize=int8» or int4){smaller}, pick a smaller "
        "model, or use another «device» («do:plan_memory»).",
    )


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 AVX512-BF16 or AMX).

    There a bfloat16 matmul takes half the time of a float32 one (measured: 66 vs 134 ms for
    4096 x 576 x 4608 on two cores); without it torch emulates bfloat16 and it is slower than
    float32, so nothing should use it. Read from the kernel's flags, so the answer (and with it
    a resumed training run's arithmetic) is the same every time on a machine.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "avx512_bf16" in flags or "amx_bf16" in flags
