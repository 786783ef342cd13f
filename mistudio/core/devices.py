"""Device and dtype choice, and how much memory there is to load a model into."""

from __future__ import annotations

import torch

from mistudio.core.errors import InvalidInputError, ResourceError
from mistudio.core.workspace import human_bytes

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
                                "Use --device cpu, or install a CUDA build of torch.")
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


def estimate_model_bytes(n_params: int, dtype: torch.dtype) -> int:
    """Weights plus a margin for buffers, activations of a small batch and the allocator."""
    per_param = torch.finfo(dtype).bits // 8
    return int(n_params * per_param * 1.2) + 256 * 2**20


def require_memory(n_params: int, dtype: torch.dtype, device: torch.device, what: str) -> None:
    """Refuse to load a model that will not fit, before trying (and swapping or crashing)."""
    need = estimate_model_bytes(n_params, dtype)
    have = available_memory(device)
    if need > have:
        smaller = " or --dtype float16" if dtype == torch.float32 else ""
        raise ResourceError(
            f"{what} needs about {human_bytes(need)} on {device.type} but only "
            f"{human_bytes(have)} is free.",
            f"Close other programs, pick a smaller model{smaller}, or use another --device.",
        )
