"""Tokenization into fixed-length sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from toy import toy_tokenizer

from mistudio.core.data.datasets import open_dataset
from mistudio.core.data.tokenization import TokenizeConfig, open_tokenized, tokenize_dataset
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.store.workspace import Workspace


def _stream(ws: Workspace) -> list[int]:
    tok = toy_tokenizer()
    out: list[int] = []
    for text in open_dataset(ws, "pydoc").column("text").to_pylist():
        out += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return out


def test_concat_mode_chunks_the_joined_stream(toy_ws: Workspace) -> None:
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 64, prepend_bos="no"))
    tset = open_tokenized(toy_ws, m.name)
    stream = _stream(toy_ws)
    n = len(stream) // 64
    assert tset.n_sequences == n == m.summary.sequences
    ids, mask = tset.slice(0, n)
    assert ids.shape == (n, 64) and mask.all()
    assert ids.reshape(-1).tolist() == stream[: n * 64]
    assert m.summary.dropped_tail_tokens == len(stream) - n * 64
    assert m.summary.tokens == n * 64


def test_bos_is_prepended_to_every_sequence(toy_ws: Workspace) -> None:
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32, prepend_bos="yes"))
    ids, _ = open_tokenized(toy_ws, m.name).slice(0, 10)
    assert (ids[:, 0] == toy_tokenizer().bos_token_id).all()
    assert ids[:, 1:].reshape(-1).tolist() == _stream(toy_ws)[: 10 * 31]
    assert m.provenance.bos_token_id == toy_tokenizer().bos_token_id


def test_bos_is_prepended_by_default_when_the_tokenizer_defines_one(toy_ws: Workspace) -> None:
    # The toy tokenizer defines BOS but does not add it by itself, like SmolLM2's: the
    # default puts it first anyway (SAELens's default), so the attention sink lands on it.
    assert toy_tokenizer()("a")["input_ids"][0] != toy_tokenizer().bos_token_id
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32))
    bos = toy_tokenizer().bos_token_id
    assert m.name == "pydoc.toy.ctx32.bos"
    assert m.provenance.bos_token_id == bos and m.provenance.prepend_bos is True
    assert m.provenance.bos_token == "<s>"
    ids, _ = open_tokenized(toy_ws, m.name).slice(0, 5)
    assert (ids[:, 0] == bos).all()
    # "no" keeps the old behaviour, under its own name
    plain = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32, prepend_bos="no"))
    assert plain.name == "pydoc.toy.ctx32" and plain.provenance.prepend_bos is False


def test_no_bos_for_a_tokenizer_without_one(toy_ws: Workspace, tmp_path: Path) -> None:
    from toy import toy_model

    from mistudio.core.models.registry import add_model, load_tokenizer

    folder = tmp_path / "nobos"
    toy_model("qwen2").save_pretrained(folder)
    tok = toy_tokenizer()
    tok = type(tok)(tokenizer_object=tok.backend_tokenizer, eos_token="</s>", pad_token="<pad>")
    assert tok.bos_token_id is None
    tok.save_pretrained(folder)
    add_model(toy_ws, "nobos", str(folder))
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "nobos", 32))
    assert m.name == "pydoc.nobos.ctx32" and m.provenance.bos_token_id is None
    ids, _ = open_tokenized(toy_ws, m.name).slice(0, 3)
    first = load_tokenizer(toy_ws, "nobos")(open_dataset(toy_ws, "pydoc").column("text")[0]
                                             .as_py(), add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == first[:32]  # text from the first token on
    with pytest.raises(InvalidInputError, match="defines no BOS token"):
        tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "nobos", 32, prepend_bos="yes"))


def test_a_set_found_by_name_must_match(toy_ws: Workspace) -> None:
    tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32), name="mine")
    with pytest.raises(InvalidInputError, match="exists with other settings: context length 32"):
        tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 64), name="mine")
    with pytest.raises(InvalidInputError, match="BOS first"):
        tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32, prepend_bos="no"),
                         name="mine")


def test_truncate_mode_pads_with_a_mask(toy_ws: Workspace) -> None:
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 256, mode="truncate",
                                                prepend_bos="yes"))
    tset = open_tokenized(toy_ws, m.name)
    assert tset.n_sequences == 12  # one per document
    ids, mask = tset.slice(0, 12)
    first = toy_tokenizer()(open_dataset(toy_ws, "pydoc").column("text")[0].as_py(),
                            add_special_tokens=False)["input_ids"]
    expect = [1, *first][:256]
    assert ids[0, : len(expect)].tolist() == expect and mask[0, : len(expect)].all()
    assert (ids[mask == 0] == toy_tokenizer().pad_token_id).all()
    assert m.summary.tokens == int(mask.sum())


def test_slices_cross_record_batches(toy_ws: Workspace) -> None:
    from mistudio.core.data.datasets import DatasetConfig, add_dataset

    add_dataset(toy_ws, "all", DatasetConfig("builtin:pydoc"))  # more documents than one batch
    m = tokenize_dataset(toy_ws, TokenizeConfig("all", "toy", 16))
    tset = open_tokenized(toy_ws, m.name)
    assert len(tset._batches) > 1
    whole, _ = tset.slice(0, tset.n_sequences)
    for a, b in [(0, 7), (5, 500), (tset.n_sequences - 3, tset.n_sequences + 5)]:
        part, _ = tset.slice(a, b)
        np.testing.assert_array_equal(part, whole[a:b])


def test_stats_are_stored(toy_ws: Workspace) -> None:
    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 64))
    stats = m.stats
    assert sum(stats.doc_length_histogram.counts) == 12
    top = stats.top_tokens
    assert top[0].count >= top[-1].count > 0 and isinstance(top[0].token, str)


def test_existing_set_is_reused(toy_ws: Workspace) -> None:
    cfg = TokenizeConfig("pydoc", "toy", 64)
    first = tokenize_dataset(toy_ws, cfg)
    assert tokenize_dataset(toy_ws, cfg).provenance.created == first.provenance.created


def test_a_rerun_finds_the_set_without_loading_the_tokenizer(
        toy_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.data.tokenization as tokenization

    cfg = TokenizeConfig("pydoc", "toy", 64)
    first = tokenize_dataset(toy_ws, cfg)

    def no_tokenizer(*_: object, **__: object) -> None:
        raise AssertionError("the tokenizer was loaded")

    monkeypatch.setattr(tokenization, "load_tokenizer", no_tokenizer)
    assert tokenize_dataset(toy_ws, cfg).provenance.created == first.provenance.created
    with pytest.raises(AssertionError, match="tokenizer was loaded"):  # other settings: a new set
        tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 32))


def test_bad_context_lengths(toy_ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="exceeds the model's maximum of 256"):
        tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 4096))
    with pytest.raises(InvalidInputError, match="out of range"):
        TokenizeConfig("pydoc", "toy", 1)
    from mistudio.core.data.datasets import DatasetConfig, add_dataset

    short = toy_ws.root.parent / "short.txt"
    short.write_text("Just a few words.\n")
    add_dataset(toy_ws, "tiny", DatasetConfig(str(short)))
    with pytest.raises(InvalidInputError, match="fewer tokens than one sequence"):
        tokenize_dataset(toy_ws, TokenizeConfig("tiny", "toy", 256))
    assert toy_ws.catalog.find("tokenized", "tiny.toy.ctx256") is None


def test_a_set_stores_its_preview_and_an_old_set_gets_one(toy_ws: Workspace) -> None:
    from mistudio.core.data.token_preview import PREVIEW_FILE, stored_preview
    from mistudio.core.jobs.adapters import preview_tokenized, store_tokenized_preview

    m = tokenize_dataset(toy_ws, TokenizeConfig("pydoc", "toy", 64))
    folder = Path(toy_ws.catalog.get("tokenized", m.name).path)
    preview = stored_preview(folder)
    tok = toy_tokenizer()
    ids, mask = open_tokenized(toy_ws, m.name).slice(0, 3)
    assert preview is not None and len(preview) == 3
    assert [t.id for t in preview[0]] == [int(i) for i in ids[0][mask[0].astype(bool)][:160]]
    assert [t.text for t in preview[1]] == [tok.decode([t.id]) for t in preview[1]]
    shown = preview_tokenized(toy_ws, m.name)
    assert shown.html is not None and f'href="tok:{preview[0][0].id}"' in shown.html
    (folder / PREVIEW_FILE).unlink()  # a set made before previews were stored
    assert preview_tokenized(toy_ws, m.name).html is None
    assert store_tokenized_preview(toy_ws, m.name).html == shown.html
    assert stored_preview(folder) == preview
