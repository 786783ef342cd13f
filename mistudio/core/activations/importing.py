"""Activations made elsewhere, as an activation set: train and evaluate SAEs on any rows.

A float array ``[rows, d]`` in a ``.npy``, an ``.npz`` or a ``.safetensors`` file, or SAELens's
cached activations (a saved dataset folder or ``.arrow`` file, :mod:`.arrow_rows`), becomes
``activations/NAME`` in the store's own layout (chunks, per-row norms, massive-token flags and
norm statistics), so training, its held-out evaluation and every tool that reads a set treat it
like an extracted one. The rows are copied into the workspace: a set that pointed at a file
outside it would break when the workspace is copied or moved, or the file edited.

What the file cannot say is recorded as unknown: the model and hook point when not given, and
the text (``positions`` hold the row number and -1). Analysis and steering need the text and the
model, and say so; an SAE trained here exports to SAELens or ONNX like any other.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mistudio.core.activations.arrow_rows import ArrowRows, is_arrow_source
from mistudio.core.activations.massive import DEFAULT_FACTOR
from mistudio.core.activations.store import NORMS, POSITIONS, chunk_file, finish_massive
from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import TaskState, check_cancelled, silent_task
from mistudio.core.store.files import write_npy_atomic
from mistudio.core.store.manifests import (
    ActivationsManifest,
    ActivationsProvenance,
    ActivationsSummary,
    Chunk,
    made_now,
)
from mistudio.core.store.workspace import Workspace

FORMATS = (".npy", ".npz", ".safetensors", ".arrow")
DEFAULT_HOOK = "layers.0.resid_post"
IMPORTED_TEXT = "(imported: no text)"
"""The tokenized set an imported set names: none."""


@dataclass(frozen=True)
class ImportConfig:
    """Where the rows come from, and what is known about them."""

    source: str
    """A .npy, .npz or .safetensors file holding a float array [rows, d], or a folder (or
    .arrow file) of SAELens's cached activations."""
    key: str | None = None
    """The array's name in an .npz or .safetensors file, or the column of a SAELens cache
    (default: its only 2-D array / activation column)."""
    model: str = ""
    """The workspace model the rows were read from, if known (in-model evaluation, steering)."""
    hook: str | None = None
    """The hook point they were read at (layers.L.HOOK); None = what the file says (a SAELens
    cache names its column blocks.L.hook_...), else layers.0.resid_post."""
    dtype: str = "float32"
    """Storage dtype: float32, or float16 (half the disk; refused if a value would not fit)."""
    chunk_rows: int = 65_536
    """Rows per stored chunk."""

    def __post_init__(self) -> None:
        path = Path(self.source).expanduser()
        if path.suffix.lower() not in FORMATS and not is_arrow_source(path):
            raise InvalidInputError(f"{self.source} is not a {', '.join(FORMATS)} file or a "
                                    "SAELens activation cache folder.",
                                    "Save the activations as a float array [rows, d] in one of "
                                    "those formats.")
        if self.dtype not in ("float32", "float16"):
            raise InvalidInputError(f"Unknown storage dtype {self.dtype!r}.",
                                    "Use «dtype=float32» or float16.")
        parts = (self.hook or "").split(".")
        if self.hook and (len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit()):
            raise InvalidInputError(f"{self.hook!r} is not a hook point name.",
                                    "Name it like «hook=layers.6.resid_post».")
        if self.chunk_rows < 1:
            raise InvalidInputError("«chunk_rows» must be positive.", "Use «chunk_rows=65536».")


def read_array(source: str, key: str | None = None) -> np.ndarray | ArrowRows:
    """The 2-D float array in ``source``, memory-mapped where the format allows (.npy, Arrow)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"{path} does not exist.", "Give the path of the activations file.")
    suffix = path.suffix.lower()
    try:
        if is_arrow_source(path):
            arr = ArrowRows(path, key)
        elif not path.is_file():
            raise NotFoundError(f"{path} is a folder without Arrow files.",
                                "Give the path of the activations file.")
        elif suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = z[_pick(path, list(z.files), key, _npz_shapes(path))]
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                names = list(f.keys())
                shapes = {k: f.get_slice(k).get_shape() for k in names}
                arr = f.get_tensor(_pick(path, names, key, shapes))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise InvalidInputError(f"{path} cannot be read as {suffix} ({err}); it may be "
                                "truncated or of another format.",
                                "Save it again, or check the file's extension.") from err
    return _checked(path, arr)


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each array's shape from its header alone (indexing the archive would read and
    decompress every array just to choose one)."""
    fmt = np.lib.format
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                major, _ = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                shapes[info.filename.removesuffix(".npy")] = read(f)[0]
    return shapes


def _pick(path: Path, names: list[str], key: str | None, shapes: dict[str, Any]) -> str:
    if key is not None:
        if key not in names:
            raise InvalidInputError(f"{path} has no array {key!r}.",
                                    f"It has: {', '.join(names) or 'none'}; «key=NAME».")
        return key
    two_d = [k for k in names if len(shapes[k]) == 2]
    if len(two_d) != 1:
        raise InvalidInputError(f"{path} holds {len(two_d)} two-dimensional arrays "
                                f"({', '.join(two_d) or 'none'}).", "Name one with «key=NAME».")
    return two_d[0]


def _checked(path: Path, arr: np.ndarray | ArrowRows) -> np.ndarray | ArrowRows:
    if arr.ndim != 2:
        raise InvalidInputError(f"{path} holds an array of shape {tuple(arr.shape)}; "
                                "activations are [rows, d].",
                                "Reshape it to one row per token (e.g. x.reshape(-1, d)).")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(f"{path} holds {arr.dtype} values, not floats.",
                                "Save the activations as float32 or float16.")
    if arr.shape[0] < 10 or arr.shape[1] < 1:
        raise InvalidInputError(f"{path} holds {arr.shape[0]} rows of width {arr.shape[1]}.",
                                "Import at least a few thousand rows.")
    return arr


def import_activations(ws: Workspace, cfg: ImportConfig, name: str,
                       task: TaskState | None = None,
                       overwrite: bool = False) -> ActivationsManifest:
    """``cfg.source`` as the activation set ``name``; NaN or inf rows are refused with the
    first one's index."""
    task = task or silent_task()
    arr = read_array(cfg.source, cfg.key)
    n, d = int(arr.shape[0]), int(arr.shape[1])
    hook = cfg.hook or getattr(arr, "hook", None) or DEFAULT_HOOK
    if cfg.model:
        from mistudio.core.models.registry import model_info

        info = model_info(ws, cfg.model)
        if d not in (info.d_model, info.d_mlp, info.d_attn):
            raise InvalidInputError(f"Rows of width {d} cannot come from {cfg.model!r} "
                                    f"(d_model {info.d_model}).",
                                    "Name the model they were read from, or none.")
    context = getattr(arr, "context", None)  # a SAELens cache: rows are sequences' positions
    config = {**asdict(cfg), "hook": hook, "source": str(Path(cfg.source).expanduser().resolve()),
              "tokenized": IMPORTED_TEXT, "quantize": "none", "context_length": context}
    store = np.dtype(cfg.dtype)
    ws.require_free_space(n * (d * store.itemsize + 12), f"activation set {name!r}")
    with ws.build("activations", name, "import-activations", config, overwrite) as b:
        b.manifest = ActivationsManifest(
            name, config=config, hook_points=[hook], d_model=d,
            provenance=ActivationsProvenance(**made_now(), model=cfg.model,
                                             tokenized=IMPORTED_TEXT),
            summary=ActivationsSummary(hook_points=[hook], d_model=d))
        for start in range(0, n, cfg.chunk_rows):
            check_cancelled(task)
            _write_chunk(b.folder, b.manifest, cfg, hook, arr[start:start + cfg.chunk_rows],
                         start, context)
            task.set_progress(min(start + cfg.chunk_rows, n) / n * 0.95)
            task.set_status(f"Copied {min(start + cfg.chunk_rows, n):,} of {n:,} rows")
        task.set_status("Flagging massive tokens")
        finish_massive(b.folder, b.manifest, DEFAULT_FACTOR)
        b.manifest.summary = b.manifest.summary.replace(
            chunks=len(b.manifest.chunks), bytes=n * d * store.itemsize)
    task.set_progress(1.0)
    return b.manifest


def _write_chunk(folder: Path, manifest: ActivationsManifest, cfg: ImportConfig, hook: str,
                 block: np.ndarray, start: int, context: int | None) -> None:
    rows = np.asarray(block, dtype=np.float32)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"Row {start + int(np.argmax(bad)):,} of {cfg.source} holds NaN "
                                "or inf values.", "Drop or fix those rows before importing.")
    if cfg.dtype == "float16" and float(np.abs(rows).max()) > 65_504 / 2:
        raise InvalidInputError(f"{cfg.source} holds values float16 cannot store safely "
                                f"(up to {float(np.abs(rows).max()):,.0f}).",
                                "Import with «dtype=float32».")
    index = len(manifest.chunks)
    row_ids = np.arange(start, start + len(rows))
    positions = (np.stack([row_ids // context, row_ids % context], axis=1) if context else
                 np.stack([row_ids, np.full(len(rows), -1)], axis=1)).astype(np.int32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True).astype(np.float32)
    for key, data in ((hook, rows.astype(cfg.dtype)), (POSITIONS, positions),
                      (NORMS, norms)):
        path = chunk_file(folder, key, index)
        path.parent.mkdir(exist_ok=True)
        write_npy_atomic(path, data)
    manifest.chunks.append(Chunk(len(rows), index + 1))
    manifest.summary.tokens += len(rows)
