"""Concept labels: annotations of the text, the compositional explainer, detection and fuzzing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mistudio.core.features.concept_explainer import build_space, explain_feature, feature_case
from mistudio.core.features.concepts import linguistic
from mistudio.core.features.concepts.annotate import Annotations
from mistudio.core.features.concepts.catalogue import INDEX, KEYS
from mistudio.core.features.concepts.spans import spans_of
from mistudio.core.features.concepts.text_concepts import text_concepts
from mistudio.core.features.contexts import Contexts, score_mask
from mistudio.core.features.examples import TokenText
from mistudio.core.features.formula import Formula, family, words
from mistudio.core.features.store import Label, open_features
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.store.workspace import Workspace

needs_spacy = pytest.mark.skipif(not linguistic.availability().ok,
                                 reason="the concepts extra (spaCy, English pipeline) is not installed")


def _concepts_of(pieces: list[str]) -> dict[str, list[str]]:
    """Which pieces carry each text and code concept."""
    from mistudio.core.features.concepts.code_concepts import code_concepts
    from mistudio.core.features.concepts.spans import at_anchors

    spans = spans_of(pieces)
    found = text_concepts(pieces, spans, np.arange(len(pieces)) + 1)
    found.update({k: at_anchors(m, spans) for k, m in code_concepts(spans.text).items()})
    return {k: [p for p, on in zip(pieces, v, strict=True) if on] for k, v in found.items()}


def test_text_code_and_markup_concepts_of_a_snippet() -> None:
    pieces = ["The", " \"", "for", "\"", " statement", "\n", "*****", "\n\n", "Use", " it",
              " (", "see", " below", "):", "\n\n", "   ", " for", " i", " in", " range", "(",
              "3", "):", "\n", "      ", " print", "(", "\"", "hi", "\"", ")", "  #", " loop",
              "\n", "Don", "'t", " loop", " for", "ever", "."]
    c = _concepts_of(pieces)
    assert c["in:dquote"] == ["for", "hi"]
    assert c["py:keyword"] == [" for", " in"]  # "for" in prose is not a keyword
    assert c["py:builtin"] == [" range", " print"] and c["py:call"] == [" range", " print"]
    assert c["py:string"] == ["\"", "hi", "\""] and c["py:number"] == ["3"]
    assert c["py:comment"] == ["  #", " loop"]
    assert c["md:heading"][0] == "The" and c["md:underline"] == ["*****"]
    assert c["in:paren"] == ["see", " below", "3", "\"", "hi", "\""]
    assert c["in:squote"] == []  # an apostrophe opens no quotation
    assert c["piece:cont"] == ["ever"]
    assert " for" in c["at:line_start"] and "Use" in c["at:paragraph"]
    assert c["ws:newline"] == ["\n", "\n\n", "\n\n", "\n", "\n"]


@needs_spacy
def test_spacy_words_are_aligned_to_subword_tokens() -> None:
    pieces = ["He", " did", " not", " meet", " Alice", " Smith", " in", " Par", "is", "."]
    spans = spans_of(pieces)
    parsed = linguistic.parse_texts([spans.text], lambda i: None)
    keys = [k for k in KEYS if k.split(":")[0] in ("pos", "dep", "ent", "morph", "sent")]
    bits = linguistic.word_concepts(parsed[0], spans.anchors, keys)
    on = {k: [p for p, b in zip(pieces, bits[:, i], strict=True) if b] for i, k in enumerate(keys)}
    assert on["dep:neg"] == [" not"]
    assert on["ent:PERSON"] == [" Alice", " Smith"] and on["ent:start"] == [" Alice", " Par", "is"]
    assert on["ent:GPE"] == [" Par", "is"]  # both pieces of the word
    assert on["sent:start"] == ["He"]
    assert linguistic.reads_as_english(parsed)[0]


@needs_spacy
def test_text_in_another_language_is_not_read_with_the_english_pipeline() -> None:
    german = ("Der Hund läuft schnell über die Straße und bellt laut, weil er die Katze "
              "gesehen hat. ") * 30
    parsed = linguistic.parse_texts([german], lambda i: None)
    english, share = linguistic.reads_as_english(parsed)
    assert not english and share < 0.12


def _space(n_seq: int = 120, length: int = 64, seed: int = 0) -> tuple[SimpleNamespace, dict]:
    """A synthetic analysis: random concepts and tokens, and features firing by known rules."""
    rng = np.random.default_rng(seed)
    n = n_seq * length
    rows = np.stack([np.repeat(np.arange(n_seq), length), np.tile(np.arange(length), n_seq),
                     rng.integers(0, 50, n)], axis=1)
    bits = np.zeros((n, len(KEYS)), dtype=bool)
    for key, p in (("pos:PROPN", 0.03), ("pos:NOUN", 0.2), ("morph:PronType=Art", 0.1),
                   ("in:dquote", 0.05), ("dep:neg", 0.01)):
        bits[:, INDEX[key]] = rng.random(n) < p
    prev_art = np.zeros(n, dtype=bool)
    prev_art[1:] = bits[:-1, INDEX["morph:PronType=Art"]]
    prev_art[rows[:, 1] == 0] = False
    rules = {
        0: bits[:, INDEX["pos:PROPN"]],
        1: rows[:, 2] == 7,  # the token " the"
        2: bits[:, INDEX["pos:NOUN"]] & prev_art,
        3: rng.random(n) < 0.02,  # no rule
        4: np.isin(np.arange(n), [5, 900]),  # two tokens
    }
    firing = {f: (np.flatnonzero(m), rng.uniform(0.5, 3.0, int(m.sum())).astype(np.float32))
              for f, m in rules.items()}
    reader = SimpleNamespace(rows=rows, firing=lambda f: firing[f])
    return reader, {"bits": bits, "length": length, "n_seq": n_seq}


def _synthetic_space() -> tuple:
    reader, made = _space()
    ann = Annotations(made["bits"], 0, made["length"], "spaCy test")
    text = TokenText(None, {i: (" the" if i == 7 else f" w{i}") for i in range(50)})
    return reader, build_space(reader, ann, text)  # type: ignore[arg-type]


def test_the_concept_explainer_finds_the_rule_a_feature_follows() -> None:
    _, space = _synthetic_space()
    found = {}
    for f in range(4):
        case = feature_case(space, f, 60, 0)
        assert not isinstance(case, str)
        label, formula = explain_feature(space, f, case)
        from mistudio.core.features.concept_explainer import judge

        found[f] = (label, formula, judge(space, formula, case.held_out))
    assert found[0][0] == "proper nouns" and family(found[0][1]) == "names"
    assert found[1][0] == '"the"' and not found[1][1].names_concept
    assert found[2][1] == Formula((("", "pos:NOUN"), ("and", "prev:morph:PronType=Art")))
    assert found[2][0] == "nouns after articles (a, an, the)"
    for f in range(3):  # the true rule: right on every held-out window and mark
        assert found[f][2].detection == 1.0 and found[f][2].fuzzing == 1.0
    assert found[3][2].detection < 0.7  # a feature with no rule gets no good score
    # a feature that fires twice cannot be judged: it says so
    assert "too few activations" in feature_case(space, 4, 60, 0)


def test_only_the_token_explainer_uses_no_concepts() -> None:
    _, space = _synthetic_space()
    label, formula = explain_feature(space, 1, feature_case(space, 1, 60, 0), concepts=False)
    assert label == '"the"' and not formula.names_concept
    # proper nouns are no token: the token explainer has nothing to say
    assert explain_feature(space, 0, feature_case(space, 0, 60, 0), concepts=False) is None


def test_detection_and_fuzzing_count_windows_and_decoys() -> None:
    # two activating windows of 4 rows (true marks on rows 0 and 5, decoys on 2 and 6),
    # two silent windows
    ctx = Contexts(pos_rows=np.arange(8), pos_seg=np.repeat([0, 1], 4),
                   pos_active=np.isin(np.arange(8), [0, 5]),
                   pos_decoy=np.isin(np.arange(8), [2, 6]),
                   neg_rows=np.arange(8, 16), neg_seg=np.repeat([0, 1], 4), n_pos=2, n_neg=2,
                   n_hard=0, pos_windows=np.array([0, 1]), neg_windows=np.array([2, 3]))
    exact = score_mask(ctx, np.isin(np.arange(8), [0, 5]), np.zeros(8, bool))
    assert exact == (1.0, 1.0)
    everywhere = score_mask(ctx, np.ones(8, bool), np.ones(8, bool))
    assert everywhere.detection == 0.5 and everywhere.fuzzing == 0.5
    # fires in window 0 only, and one silent window also matches
    half = score_mask(ctx, np.isin(np.arange(8), [0]), np.isin(np.arange(8), [1]))
    assert half.detection == pytest.approx(0.5 * (0.5 + 0.5))
    assert half.fuzzing == pytest.approx(0.5 * (0.5 + 1.0))


def test_formula_words_and_round_trip() -> None:
    f = Formula.atom("pos:PROPN").extend("and not", "in:dquote")
    assert words(f) == "proper nouns, except text inside double quotes"
    assert Formula.from_text(f.to_text()) == f and Formula.from_text("nonsense") is None
    assert words(Formula.atom("prev:dep:neg")) == "the token after negation words"
    assert words(Formula.atom("tok:the").extend("or", "tok:a")) == '"the" / "a"'
    assert family(Formula.atom("tok:⏎")) == "line breaks"
    assert family(Formula.atom("py:keyword")) == "code keywords"


def test_label_run_stores_families_scores_and_reasons(analysed: Workspace) -> None:
    from mistudio.core.features.labels import LabelConfig, choose_features, label_features

    store = open_features(analysed, "sae")
    first = int(choose_features(store, None)[0])
    store.set_labels([Label(first, "my words", "human", None, None, "ok", None)])
    r = label_features(analysed, "sae", LabelConfig())
    store = open_features(analysed, "sae")
    assert store.label(first).label == "my words"  # never overwritten
    assert r.requested == int((~store.column("dead")).sum()) and r.left == 0
    labels = [store.label(int(f)) for f in store.labelled()]
    ok = [lb for lb in labels if lb.source == "concept" and lb.status == "ok"]
    failed = [lb for lb in labels if lb.status == "failed"]
    assert ok and all(lb.family and lb.formula and lb.detection == lb.score for lb in ok)
    assert len(failed) == r.unlabelled and all(lb.detail for lb in failed)
    fam = ok[0].family
    chosen = store.select(family=fam)
    assert ok[0].feature in chosen and all(store.label(int(f)).family == fam for f in chosen)
    assert store.family_counts()[fam] == len(chosen)
    assert r.families[fam] == len(chosen) and r.concepts
    word = ok[0].label.split()[0].strip('"')
    assert ok[0].feature in store.search(word)


def test_a_small_local_model_is_not_used_as_explainer(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.features.llm as llm
    from mistudio.core.features.labels import LabelConfig, label_features

    class Small:
        name = "llm:tiny"
        n_params = 135_000_000

        def __init__(self, ws: object, model: str) -> None:
            pass

    monkeypatch.setattr(llm, "LocalLLM", Small)
    r = label_features(analysed, "sae", LabelConfig(top=5, explainer="llm:tiny"))
    assert r.explainer == "concept" and "135M parameters" in r.note
    assert "\n" not in r.note


def test_text_that_cannot_be_recovered_is_one_clear_error() -> None:
    from mistudio.core.features.concepts.annotate import token_pieces

    ids = np.array([[1, 5, 6]])
    with pytest.raises(InvalidInputError, match="cannot be recovered"):
        token_pieces(lambda i: "\ufffd", ids, np.ones_like(ids), {1: ""})


def test_annotations_are_cached_beside_the_tokenized_set(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.features.concepts.annotate as annotate_mod
    from mistudio.core.features.labels import LabelConfig, label_features

    label_features(analysed, "sae", LabelConfig(top=3))
    tokenized = open_features(analysed, "sae").folder  # the analysis names its tokenized set
    monkeypatch.setattr(annotate_mod, "_annotate_blocks",
                        lambda *a: (_ for _ in ()).throw(AssertionError("annotated again")))
    label_features(analysed, "sae", LabelConfig(top=6))  # three more features, same text
    assert tokenized.exists()


def test_without_spacy_text_and_code_concepts_still_label(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.features.labels import LabelConfig, label_features

    monkeypatch.setattr(linguistic, "spacy_pipeline_name", lambda: None)
    r = label_features(analysed, "sae", LabelConfig(top=20))
    assert r.concepts.startswith("spaCy has no English pipeline (labels use the text")
    store = open_features(analysed, "sae")
    said = {store.label(int(f)).detail for f in store.labelled()
            if store.label(int(f)).status == "ok"}
    assert said == {f"concepts: {r.concepts}"}  # each label says which concepts it could use
    assert r.scored > 0


def test_an_older_labels_file_gains_the_new_columns(analysed: Workspace) -> None:
    from mistudio.core.features.label_db import LABELS_FILE

    folder = open_features(analysed, "sae").folder
    path = Path(folder) / LABELS_FILE
    path.unlink()
    con = sqlite3.connect(path)  # the first schema, with one hand label in it
    con.executescript("""CREATE TABLE labels (feature INTEGER PRIMARY KEY, label TEXT NOT NULL,
        source TEXT NOT NULL, scorer TEXT, score REAL, status TEXT NOT NULL DEFAULT 'ok',
        detail TEXT, updated REAL NOT NULL);
        INSERT INTO labels VALUES (3, 'old words', 'human', NULL, NULL, 'ok', NULL, 1.0);""")
    con.close()
    store = open_features(analysed, "sae")
    lb = store.label(3)
    assert lb.label == "old words" and lb.family is None and lb.detection is None
    store.set_labels([Label(4, "x", "concept", "rule", 0.8, "ok", None, "names", 0.8, 0.7,
                            Formula.atom("pos:PROPN").to_text())])
    assert store.label(4).fuzzing == 0.7 and store.column("family")[4] == "names"


def test_hand_labels_are_scored_by_a_judge_and_never_rewritten(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.features.llm as llm
    from mistudio.core.features.labels import LabelConfig, label_features

    store = open_features(analysed, "sae")
    freq = store.column("frequency")
    judged = [int(f) for f in np.flatnonzero((freq > 0.01) & (freq < 0.04))[:2]]
    everywhere = int(np.argmax(freq))  # too frequent to judge: kept, with the reason
    store.set_labels([Label(f, f"my words {f}", "human", None, None, "ok", None)
                      for f in [*judged, everywhere]])
    with pytest.raises(InvalidInputError, match="needs a judge"):
        LabelConfig(explainer="human")
    from llm_stub import stub_llm_server

    # the judge says yes where the text holds " the"
    with stub_llm_server(lambda p: "yes" if " the" in p.split("Text", 1)[-1] else "no") \
            as (url, _):
        r = label_features(analysed, "sae", LabelConfig(
            explainer="human", judge="endpoint:stub", endpoint=url, contexts=6))
    assert r.explainer == "human" and r.labelled_now == 3 and r.scored == 2
    for f in judged:
        lb = store.label(f)
        assert lb.label == f"my words {f}" and lb.source == "human"
        assert lb.scorer == "judge:endpoint:stub" and lb.detection is not None
        assert lb.fuzzing is not None
    lb = store.label(everywhere)
    assert lb.label == f"my words {everywhere}" and lb.score is None and "fires" in lb.detail

    class Small:
        name, n_params = "llm:tiny", 135_000_000

        def __init__(self, ws: object, model: str) -> None:
            pass

    monkeypatch.setattr(llm, "LocalLLM", Small)
    with pytest.raises(InvalidInputError, match="135M parameters"):
        label_features(analysed, "sae", LabelConfig(explainer="human", judge="tiny"))
    assert store.label(judged[0]).label == f"my words {judged[0]}"


@needs_spacy
def test_text_in_another_language_labels_without_the_english_concepts(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from mistudio.core.features.labels import LabelConfig, label_features

    monkeypatch.setattr(linguistic, "reads_as_english", lambda parsed: (False, 0.03))
    r = label_features(analysed, "sae", LabelConfig(top=20))
    assert r.concepts.startswith("the text does not read as English (3% English stop words)")
    store = open_features(analysed, "sae")
    formulas = [Formula.from_text(lb.formula) for f in store.labelled()
                if (lb := store.label(int(f))).formula]
    assert formulas and not any(a.split(":")[-2] in ("pos", "dep", "ent", "tag", "morph")
                                for fm in formulas for a in fm.atoms if ":" in a)


def _annotate_range(root: str, last: int) -> int:
    """In a child process: annotate sequences 0..last of the analysis's tokenized set."""
    from mistudio.core.data.tokenization import open_tokenized
    from mistudio.core.features.concepts.annotate import annotate
    from mistudio.core.features.examples import FeatureReader, stored_token_text

    ws = Workspace(root)
    folder = open_features(ws, "sae").folder
    reader = FeatureReader(folder)
    text = stored_token_text(folder)
    tokenized = open_tokenized(ws, reader.manifest.provenance.tokenized)
    return len(annotate(tokenized, 0, last, lambda i: text(i).replace("⏎", "\n")).bits)


def test_two_processes_annotating_at_once_leave_one_whole_cache(analysed: Workspace) -> None:
    import multiprocessing

    from mistudio.core.data.tokenization import open_tokenized
    from mistudio.core.features.concepts.annotate import CACHE_DIR, CACHE_FILE, _read_cache
    from mistudio.core.features.examples import FeatureReader

    folder = open_features(analysed, "sae").folder
    tokenized = open_tokenized(analysed, FeatureReader(folder).manifest.provenance.tokenized)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(2)
    try:  # different ranges: a mixed-up cache would not match its note
        sizes = pool.starmap(_annotate_range, [(str(analysed.root), 10),
                                               (str(analysed.root), 20)] * 2)
    finally:
        pool.close()
        pool.join()  # no worker left behind for later tests' process checks
    assert sizes == [11 * tokenized.context_length, 21 * tokenized.context_length] * 2
    note, packed = _read_cache(tokenized.path)
    assert len(packed) == (note["last"] - note["first"] + 1) * tokenized.context_length
    assert [p.name for p in (tokenized.path / CACHE_DIR).iterdir()] == [CACHE_FILE]
