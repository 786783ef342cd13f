"""Activations made elsewhere: imported as a set, trained and evaluated with no extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mistudio.cli import main
from mistudio.core.activations.importing import ImportConfig, import_activations
from mistudio.core.activations.store import open_activations
from mistudio.core.runtime.errors import InvalidInputError, MiStudioError
from mistudio.core.store.workspace import Workspace


def _sparse_rows(n: int = 12_000, d: int = 32, features: int = 128, seed: int = 0) -> np.ndarray:
    """Rows made of a few of ``features`` fixed directions (what an SAE should recover)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(features, d)).astype(np.float32)
    codes = (rng.random((n, features)) < 0.03) * rng.exponential(size=(n, features))
    return (codes @ dirs).astype(np.float32)


def test_an_imported_npy_trains_and_evaluates_with_no_extraction(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture
                                                                 ) -> None:
    rows = _sparse_rows()
    np.save(tmp_path / "acts.npy", rows)
    ws = tmp_path / "ws"
    assert main(["activations", "import", "--source", str(tmp_path / "acts.npy"), "--name",
                 "outside", "--hook", "layers.3.resid_post", "--chunk-rows", "5000",
                 "--workspace", str(ws)]) == 0
    acts = open_activations(Workspace(ws), "outside")
    assert acts.n_rows == 12_000 and len(acts.chunks) == 3 and acts.keys == ["layers.3.resid_post"]
    np.testing.assert_array_equal(acts.rows("layers.3.resid_post", 0, acts.n_rows), rows)
    assert main(["train", "--activations", "outside", "--expansion", "4", "--k", "8",
                 "--steps", "80", "--batch-size", "512", "--name", "s", "--workspace",
                 str(ws)]) == 0
    summary = Workspace(ws).catalog.get("sae", "s").summary
    assert summary.explained_variance > 0.5 and summary.eval_tokens > 0  # held out
    capsys.readouterr()
    assert main(["analyze", "s", "--workspace", str(ws)]) == 2  # no text: said in one line
    assert "imported without the text" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_npz_and_safetensors_name_the_array(tmp_path: Path, fmt: str) -> None:
    rows = _sparse_rows(n=2000)
    path = tmp_path / f"acts.{fmt}"
    if fmt == "npz":
        np.savez(path, acts=rows, labels=np.arange(10).reshape(2, 5).astype(np.float32))
    else:
        from safetensors.numpy import save_file

        save_file({"acts": rows, "other": rows[:10]}, str(path))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InvalidInputError, match="two-dimensional arrays"):
        import_activations(ws, ImportConfig(str(path)), "a")
    import_activations(ws, ImportConfig(str(path), key="acts", dtype="float16"), "a")
    acts = open_activations(ws, "a")
    np.testing.assert_allclose(acts.rows(acts.keys[0], 0, 2000), rows, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: np.save(p, np.zeros((10, 4, 4), np.float32)), "shape"),
    (lambda p: np.save(p, np.zeros((100, 4), np.int64)), "not floats"),
    (lambda p: np.save(p, np.where(np.arange(400).reshape(100, 4) == 217, np.nan, 1.0)),
     "Row 54 .* NaN"),
    (lambda p: (np.save(p, np.ones((1000, 64), np.float32)),
                p.write_bytes(p.read_bytes()[:5000])), "truncated"),
    (lambda p: np.save(p, np.full((100, 4), 1e6, np.float32)), None),  # float32: fine
])
def test_bad_files_get_one_line_and_leave_nothing(tmp_path: Path, make: object,
                                                 match: str | None) -> None:
    path = tmp_path / "bad.npy"
    make(path)  # type: ignore[operator]
    ws = Workspace(tmp_path / "ws")
    if match is None:
        import_activations(ws, ImportConfig(str(path)), "a")
        with pytest.raises(InvalidInputError, match="float16 cannot store"):
            import_activations(ws, ImportConfig(str(path), dtype="float16"), "b")
        assert ws.catalog.find("activations", "b") is None
        return
    with pytest.raises(MiStudioError, match=match):
        import_activations(ws, ImportConfig(str(path)), "a")
    assert ws.catalog.find("activations", "a") is None
    assert not list((tmp_path / "ws" / "activations").glob("*a*"))  # no partial folder
