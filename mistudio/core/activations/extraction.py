"""Activation extraction: one forward pass per batch, every requested hook point at once,
streamed to chunked files on disk, resumable after a cancel or a crash.

Memory stays bounded by ``chunk_rows`` and the batch, whatever the number of tokens: rows go into
fixed preallocated buffers that are written out as a chunk (temporary name, then rename) and
reused. The manifest lists only complete chunks, so a resumed run continues after the last one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mistudio.core.activations.massive import DEFAULT_FACTOR
from mistudio.core.activations.store import NORMS, POSITIONS, chunk_file, finish_massive
from mistudio.core.data.tokenization import TokenizeConfig, open_tokenized, tokenize_dataset
from mistudio.core.models.adapters import hook_key, validate_hooks
from mistudio.core.models.hooks import capture, forward
from mistudio.core.models.registry import LoadedModel, ModelInfo, load_model, model_info
from mistudio.core.runtime.errors import (
    InvalidInputError,
    NotFoundError,
    ResourceError,
    is_disk_full,
)
from mistudio.core.runtime.tasks import SubTask, TaskState, check_cancelled, silent_task
from mistudio.core.store.files import read_manifest, write_npy_atomic
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.lifecycle import Build
from mistudio.core.store.manifests import (
    ActivationsManifest,
    ActivationsProvenance,
    ActivationsSummary,
    Chunk,
    made_now,
)
from mistudio.core.store.workspace import Workspace

# Fields that change what is stored; a partial run resumes only if they are all the same.
_DATA_FIELDS = ("model", "dataset", "layers", "hooks", "context_length", "max_tokens", "dtype",
                "keep_first_position", "model_dtype", "chunk_rows", "quantize")


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract; stored in the activation set's manifest."""

    model: str
    """Registered model name."""
    dataset: str
    """A tokenized set, or a dataset (tokenized first with this model if needed)."""
    layers: tuple[int, ...]
    """Blocks to read, 0-based."""
    hooks: tuple[str, ...] = ("resid_post",)
    """Hook points read at every layer (see mistudio.core.models.adapters)."""
    context_length: int = 128
    """Tokens per sequence when the dataset has to be tokenized."""
    max_tokens: int | None = None
    """Stop after this many stored rows; None = the whole tokenized set."""
    batch_sequences: int = 8
    """Sequences per forward pass."""
    dtype: Literal["float16", "float32"] = "float16"
    """Storage dtype; float16 halves the disk space."""
    chunk_rows: int = 65536
    """Rows per chunk file (the unit of resumption and of memory use)."""
    keep_first_position: bool = False
    """Store position 0 too: the prepended BOS, or the text's first token where no BOS is
    prepended (the attention sink; its norm is an outlier, flagged as massive)."""
    massive_factor: float = DEFAULT_FACTOR
    """Flag rows whose norm exceeds this multiple of the hook point's median norm (attention
    sinks); they stay on disk but training, evaluation and analysis leave them out by default."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    model_dtype: str = "auto"
    """dtype the model runs in (auto: float32 on CPU, bfloat16/float16 on GPUs)."""
    quantize: Literal["none", "int8", "int4", "nf4", "bnb8"] = "none"
    """Weights of the model read: none, int8, int4 (any device) or nf4 / bnb8 (bitsandbytes on
    CUDA); recorded in the set and every SAE trained on it."""
    sites: tuple[tuple[int, str], ...] = field(init=False)
    """(layer, hook) pairs, derived."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise InvalidInputError("No layer given.", "Give «layers=L» (one or more).")
        if self.batch_sequences <= 0 or self.chunk_rows <= 0:
            raise InvalidInputError("«batch_sequences» and «chunk_rows» must be positive.",
                                    "Use e.g. «batch_sequences=8».")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise InvalidInputError(f"«max_tokens» must be positive, got {self.max_tokens}.",
                                    "Omit it to use the whole dataset.")
        if not (self.massive_factor > 1.0 and self.massive_factor < float("inf")):
            raise InvalidInputError(f"«massive_factor» must be a number above 1, got "
                                    f"{self.massive_factor}.", "Use e.g. «massive_factor=10».")
        from mistudio.core.models.quantize import QUANTIZATIONS

        if self.quantize not in QUANTIZATIONS:
            raise InvalidInputError(f"Unknown quantization {self.quantize!r}.",
                                    f"Use one of {', '.join(QUANTIZATIONS)}.")
        if self.dtype not in ("float16", "float32"):
            raise InvalidInputError(f"Unknown storage dtype {self.dtype!r}.",
                                    "Use float16 or float32.")
        sites = tuple((int(layer), hook) for layer in self.layers for hook in self.hooks)
        object.__setattr__(self, "sites", sites)

    def data_fields(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in _DATA_FIELDS}

    def same_data(self, recorded: dict[str, Any] | None) -> bool:
        """Whether a set recorded with ``recorded`` data fields holds what this config asks for
        (fields added since it was made count at their defaults)."""
        if recorded is None:
            return False
        return {"quantize": "none", **recorded} == self.data_fields()


def default_layer(n_layers: int) -> int:
    """The middle layer: where SAE features are usually most interpretable."""
    return n_layers // 2


def resolve_tokenized(ws: Workspace, cfg: ExtractConfig, task: TaskState) -> str:
    """The tokenized set to read: ``cfg.dataset`` itself, or the dataset tokenized for the model."""
    tok = ws.catalog.find("tokenized", cfg.dataset)
    if tok is not None:
        if tok.config.get("model") != cfg.model:
            raise InvalidInputError(
                f"Tokenized set {cfg.dataset!r} was made with model {tok.config.get('model')!r}, "
                f"not {cfg.model!r}.", "Pass the dataset's name to tokenize it for this model.")
        return cfg.dataset
    if ws.catalog.find("dataset", cfg.dataset) is None:
        known = [a.name for a in ws.catalog.list("dataset") + ws.catalog.list("tokenized")]
        raise NotFoundError(f"There is no dataset or tokenized set named {cfg.dataset!r} "
                            f"(known: {', '.join(known) or 'none yet'}).",
                            "«do:add_dataset» first.")
    tcfg = TokenizeConfig(cfg.dataset, cfg.model, cfg.context_length)
    return tokenize_dataset(ws, tcfg, task=task).name


FLOAT16_SAFE = 65504.0 / 2
"""Largest magnitude stored as float16: headroom, since the next batches can go higher."""


class _Chunks:
    """Preallocated row buffers for every hook point, flushed as one chunk at a time."""

    def __init__(self, b: Build, keys: list[str], d_model: int, capacity: int,
                 dtype: np.dtype) -> None:
        self.build, self.out, self.keys = b, b.folder, keys
        wider = {k: np.dtype(v.split()[0]) for k, v in self.manifest.storage.items()}
        self.data = {k: np.empty((capacity, d_model), wider.get(k, dtype)) for k in keys}
        self.pos = np.empty((capacity, 2), np.int32)
        self.row_norms = np.empty((capacity, len(keys)), np.float32)  # per row, per hook point
        self.fill = 0

    @property
    def manifest(self) -> ActivationsManifest:
        return self.build.manifest  # type: ignore[return-value]

    def storable(self, key: str, value: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """``value`` in the type ``key`` is stored in, on the CPU. A float16 hook point whose
        values reach half of float16's range (65,504) is stored as float32 from now on (the
        chunks before it held every value exactly), and the manifest says so. ``norms``: the
        rows' norms, which bound every component (the values are read only past that bound)."""
        buf = self.data[key]
        if buf.dtype == np.float16 and len(norms) and float(norms.max()) > FLOAT16_SAFE:
            peak = float(value.detach().abs().max())
            if peak > FLOAT16_SAFE:  # cast, it would become inf (or lose the headroom)
                self.data[key] = buf.astype(np.float32)
                self.manifest.storage[key] = (f"float32 from chunk {len(self.manifest.chunks)} "
                                              f"(a value of {peak:,.0f}; float16 ends at "
                                              "65,504)")
        return value.to(getattr(torch, str(self.data[key].dtype))).cpu()

    def add(self, rows: dict[str, torch.Tensor], norms: dict[str, torch.Tensor],
            positions: np.ndarray) -> None:
        n = len(positions)
        for j, (key, value) in enumerate(rows.items()):
            self.data[key][self.fill:self.fill + n] = value.numpy()
            self.row_norms[self.fill:self.fill + n, j] = norms[key].numpy()
        self.pos[self.fill:self.fill + n] = positions
        self.fill += n

    def flush(self, seq_end: int) -> None:
        """Write the buffered rows as the next chunk, then record it in the manifest."""
        if self.fill == 0:
            return
        index = len(self.manifest.chunks)
        for key, buf in [*self.data.items(), (POSITIONS, self.pos), (NORMS, self.row_norms)]:
            path = chunk_file(self.out, key, index)
            path.parent.mkdir(exist_ok=True)
            write_npy_atomic(path, buf[: self.fill])
        self.manifest.chunks.append(Chunk(self.fill, seq_end))
        self.manifest.summary.tokens += self.fill
        self.build.write_manifest(self.manifest)
        self.fill = 0


def extract_activations(ws: Workspace, cfg: ExtractConfig, name: str,
                        task: TaskState | None = None, overwrite: bool = False,
                        loaded: LoadedModel | None = None) -> ActivationsManifest:
    """Extract ``cfg.sites`` over a tokenized set into ``activations/NAME``; returns the manifest.

    A partial run of the same name and settings is resumed from its last complete chunk.
    ``loaded`` reuses a model already in memory (the app keeps one); it must be ``cfg.model``.
    """
    task = task or silent_task()
    info = _check_sites(ws, cfg)
    keys = [hook_key(layer, hook) for layer, hook in cfg.sites]
    with ws.build("activations", name, "extract", _json(asdict(cfg)), overwrite,
                  resumable=True) as b:
        tok_name = resolve_tokenized(ws, cfg, SubTask(task, 0.0, 0.05))
        tokens = open_tokenized(ws, tok_name)
        b.manifest = _start_or_resume(b, cfg, tok_name, keys, info.d_model)
        b.manifest.provenance.prepend_bos = tokens.manifest.provenance.bos_token_id is not None
        row_bytes = info.d_model * np.dtype(cfg.dtype).itemsize * len(keys) + 8
        target = cfg.max_tokens or tokens.manifest.summary.tokens
        try:
            ws.require_free_space((target - b.manifest.summary.tokens) * row_bytes,
                                  f"activation set {name!r}")
        except ResourceError:
            if b.manifest.summary.tokens == 0:
                b.discard()  # nothing to resume: no folder left behind
            raise
        b.show_partial(b.manifest)  # visible (and resumable) even after a crash
        if loaded is not None and (loaded.name != cfg.model or loaded.quantization != cfg.quantize):
            loaded = None  # not the model (or not the weights) this set is made of
        if loaded is None:  # only the blocks up to the deepest one read: the rest is never read
            loaded = load_model(ws, cfg.model, cfg.device, cfg.model_dtype,
                                SubTask(task, 0.05, 0.1), quantize=cfg.quantize,
                                n_layers=max(cfg.layers) + 1)
        t0 = time.perf_counter()
        forwarded = _forward_all(b, cfg, loaded, tokens, keys, target, task)
        if b.manifest.summary.tokens == 0:
            b.discard()
            raise InvalidInputError(f"No tokens were left to extract from {tok_name!r} after "
                                    "excluding BOS and padding.", "Use a larger dataset.")
        task.set_status("Flagging massive tokens")
        finish_massive(b.folder, b.manifest, cfg.massive_factor)
        elapsed = time.perf_counter() - t0
        b.manifest.summary = b.manifest.summary.replace(
            hook_points=keys, d_model=info.d_model, chunks=len(b.manifest.chunks),
            bytes=b.manifest.summary.tokens * row_bytes,
            # tokens through the model per second, this run
            tokens_per_s=forwarded / elapsed if elapsed > 0 else None)
    task.set_progress(1.0)
    return b.manifest


def _check_sites(ws: Workspace, cfg: ExtractConfig) -> ModelInfo:
    """The model's description, once every requested hook point is known to exist in it."""
    info = model_info(ws, cfg.model)
    for hook in cfg.hooks:
        validate_hooks(info.n_layers, list(cfg.layers), hook)
        if info.width(hook) != info.d_model:
            raise InvalidInputError(
                f"{hook} of {cfg.model} is {info.width(hook)} wide, not d_model "
                f"({info.d_model}); activation sets hold hook points of the model's width.",
                "Extract another hook point (attn_out is the attention's output in d_model).")
    return info


def _forward_all(b: Build, cfg: ExtractConfig, loaded: LoadedModel, tokens: Any,
                 keys: list[str], target: int, task: TaskState) -> int:
    """Run the model over the sequences not yet stored, keeping the rows of ``keys``, chunk by
    chunk; returns the tokens it forwarded. A full disk keeps the complete chunks."""
    manifest: ActivationsManifest = b.manifest  # type: ignore[assignment]
    bos = tokens.manifest.provenance.bos_token_id
    capacity = cfg.chunk_rows + cfg.batch_sequences * tokens.context_length
    chunks = _Chunks(b, keys, loaded.info.d_model, capacity, np.dtype(cfg.dtype))
    seq = manifest.chunks[-1].seq_end if manifest.chunks else 0
    done, forwarded, t0 = manifest.summary.tokens, 0, time.perf_counter()
    try:
        with torch.inference_mode(), capture(loaded, cfg.sites) as captured:
            while seq < tokens.n_sequences and done < target:
                check_cancelled(task)
                stop = min(seq + cfg.batch_sequences, tokens.n_sequences)
                ids_np, mask_np = tokens.slice(seq, stop)
                ids = torch.from_numpy(ids_np.astype(np.int64)).to(loaded.device)
                mask = torch.from_numpy(mask_np.astype(np.int64)).to(loaded.device)
                captured.clear()
                forward(loaded, ids, mask)
                where = _kept_positions(ids, mask, bos, cfg.keep_first_position)
                where = where[: target - done]
                flat = where[:, 0] * ids.shape[1] + where[:, 1]
                picked = {k: captured[k].reshape(-1, captured[k].shape[-1])[flat]  # [n, d]
                          for k in keys}
                positions = where.cpu().numpy().astype(np.int32)
                positions[:, 0] += seq
                # norms of what the model computed (before any float16 rounding)
                norms = {k: v.float().norm(dim=-1).cpu() for k, v in picked.items()}
                chunks.add({k: chunks.storable(k, v, norms[k]) for k, v in picked.items()},
                           norms, positions)
                done += len(positions)
                forwarded += int(mask.sum())
                seq = stop
                if chunks.fill >= cfg.chunk_rows:
                    chunks.flush(seq)
                task.set_status(_status(done, target, forwarded, time.perf_counter() - t0))
                task.set_progress(0.1 + 0.9 * min(done / target, 1.0))
            chunks.flush(seq)
    except OSError as err:
        if is_disk_full(err):
            raise ResourceError(
                f"The disk filled up while writing activation set {b.name!r}; the "
                f"{len(manifest.chunks)} complete chunks are kept.",
                "Free some space and run the same command again to resume.") from err
        raise
    return forwarded


def _kept_positions(ids: torch.Tensor, mask: torch.Tensor, bos: int | None,
                    keep_first: bool) -> torch.Tensor:
    """(row in batch, position) of the tokens to store: [n, 2]. Padding is never stored, nor a
    BOS token after position 0; position 0 (the prepended BOS, or the text's first token,
    where the attention sink sits) only with ``keep_first``."""
    keep = mask.bool()
    if bos is not None:
        keep &= ids != bos
    keep[:, 0] = mask[:, 0].bool() if keep_first else False
    return keep.nonzero()


def _json(d: dict[str, Any]) -> dict[str, Any]:
    """A config as JSON (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _start_or_resume(b: Build, cfg: ExtractConfig, tok_name: str, keys: list[str],
                     d_model: int) -> ActivationsManifest:
    """A fresh manifest, or the partial run's one when its settings match."""
    partial = b.folder
    if (partial / MANIFEST).is_file():
        old = read_manifest(partial, f"partial activation set {b.name!r}",
                            "Start over («overwrite»).")
        if cfg.same_data(old.config.get("data")):
            _drop_orphans(partial, old, keys)
            old.summary.tokens = sum(c.rows for c in old.chunks)
            return old
        raise InvalidInputError(
            f"An interrupted extraction named {b.name!r} with different settings exists.",
            "Run it again with its original settings to resume, or start over («overwrite»).")
    for child in partial.iterdir():  # no manifest: nothing in it can be trusted
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    manifest = ActivationsManifest(
        b.name, "partial", {**_json(asdict(cfg)), "data": cfg.data_fields(),
                            "tokenized": tok_name},
        ActivationsProvenance(**made_now(), model=cfg.model, tokenized=tok_name,
                              quantization=cfg.quantize, torch=torch.__version__),
        ActivationsSummary(), hook_points=keys, d_model=d_model)
    b.write_manifest(manifest)
    return manifest


def _drop_orphans(partial: Path, manifest: ActivationsManifest, keys: list[str]) -> None:
    """Remove chunk files written after the manifest's last complete chunk (a crash mid-flush)."""
    n = len(manifest.chunks)
    for key in [*keys, POSITIONS, NORMS]:
        for f in (partial / key).glob("*.npy*") if (partial / key).is_dir() else ():
            stem = f.name.lstrip(".").split(".")[0]
            if not stem.startswith("chunk_") or int(stem[6:]) >= n:
                f.unlink()


def _status(done: int, target: int, forwarded: int, elapsed: float) -> str:
    """"Extracted 41,656 / 112,141 tokens, 1,050 tokens/s, about 1:07 left"."""
    if elapsed <= 0 or forwarded == 0:
        return f"Extracted {done:,} tokens"
    rate = done / elapsed
    left = max(target - done, 0) / max(rate, 1e-9)
    return (f"Extracted {done:,} / {target:,} tokens, {forwarded / elapsed:,.0f} tokens/s, "
            f"about {int(left // 60)}:{int(left % 60):02d} left")
