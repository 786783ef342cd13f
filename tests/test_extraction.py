"""Activation extraction: correctness, storage, exclusions, resumption and bad input."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from toy import FAMILIES

from mistudio.core.activations import extraction
from mistudio.core.activations.extraction import ExtractConfig, extract_activations
from mistudio.core.activations.store import open_activations
from mistudio.core.data.tokenization import TokenizeConfig, open_tokenized, tokenize_dataset
from mistudio.core.models.registry import add_model, load_model
from mistudio.core.runtime.errors import (
    Cancelled,
    CorruptedError,
    InvalidInputError,
    NotFoundError,
    ResourceError,
)
from mistudio.core.runtime.tasks import CallbackTask, CancelToken
from mistudio.core.store.workspace import Workspace


def _recompute(ws: Workspace, set_name: str, model: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored rows, and the same rows from output_hidden_states (float32)."""
    acts = open_activations(ws, set_name)
    tset = open_tokenized(ws, acts.manifest.config["tokenized"])
    pos = acts.row_positions(0, acts.n_rows)
    ids, mask = tset.slice(0, int(pos[:, 0].max()) + 1)
    lm = load_model(ws, model)
    with torch.inference_mode():
        hs = lm.model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                      attention_mask=torch.from_numpy(mask.astype(np.int64)),
                      output_hidden_states=True).hidden_states[layer + 1]
    expected = hs[torch.from_numpy(pos[:, 0]).long(), torch.from_numpy(pos[:, 1]).long()]
    return acts.rows(f"layers.{layer}.resid_post", 0, acts.n_rows), expected.numpy()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stored_rows_equal_output_hidden_states(ws: Workspace, toy_folder: Callable[[str], Path],
                                                family: str) -> None:
    from mistudio.core.data.datasets import DatasetConfig, add_dataset

    add_model(ws, "m", str(toy_folder(family)))
    add_dataset(ws, "d", DatasetConfig("builtin:pydoc", max_samples=6))
    cfg = ExtractConfig("m", "d", (1,), dtype="float32", context_length=32, batch_sequences=3,
                        chunk_rows=100, max_tokens=700)
    m = extract_activations(ws, cfg, "a")
    assert m.summary.tokens == 700 and m.summary.chunks == 4  # 2 batches of 93 rows each
    stored, expected = _recompute(ws, "a", "m", 1)
    assert stored.shape == (700, 32)
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)


def test_bos_pad_and_first_position_are_excluded(toy_ws: Workspace) -> None:
    tok = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 256, mode="truncate",
                                                  prepend_bos="yes"))
    extract_activations(toy_ws, ExtractConfig("toy", tok.name, (0,)), "a")
    acts = open_activations(toy_ws, "a")
    assert acts.chunk(acts.keys[0], 0).dtype == np.float16  # the default storage dtype
    ids, mask = open_tokenized(toy_ws, tok.name).slice(0, 12)
    pos = acts.row_positions(0, acts.n_rows)
    assert (mask[pos[:, 0], pos[:, 1]] == 1).all()
    assert (ids[pos[:, 0], pos[:, 1]] != 1).all() and (pos[:, 1] > 0).all()
    assert acts.n_rows == int(mask.sum()) - 12  # every real token but each sequence's BOS


def test_keep_first_position(toy_ws: Workspace) -> None:
    tok = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32, prepend_bos="no"))
    n = open_tokenized(toy_ws, tok.name).n_sequences
    with_first = extract_activations(toy_ws, ExtractConfig("toy", tok.name, (0,),
                                                           keep_first_position=True), "a")
    without = extract_activations(toy_ws, ExtractConfig("toy", tok.name, (0,)), "b")
    assert with_first.summary.tokens == n * 32
    assert without.summary.tokens == n * 31
    bos = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32))  # BOS prepended
    n = open_tokenized(toy_ws, bos.name).n_sequences
    kept = extract_activations(toy_ws, ExtractConfig("toy", bos.name, (0,),
                                                     keep_first_position=True), "c")
    dropped = extract_activations(toy_ws, ExtractConfig("toy", bos.name, (0,)), "d")
    assert kept.summary.tokens == n * 32 and dropped.summary.tokens == n * 31
    positions = open_activations(toy_ws, "c").row_positions(0, kept.summary.tokens)
    assert (positions[:, 1] == 0).sum() == n  # every sequence's BOS, as asked


def test_several_hook_points_share_rows_and_stats(toy_ws: Workspace) -> None:
    cfg = ExtractConfig("toy", "pydoc", (0, 2), ("resid_post", "mlp_in", "mlp_out"),
                        context_length=64, max_tokens=1000, chunk_rows=300, dtype="float32")
    m = extract_activations(toy_ws, cfg, "multi")
    acts = open_activations(toy_ws, "multi")
    assert len(acts.keys) == 6 and acts.n_rows == 1000
    assert [c.rows for c in m.chunks] == [504, 496]  # flushed at batch ends (8 x 63 rows)
    for key in acts.keys:
        x = acts.rows(key, 0, 1000)
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        st = acts.norm_stats(key)
        assert st.count == 1000
        assert st.mean_norm == pytest.approx(norms.mean(), rel=1e-3)
        assert st.std_norm == pytest.approx(norms.std(), rel=1e-2, abs=1e-5)
        assert st.scale_to_sqrt_d == pytest.approx(32 ** 0.5 / st.mean_norm)


def _cancel_after(n_batches: int) -> CallbackTask:
    token = CancelToken()
    seen = {"n": 0}

    def on_status(text: str) -> None:
        if text.startswith("Extracted"):
            seen["n"] += 1
            if seen["n"] >= n_batches:
                token.cancel()

    return CallbackTask(on_status=on_status, cancel=token)


def test_cancelled_extraction_resumes_to_identical_data(toy_ws: Workspace) -> None:
    cfg = ExtractConfig("toy", "pydoc", (1,), ("resid_post", "attn_out"), context_length=64,
                        batch_sequences=4, chunk_rows=400, max_tokens=2500)
    with pytest.raises(Cancelled):
        extract_activations(toy_ws, cfg, "r", _cancel_after(5))
    art = toy_ws.catalog.get("activations", "r")
    assert art.status == "partial" and art.summary.tokens > 0
    with pytest.raises(InvalidInputError, match="incomplete.*resume"):
        open_activations(toy_ws, "r")
    with pytest.raises(InvalidInputError, match="different settings"):
        extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (2,), context_length=64), "r")
    resumed = extract_activations(toy_ws, cfg, "r")
    whole = extract_activations(toy_ws, cfg, "whole")
    assert resumed.summary.tokens == whole.summary.tokens == 2500
    a, b = open_activations(toy_ws, "r"), open_activations(toy_ws, "whole")
    for key in a.keys:
        np.testing.assert_array_equal(a.rows(key, 0, 2500), b.rows(key, 0, 2500))
    np.testing.assert_array_equal(a.row_positions(0, 2500), b.row_positions(0, 2500))
    assert not any(p.name.startswith(".") for p in (toy_ws.root / "activations").iterdir())


def test_full_disk_keeps_complete_chunks_and_resumes(toy_ws: Workspace,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ExtractConfig("toy", "pydoc", (0,), context_length=64, chunk_rows=200, max_tokens=1200)
    real_save, calls = np.save, {"n": 0}

    def failing_save(fh, arr):  # the third chunk's first file hits a full disk (3 files a chunk)
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, arr)

    monkeypatch.setattr(extraction.np, "save", failing_save)
    with pytest.raises(ResourceError, match="disk filled up.*2 complete chunks are kept.*resume"):
        extract_activations(toy_ws, cfg, "full")
    monkeypatch.setattr(extraction.np, "save", real_save)
    assert extract_activations(toy_ws, cfg, "full").summary.tokens == 1200


def test_not_enough_disk_is_refused_up_front(toy_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Workspace, "free_bytes", lambda self: 10_000)
    with pytest.raises(ResourceError, match="Not enough disk space for activation set 'a'"):
        extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (0,), max_tokens=5000), "a")


def test_model_too_large_for_memory(toy_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.models import devices

    monkeypatch.setattr(devices, "available_memory", lambda device: 1000)
    with pytest.raises(ResourceError, match="needs about .* but only 1000 B is free"):
        extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (0,), max_tokens=100), "a")
    assert toy_ws.catalog.find("activations", "a").status == "partial"
    monkeypatch.undo()
    assert extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (0,), max_tokens=100), "a")


@pytest.mark.parametrize(("kwargs", "match", "error"), [
    ({"layers": (7,)}, "Layer 7 is out of range", InvalidInputError),
    ({"hooks": ("resid_mid",)}, "Unknown hook point", InvalidInputError),
    ({"dataset": "nope"}, "no dataset or tokenized set named 'nope'", NotFoundError),
    ({"model": "nope"}, "no model named 'nope'", NotFoundError),
])
def test_bad_arguments_create_nothing(toy_ws: Workspace, kwargs: dict, match: str,
                                      error: type) -> None:
    cfg = ExtractConfig(**{"model": "toy", "dataset": "pydoc", "layers": (0,), **kwargs})
    with pytest.raises(error, match=match):
        extract_activations(toy_ws, cfg, "a")
    assert toy_ws.catalog.find("activations", "a") is None
    assert list((toy_ws.root / "activations").iterdir()) == []


def test_existing_set_needs_overwrite(toy_ws: Workspace) -> None:
    cfg = ExtractConfig("toy", "pydoc", (0,), max_tokens=100)
    extract_activations(toy_ws, cfg, "a")
    with pytest.raises(InvalidInputError, match="already exists.*overwrite"):
        extract_activations(toy_ws, cfg, "a")
    m = extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (0,), max_tokens=50), "a",
                            overwrite=True)
    assert m.summary.tokens == 50 and open_activations(toy_ws, "a").n_rows == 50


def test_corrupted_manifest_and_chunk_are_reported(toy_ws: Workspace) -> None:
    extract_activations(toy_ws, ExtractConfig("toy", "pydoc", (0,), max_tokens=100), "a")
    folder = toy_ws.root / "activations" / "a"
    (folder / "layers.0.resid_post" / "chunk_00000.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptedError, match="chunk_00000.npy is missing or damaged"):
        open_activations(toy_ws, "a").rows("layers.0.resid_post", 0, 10)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest)[:50])
    with pytest.raises(CorruptedError, match="manifest .* is corrupted.*overwrite"):
        open_activations(toy_ws, "a")


def test_tokenized_set_of_another_model_is_refused(toy_ws: Workspace,
                                                   toy_folder: Callable[[str], Path]) -> None:
    add_model(toy_ws, "other", str(toy_folder("gpt2")))
    tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 64), name="t")
    with pytest.raises(InvalidInputError, match="made with model 'toy', not 'other'"):
        extract_activations(toy_ws, ExtractConfig("other", "t", (0,)), "a")


def test_status_line_shows_rate_and_time_left() -> None:
    from mistudio.core.activations.extraction import _status

    assert _status(500, 2000, 500, 0.5) == ("Extracted 500 / 2,000 tokens, 1,000 tokens/s, "
                                            "about 0:01 left")
    assert _status(0, 2000, 0, 0.0) == "Extracted 0 tokens"


class _Loud:
    """The captured activations, with one hook point's values made huge from the fifth batch
    on (a layer whose values float16 cannot hold, as some of Gemma 3's do)."""

    def __init__(self, inner: dict, key: str) -> None:
        self.inner, self.key, self.batches = inner, key, 0

    def clear(self) -> None:
        self.batches += 1
        self.inner.clear()

    def __getitem__(self, k: str) -> torch.Tensor:
        v = self.inner[k]
        return v * 3e6 if k == self.key and self.batches > 4 else v  # toy values ~0.08


def test_values_float16_cannot_hold_are_stored_wider(toy_ws: Workspace,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    real = extraction.capture
    loud_key = "layers.0.resid_post"

    @contextmanager
    def loud_capture(loaded: object, sites: object):  # type: ignore[no-untyped-def]
        with real(loaded, sites) as captured:
            yield _Loud(captured, loud_key)

    monkeypatch.setattr(extraction, "capture", loud_capture)
    cfg = ExtractConfig("toy", "pydoc", (0, 2), context_length=64, max_tokens=1500,
                        chunk_rows=300, batch_sequences=2, dtype="float16")
    m = extract_activations(toy_ws, cfg, "loud")
    assert list(m.storage) == [loud_key] and m.storage[loud_key].startswith("float32 from chunk")
    acts = open_activations(toy_ws, "loud")
    x = acts.rows(loud_key, 0, acts.n_rows)
    assert np.isfinite(x).all() and np.abs(x).max() > 65504  # never written as inf
    assert acts.chunk(loud_key, 0).dtype == np.float16  # before the first huge value
    assert acts.chunk(loud_key, len(acts.chunks) - 1).dtype == np.float32
    quiet = "layers.2.resid_post"
    assert all(acts.chunk(quiet, i).dtype == np.float16 for i in range(len(acts.chunks)))


@pytest.mark.parametrize("keep_first", [False, True])
@pytest.mark.parametrize("family", (*FAMILIES, "gemma3"))
def test_every_family_stores_what_the_plain_forward_computes(
        ws: Workspace, toy_folder: Callable[[str], Path], family: str, keep_first: bool) -> None:
    """resid_pre, resid_post, attn_out and mlp_out of layers 0 and 1, float32, against the
    Hugging Face forward's hidden states (no hooks, no truncation) and the residual sum, with
    position 0 kept and dropped (tests/parity.py)."""
    from parity import check_parity

    from mistudio.core.data.datasets import DatasetConfig, add_dataset

    add_model(ws, "m", str(toy_folder(family)))
    add_dataset(ws, "d", DatasetConfig("builtin:pydoc", max_samples=3))
    cfg = ExtractConfig("m", "d", (0, 1), ("resid_pre", "resid_post", "attn_out", "mlp_out"),
                        dtype="float32", context_length=32, batch_sequences=4, max_tokens=300,
                        keep_first_position=keep_first)
    extract_activations(ws, cfg, "a")
    pos = open_activations(ws, "a").row_positions(0, 300)
    assert ((pos[:, 1] == 0).any()) == keep_first
    assert check_parity(ws, "a", "m", (0, 1)) == 300
