"""SAELens's cached activations (a Hugging Face dataset saved to disk) read as rows [n, d].

SAELens's ``CacheActivationsRunner`` writes a folder of Arrow stream files (``data-*.arrow``,
listed in ``state.json``) with one column per hook point, named as TransformerLens names it
(``blocks.6.hook_resid_post``), each row one sequence: an ``Array2D`` [context, d]. Newer
versions add a ``token_ids`` column. The files are memory-mapped and each sequence's values are
viewed in place as ``context`` rows of width d; nothing is read until a slice of rows is asked for.
A single ``.arrow`` file of the same layout is read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mistudio.core.models.adapters import to_hook_key
from mistudio.core.runtime.errors import InvalidInputError

TOKEN_COLUMN = "token_ids"


def is_arrow_source(path: Path) -> bool:
    """A saved dataset folder or an Arrow file."""
    return path.suffix.lower() == ".arrow" or (path.is_dir() and (
        (path / "state.json").is_file() or any(path.glob("*.arrow"))))


def arrow_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    state = path / "state.json"
    if state.is_file():
        try:
            names = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as err:
            raise InvalidInputError(f"{state} is not a saved dataset's state ({err}).",
                                    "Point at the folder SAELens wrote, unchanged.") from err
        return [path / n for n in names]
    return sorted(path.glob("*.arrow"))


class ArrowRows:
    """One column of the files as rows [n, d]: ``shape``, ``dtype``, ``ndim`` and row slices,
    like the numpy arrays the importer reads."""

    def __init__(self, path: Path, key: str | None = None) -> None:
        import pyarrow as pa

        self.path = path
        self._parts: list[np.ndarray] = []
        self.column = ""
        self.context: int | None = None
        """Token positions per sequence (SAELens's context size)."""
        for file in arrow_files(path):
            try:
                table = pa.ipc.open_stream(pa.memory_map(str(file))).read_all()
            except (OSError, pa.ArrowInvalid) as err:
                raise InvalidInputError(f"{file} cannot be read as Arrow ({err}); it may be "
                                        "truncated.", "Copy the cache again from where it was "
                                        "made.") from err
            self.column = self.column or _pick_column(path, table.column_names, key)
            for chunk in table.column(self.column).chunks:
                rows = _rows_of(file, chunk)
                if len(chunk):
                    self.context = self.context or len(rows) // len(chunk)
                self._parts.append(rows)
        if not self._parts:
            raise InvalidInputError(f"{path} holds no Arrow data files.",
                                    "Point at the folder SAELens's CacheActivationsRunner wrote.")
        widths = {p.shape[1] for p in self._parts}
        if len(widths) > 1:
            raise InvalidInputError(f"{path} mixes rows of widths {sorted(widths)}.",
                                    "Import one hook point's cache at a time.")
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        self.shape = (int(self._starts[-1]), widths.pop())
        self.dtype = self._parts[0].dtype
        self.ndim = 2

    @property
    def hook(self) -> str | None:
        """miStudio's name for the column's hook point, when it is a TransformerLens name."""
        return to_hook_key(self.column)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        out = []
        for i, part in enumerate(self._parts):
            lo, hi = max(start - self._starts[i], 0), min(stop - self._starts[i], len(part))
            if lo < hi:
                out.append(part[lo:hi])
        return np.concatenate(out) if len(out) != 1 else out[0]


def _pick_column(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise InvalidInputError(f"{path} has no column {key!r}.",
                                    f"It has: {', '.join(names)}; «key=NAME».")
        return key
    hooks = [n for n in names if n != TOKEN_COLUMN]
    if len(hooks) != 1:
        raise InvalidInputError(f"{path} holds {len(hooks)} activation columns "
                                f"({', '.join(hooks) or 'none'}).", "Name one with «key=NAME».")
    return hooks[0]


def _rows_of(file: Path, chunk: object) -> np.ndarray:
    """An Array2D chunk (list of lists of floats, one [context, d] per sequence) as rows
    [sequences * context, d], viewed in place."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk  # type: ignore[attr-defined]
    if not pa.types.is_list(arr.type) or not pa.types.is_list(arr.type.value_type):
        raise InvalidInputError(f"{file} holds {arr.type} values, not sequences of activation "
                                "vectors.", "Import a cache made by SAELens's "
                                "CacheActivationsRunner, or save the rows as .npy.")
    inner = arr.flatten()  # one list per token
    lengths = pc.list_value_length(inner)
    if len(inner) == 0:
        return np.zeros((0, 0), np.float32)
    low, high = pc.min_max(lengths).values()
    if low.as_py() != high.as_py():
        raise InvalidInputError(f"{file} mixes vectors of widths {low} to {high}.",
                                "Import one hook point's cache at a time.")
    values = inner.flatten()
    if values.null_count:
        raise InvalidInputError(f"{file} has missing values.", "Cache the activations again.")
    return values.to_numpy(zero_copy_only=True).reshape(-1, int(high.as_py()))
