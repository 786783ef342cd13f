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


def _saelens_cache(folder: Path, rows: np.ndarray, context: int, hook: str,
                   shards: int = 2, token_ids: bool = True) -> None:
    """A cache as SAELens's CacheActivationsRunner writes it: a saved dataset of Array2D
    [context, d] sequences (and token ids), in several Arrow files."""
    from datasets import Array2D, Dataset, Features, Sequence, Value

    seqs = rows.reshape(-1, context, rows.shape[1])
    columns = {hook: seqs}
    features = {hook: Array2D(shape=(context, rows.shape[1]), dtype="float32")}
    if token_ids:
        columns["token_ids"] = np.arange(len(seqs) * context).reshape(-1, context)
        features["token_ids"] = Sequence(Value("int32"), length=context)
    Dataset.from_dict(columns, features=Features(features)).save_to_disk(str(folder),
                                                                         num_shards=shards)


def test_a_saelens_cache_imports_in_place_with_its_hook_and_positions(tmp_path: Path) -> None:
    rows = _sparse_rows(n=4096)
    _saelens_cache(tmp_path / "cache", rows, 64, "blocks.5.hook_resid_post", shards=3)
    ws = Workspace(tmp_path / "ws")
    m = import_activations(ws, ImportConfig(str(tmp_path / "cache"), chunk_rows=1000), "sl")
    acts = open_activations(ws, "sl")
    assert acts.keys == ["layers.5.resid_post"] and m.config["context_length"] == 64
    np.testing.assert_array_equal(acts.rows("layers.5.resid_post", 0, acts.n_rows), rows)
    positions = acts.row_positions(0, acts.n_rows)
    assert positions[65].tolist() == [1, 1] and positions[-1].tolist() == [63, 63]
    arrow = next((tmp_path / "cache").glob("*.arrow"))  # one file of the cache alone
    one = import_activations(ws, ImportConfig(str(arrow), hook="layers.2.mlp_out"), "one")
    assert one.hook_points == ["layers.2.mlp_out"] and 0 < one.summary.tokens < 4096


def test_bad_saelens_caches_get_one_line(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    two = tmp_path / "two"
    from datasets import Array2D, Dataset, Features

    feats = Features({h: Array2D(shape=(4, 8), dtype="float32") for h in ("a", "b")})
    Dataset.from_dict({h: np.zeros((3, 4, 8), np.float32) for h in ("a", "b")},
                      features=feats).save_to_disk(str(two))
    with pytest.raises(InvalidInputError, match="2 activation columns"):
        import_activations(ws, ImportConfig(str(two)), "x")
    import_activations(ws, ImportConfig(str(two), key="b", hook="layers.0.mlp_out"), "x")
    cut = tmp_path / "cut"
    _saelens_cache(cut, _sparse_rows(n=2048), 64, "blocks.1.hook_resid_pre", shards=1)
    data = next(cut.glob("*.arrow"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(InvalidInputError, match="truncated"):
        import_activations(ws, ImportConfig(str(cut)), "y")
    bad = tmp_path / "nan"
    rows = _sparse_rows(n=2048)
    rows[700, 3] = np.nan
    _saelens_cache(bad, rows, 64, "blocks.1.hook_resid_pre", token_ids=False)
    with pytest.raises(InvalidInputError, match="Row 700 .* NaN"):
        import_activations(ws, ImportConfig(str(bad)), "z")
    assert [a.name for a in ws.catalog.list("activations")] == ["x"]


def test_the_models_tab_imports_a_saelens_cache(tmp_path: Path, qtbot: object) -> None:
    """No code: the Models tab's Import activations button, then the set is there to train."""
    from mistudio.gui.main_window import MainWindow

    _saelens_cache(tmp_path / "cache", _sparse_rows(n=2048), 64, "blocks.2.hook_mlp_out")
    ws = Workspace(tmp_path / "ws")
    win = MainWindow(str(ws.root))
    qtbot.addWidget(win)  # type: ignore[attr-defined]
    models = win.models
    with qtbot.waitSignal(models.runner.finished, timeout=60_000):  # type: ignore[attr-defined]
        models.import_activations(folder=True, path=str(tmp_path / "cache"))
    assert open_activations(ws, "cache").keys == ["layers.2.mlp_out"]
    assert "cache: 2,048 tokens" in models.acts.text()
    win.training.refresh()
    assert "cache" in [win.training.activations.itemText(i)
                       for i in range(win.training.activations.count())]
