"""Feature analysis: statistics, examples, logit lens, neighbours, co-occurrence, storage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from toy import small_train_config as small

from mistudio.core.activations.store import open_activations
from mistudio.core.features.analysis import AnalyzeConfig, analyze
from mistudio.core.features.examples import Example, FeatureReader
from mistudio.core.features.store import open_features
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.sae.io import open_sae
from mistudio.core.sae.trainer import train_sae
from mistudio.core.store.workspace import Workspace

HOOK = "layers.1.resid_post"


def _dense_latents(ws: Workspace, n: int) -> tuple[np.ndarray, np.ndarray]:
    acts = open_activations(ws, "acts")
    sae, _ = open_sae(ws, "sae")
    with torch.no_grad():
        lat = sae.encode(torch.from_numpy(acts.rows(HOOK, 0, n))).numpy()
    return lat, acts.row_positions(0, n)


def test_statistics_match_a_dense_computation(analysed: Workspace) -> None:
    store = open_features(analysed, "sae")
    n = analysed.catalog.get("features", "sae").summary.n_tokens
    assert 1800 <= n <= 2000
    lat, _ = _dense_latents(analysed, n)
    fires = lat > 0
    np.testing.assert_allclose(store.column("frequency"), fires.mean(0), rtol=1e-6)
    np.testing.assert_allclose(store.column("max_activation"), lat.max(0), rtol=1e-5)
    with np.errstate(invalid="ignore"):
        mean = np.where(fires.any(0), lat.sum(0) / np.maximum(fires.sum(0), 1), 0)
    np.testing.assert_allclose(store.column("mean_activation"), mean, rtol=1e-4, atol=1e-6)
    assert (store.column("dead") == ~fires.any(0)).all()
    reader = FeatureReader(store.folder)
    assert reader.histograms.sum(1).tolist() == fires.sum(0).tolist()
    # the token-major store says which features fire on a token
    feats, vals = reader.token_features(7)
    assert set(feats.tolist()) == set(np.flatnonzero(fires[7]).tolist())
    assert (np.diff(vals) <= 0).all()


def test_top_examples_are_the_highest_sequence_maxima(analysed: Workspace) -> None:
    store = open_features(analysed, "sae")
    n = analysed.catalog.get("features", "sae").summary.n_tokens
    lat, pos = _dense_latents(analysed, n)
    reader = FeatureReader(store.folder)
    for f in np.flatnonzero(~store.column("dead"))[:20]:
        seq_max: dict[int, float] = {}
        for s, v in zip(pos[:, 0], lat[:, f], strict=True):
            seq_max[int(s)] = max(seq_max.get(int(s), 0.0), float(v))
        expected = sorted((v for v in seq_max.values() if v > 0), reverse=True)[:5]
        examples = reader.top_examples(int(f))
        got = [e.activation for e in examples]
        np.testing.assert_allclose(got, expected, rtol=1e-5)
        assert len({e.sequence for e in examples}) == len(examples)  # distinct contexts
        for e in examples:
            assert e.activations[e.marked] == e.activations.max() == pytest.approx(e.activation)
            assert len(e.token_ids) == len(e.activations) <= 33


def test_top_examples_show_a_repeated_passage_once(analysed: Workspace) -> None:
    """A corpus that holds a passage twice gave two identical top contexts: shown once."""
    store = open_features(analysed, "sae")
    reader = FeatureReader(store.folder)
    f = int(np.flatnonzero(~store.column("dead"))[0])
    first = reader.top_examples(f)
    top_s, top_v = reader.top_sequences.copy(), reader.top_values.copy()
    top_s[f, 1:] = top_s[f, :-1]  # the best sequence listed twice, as two copies would be
    top_v[f, 1:] = top_v[f, :-1]
    reader.top_sequences, reader.top_values = top_s, top_v
    again = reader.top_examples(f)
    keys = [e.token_ids.tobytes() for e in again]
    assert len(keys) == len(set(keys)) and again[0].sequence == first[0].sequence


def test_quantile_and_negative_examples(analysed: Workspace) -> None:
    store = open_features(analysed, "sae")
    reader = FeatureReader(store.folder)
    f = int(store.order(store.select(alive_only=True), "frequency")[0])
    q = reader.quantile_examples(f, n_bins=5, per_bin=2)
    assert len(q) == 10 and all(e.activation > 0 for e in q)
    bands = [int(e.kind.split()[1]) for e in q]
    assert bands == sorted(bands)
    lows = [e.activation for e in q if e.kind == "quantile 1"]
    highs = [e.activation for e in q if e.kind == "quantile 5"]
    assert max(lows) <= min(highs)
    assert all(e.activation == 0 for e in reader.random_negatives(f, 10))
    top_tok = np.array([q[-1].token_ids[q[-1].marked]])
    for e in reader.hard_negatives(f, top_tok, 5):
        assert e.activation == 0 and e.token_ids[e.marked] == top_tok[0]


def test_logit_lens_neighbours_and_cooccurrence(analysed: Workspace) -> None:
    from mistudio.core.models.registry import load_model

    store = open_features(analysed, "sae")
    sae, _ = open_sae(analysed, "sae")
    loaded = load_model(analysed, "toy", device="cpu", dtype="float32")
    f = 3
    d = sae.W_dec_FO[f].detach()
    norm = loaded.model.model.norm  # LLaMA's final RMSNorm
    logits = (norm(d[None]) @ loaded.model.lm_head.weight.T)[0]
    assert store.column("logit_pos_ids")[f].tolist() == logits.topk(10).indices.tolist()
    assert store.column("logit_neg_ids")[f].tolist() == (-logits).topk(10).indices.tolist()
    unit = sae.W_dec_FO / sae.W_dec_FO.norm(dim=-1, keepdim=True)
    cos = (unit @ unit[f]).detach()
    cos[f] = -2
    assert store.column("neighbour_ids")[f].tolist() == cos.topk(10).indices.tolist()
    # co-occurrence against the dense firing matrix
    n = analysed.catalog.get("features", "sae").summary.n_tokens
    fires = (_dense_latents(analysed, n)[0] > 0).astype(np.float64)
    g = int(np.flatnonzero(~store.column("dead"))[0])
    both = fires.T @ fires[:, g]
    score = both / np.sqrt(np.maximum(fires.sum(0) * fires[:, g].sum(), 1))
    score[g] = 0
    best = store.column("cooccur_ids")[g][0]
    assert score[best] == pytest.approx(score.max(), rel=1e-5)
    assert store.column("cooccur_score")[g][0] == pytest.approx(score.max(), rel=1e-5)


def test_labels_search_filter_and_sort(analysed: Workspace) -> None:
    from mistudio.core.features.store import Label

    store = open_features(analysed, "sae")
    store.set_labels([Label(3, '"class" (keyword)', "pattern", "simulation", 0.9, "ok", None),
                      Label(5, "closing brackets", "human", None, None, "ok", None)])
    assert store.search("clas").tolist() == [3]
    assert store.search("brack").tolist() == [5]
    store.set_labels([Label(5, "open brackets", "human", None, None, "ok", None)])
    assert store.search("closing").tolist() == []
    assert store.column("label")[5] == "open brackets"
    by_score = store.order(np.arange(store.n), "score")
    assert by_score[0] == 3  # unscored features last
    for descending in (False, True):  # unlabelled features last, either way
        by_label = store.order(np.arange(store.n), "label", descending=descending).tolist()
        assert by_label[:2] == ([3, 5] if not descending else [5, 3])
    freq = store.column("frequency")
    sel = store.select({"frequency": (0.01, 0.5)})
    assert ((freq[sel] >= 0.01) & (freq[sel] <= 0.5)).all()
    assert len(sel) == int(((freq >= 0.01) & (freq <= 0.5)).sum())
    again = open_features(analysed, "sae")  # labels persist
    assert again.label(3).score == pytest.approx(0.9)
    other = open_features(analysed, "sae")  # another window or process writes a score
    other.set_labels([Label(7, "seven", "human", "simulation", 0.25, "ok", None)])
    assert open_features(analysed, "sae").column("score")[7] == pytest.approx(0.25)
    assert open_features(analysed, "sae").column("score")[3] == pytest.approx(0.9)
    assert again.labels_for([3, 7, 8]).keys() == {3, 7}
    with pytest.raises(InvalidInputError, match="out of range"):
        again.label(10_000)


def test_bad_input(analysed: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="already exists"):
        analyze(analysed, AnalyzeConfig("sae"))
    with pytest.raises(InvalidInputError, match="top contexts"):
        AnalyzeConfig("sae", top_contexts=500)


def _ex(tokens: list[int], acts: list[float], marked: int, kind: str = "top") -> Example:

    a = np.array(acts, np.float32)
    return Example(0, np.arange(len(tokens)), np.array(tokens), a, marked, float(a[marked]), kind)


VOCAB_TEXT = {1: " a", 2: " class", 3: " def", 4: ":", 5: " the", 6: " Class", 7: "x", 8: " b"}


def test_label_features_scores_and_keeps_human_labels(analysed: Workspace) -> None:
    from mistudio.core.features.labels import LabelConfig, choose_features, label_features
    from mistudio.core.features.store import Label

    store = open_features(analysed, "sae")
    first = int(choose_features(store, 1)[0])
    store.set_labels([Label(first, "my own words", "human", None, None, "ok", None)])
    r = label_features(analysed, "sae", LabelConfig(top=12))
    assert r.requested == 12 and r.skipped == 1 and r.labelled_now == 11
    store = open_features(analysed, "sae")
    assert store.label(first).label == "my own words"
    labelled = [store.label(int(f)) for f in store.labelled()]
    assert len(labelled) == 12
    scored = [lb for lb in labelled if lb.score is not None]
    assert scored and all(0 <= lb.score <= 1 and lb.scorer == "rule" for lb in scored)
    assert all(lb.score == lb.detection and lb.fuzzing is not None and lb.family
               for lb in scored)
    again = label_features(analysed, "sae", LabelConfig(top=12))  # cached
    assert again.labelled_now == 0


def test_labelling_reads_stored_token_texts_without_the_tokenizer(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import mistudio.core.models.registry as registry
    from mistudio.core.features.labels import LabelConfig, label_features

    loaded: list[str] = []
    real = registry.load_tokenizer

    def counted(ws: Workspace, model: str, *rest: object) -> object:
        loaded.append(model)
        return real(ws, model, *rest)

    monkeypatch.setattr(registry, "load_tokenizer", counted)
    r = label_features(analysed, "sae", LabelConfig(top=6))
    assert r.labelled_now == 6 and loaded == []  # every token shown is stored with the analysis
    store = open_features(analysed, "sae")
    assert not any(re.search(r"<\d+>", store.label(int(f)).label) for f in store.labelled())


def test_an_explainer_that_writes_nothing_marks_the_label_failed(
        analysed: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import mistudio.core.features.labels as labels_mod

    class Mute:
        name = "llm:mute"

        def complete(self, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
            return ["  \n<<>>\n"] * len(prompts)

        def yes_probability(self, prompts: list[str]) -> list[float]:
            raise AssertionError("nothing to score")

    from mistudio.core.features.explainers import LLMExplainer

    monkeypatch.setattr(labels_mod, "make_explainer",
                        lambda *a: LLMExplainer(Mute(), Mute(), None))
    r = labels_mod.label_features(analysed, "sae", labels_mod.LabelConfig(top=3, explainer="llm"))
    assert r.labelled_now == 3 and r.scored == 0
    store = open_features(analysed, "sae")
    for f in store.labelled():
        lb = store.label(int(f))
        assert lb.status == "failed" and lb.score is None and lb.source == "llm:mute"


def test_cli_analyze_features_feature_label(acts_ws: Workspace,
                                            capsys: pytest.CaptureFixture) -> None:
    import json

    from mistudio.cli import main

    w = ["--workspace", str(acts_ws.root)]
    train_sae(acts_ws, small(steps=40), "s")
    assert main(["analyze", "s", "--tokens", "1500", "--top-k", "5", *w]) == 0
    assert "Analysed s:" in capsys.readouterr().out
    assert main(["label", "s", "--top", "30", *w]) == 0
    out = capsys.readouterr().out
    assert "Labelled 30 features with concept" in out and "held-out detection" in out
    assert main(["features", "s", "--sort", "score", "--limit", "3", "--json", *w]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["features"]) == 3 and listed["features"][0]["label"]
    f = listed["features"][0]["feature"]
    assert main(["feature", "s", str(f), "--quantiles", "--ablate", "2", "--attribute", *w]) == 0
    out = capsys.readouterr().out
    assert f"Feature {f} of s" in out and "Promotes:" in out and "[[" in out
    assert "Ablation on 2 top contexts" in out and "Tokens driving the peak (grad)" in out
    csv_path = acts_ws.root / "map.csv"
    assert main(["map", "s", "--csv", str(csv_path), *w]) == 0
    assert csv_path.read_text().splitlines()[0] == "feature,x,y,frequency,label"
    assert len(csv_path.read_text().splitlines()) == 129
    assert main(["label", "s", "--feature", str(f), "--set", "my label", *w]) == 0
    assert main(["features", "s", "--search", "my", *w]) == 0
    assert "my label" in capsys.readouterr().out
    assert main(["label", "s", "--feature", str(f), "--set", "  ", *w]) == 2
    assert "label for feature" in capsys.readouterr().err  # refused: the hand label stays
    assert main(["features", "s", "--search", "my", *w]) == 0
    assert "my label" in capsys.readouterr().out
    assert main(["feature", "s", "99999", *w]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["features", "nope", *w]) == 2
    assert "mistudio analyze nope" in capsys.readouterr().err


def test_ablation_changes_loss_only_inside_and_leaves_the_model_intact(analysed: Workspace) -> None:
    from mistudio.core.features.ablation import FeatureModel
    from mistudio.core.features.labels import choose_features

    store = open_features(analysed, "sae")
    fm = FeatureModel(analysed, store.folder)
    ids, mask = fm.sequence(0)
    with torch.no_grad():
        before = fm.loaded.model(input_ids=ids, attention_mask=mask).logits
    f = int(choose_features(store, 1)[0])
    effect = fm.ablate(f, n_contexts=3)
    assert effect.tokens > 0 and len(effect.per_context) == 3
    assert effect.delta == pytest.approx(effect.ce_ablated - effect.ce_clean, abs=1e-5)
    assert effect.delta != 0.0
    with torch.no_grad():
        after = fm.loaded.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)  # the hook is gone
    dead = np.flatnonzero(store.column("dead"))
    if len(dead):
        with pytest.raises(InvalidInputError, match="no context"):
            fm.ablate(int(dead[0]))


@pytest.mark.parametrize("method", ["grad", "ig"])
def test_attribution_explains_the_activation(analysed: Workspace, method: str) -> None:
    from mistudio.core.features.ablation import FeatureModel
    from mistudio.core.features.labels import choose_features

    store = open_features(analysed, "sae")
    fm = FeatureModel(analysed, store.folder)
    f = int(choose_features(store, 1)[0])
    ex = fm.reader.top_examples(f, 1)[0]
    pos = int(ex.positions[ex.marked])
    att = fm.attribute(f, ex.sequence, pos, method=method, steps=8)
    assert att.activation == pytest.approx(ex.activation, rel=1e-3)
    assert att.scores.shape == (pos + 1,) and np.isfinite(att.scores).all()
    assert np.abs(att.scores).max() > 0
    if method == "ig":  # completeness: attributions sum to about f(x) - f(0)
        assert att.scores.sum() == pytest.approx(att.activation, rel=0.5, abs=0.5)


def test_feature_map_umap_cached_and_pca_for_tiny_saes(analysed: Workspace) -> None:
    from mistudio.core.features.feature_map import MAP_FILE, compute_map, feature_map

    fmap = feature_map(analysed, "sae")
    assert fmap.method == "umap" and fmap.xy.shape == (128, 2)
    assert fmap.xy.min() >= 0 and fmap.xy.max() <= 1
    mtime = (open_features(analysed, "sae").folder / MAP_FILE).stat().st_mtime
    again = feature_map(analysed, "sae")  # cached
    assert np.array_equal(again.xy, fmap.xy)
    assert (open_features(analysed, "sae").folder / MAP_FILE).stat().st_mtime == mtime
    tiny = compute_map(np.random.default_rng(0).standard_normal((40, 16)))
    assert tiny.method == "pca" and tiny.xy.shape == (40, 2)


def test_analysis_refuses_another_models_activations(analysed: Workspace,
                                                    toy_folder: Callable[[str], Path]) -> None:
    from mistudio.core.activations.extraction import ExtractConfig, extract_activations
    from mistudio.core.models.registry import add_model

    add_model(analysed, "other", str(toy_folder("qwen2")))
    extract_activations(analysed, ExtractConfig("other", "pydoc", (1,), context_length=64,
                                                max_tokens=600), "other-acts")
    with pytest.raises(InvalidInputError, match="trained on toy.*comes from other"):
        analyze(analysed, AnalyzeConfig("sae", "other-acts"), "x")


def test_a_cancelled_analysis_is_never_shown_as_complete(acts_ws: Workspace) -> None:
    from mistudio.core.runtime.errors import Cancelled
    from mistudio.core.runtime.tasks import CallbackTask, CancelToken

    train_sae(acts_ws, small(steps=20), "sae")
    token = CancelToken()
    task = CallbackTask(lambda p: token.cancel() if p > 0.2 else None, cancel=token,
                        max_rate=1e9, min_step=0.0)  # every report: no timing involved
    with pytest.raises(Cancelled):
        analyze(acts_ws, AnalyzeConfig("sae", tokens=2500, block_rows=128), task=task)
    assert acts_ws.catalog.find("features", "sae") is None
    assert not (acts_ws.root / "features" / "sae").exists()
    analyze(acts_ws, AnalyzeConfig("sae", tokens=2500))  # starts clean
    assert open_features(acts_ws, "sae").n == 128


def test_cancelled_labelling_keeps_what_it_finished(analysed: Workspace) -> None:
    from mistudio.core.features.labels import LabelConfig, label_features
    from mistudio.core.runtime.errors import Cancelled
    from mistudio.core.runtime.tasks import CallbackTask, CancelToken

    token = CancelToken()
    task = CallbackTask(lambda p: token.cancel() if p >= 0.5 else None, cancel=token,
                        max_rate=1e9, min_step=0.0)
    with pytest.raises(Cancelled):
        label_features(analysed, "sae", LabelConfig(top=20), task)
    kept = len(open_features(analysed, "sae").labelled())
    assert 0 < kept < 20
    r = label_features(analysed, "sae", LabelConfig(top=20))  # resumes
    assert r.skipped == kept and len(open_features(analysed, "sae").labelled()) == 20


def test_localhost_endpoint_explainer_and_judge(analysed: Workspace) -> None:
    """An OpenAI-compatible server on loopback: the label and the yes/no answers come from it."""
    from llm_stub import stub_llm_server

    from mistudio.core.features.labels import LabelConfig, label_features

    def reply(prompt: str) -> str:
        return "Label: marked tokens" if "MY PROMPT" in prompt else (
            "yes" if "<<" in prompt and len(prompt) % 2 else "no")

    with stub_llm_server(reply) as (url, seen):
        r = label_features(analysed, "sae", LabelConfig(
            top=12, explainer="endpoint:stub", endpoint=url, contexts=6,
            prompt="MY PROMPT: describe these.\n{examples}\nAnswer:"))
    assert r.explainer == "endpoint:stub" and r.scored >= 2 and not r.note
    assert seen and all(p == "/v1/chat/completions" for p in seen if p != "/v1/models")
    store = open_features(analysed, "sae")
    lb = next(lb for f in store.labelled() if (lb := store.label(int(f))).score is not None)
    assert lb.label == "marked tokens" and lb.scorer == "judge:endpoint:stub"
    assert lb.detection is not None and lb.formula is None
    with pytest.raises(InvalidInputError, match="placeholder"):
        LabelConfig(explainer="llm", prompt="no slot")
    with pytest.raises(InvalidInputError, match="not on this machine"):
        label_features(analysed, "sae", LabelConfig(top=1, explainer="endpoint:x",
                                                    endpoint="http://example.com/v1"))


def test_text_probe_matches_the_analysis(analysed: Workspace) -> None:
    from mistudio.core.data.tokenization import open_tokenized
    from mistudio.core.features.probe import TextProbe, describe

    store = open_features(analysed, "sae")
    reader = FeatureReader(store.folder)
    probe = TextProbe(analysed, "sae", device="cpu")
    seq = int(reader.rows[0, 0])
    ids, mask = open_tokenized(analysed, reader.manifest.provenance.tokenized).slice(
        seq, seq + 1)
    r0, r1 = reader.sequence_rows(seq)
    feature = int(np.argmax(np.diff(reader.col_ptr)))  # the most frequent feature
    acts = probe.run_ids(ids[0][mask[0].astype(bool)], k=4, watch=(feature,))
    for row in range(r0, r1):  # every analysed token of the sequence: same features, same values
        pos = int(reader.rows[row, 1])
        feats, vals = reader.token_features(row)
        assert acts.token_ids[pos] == reader.rows[row, 2]
        assert acts.top_features_TK[pos, 0] == feats[0]
        np.testing.assert_allclose(acts.top_values_TK[pos, 0], vals[0], rtol=1e-3, atol=1e-4)
        on = dict(zip(feats.tolist(), vals.tolist(), strict=True))
        np.testing.assert_allclose(acts.watched_TW[pos, 0], on.get(feature, 0.0), rtol=1e-3,
                                   atol=1e-4)
    assert (acts.top_values_TK[0] == 0).all()  # position 0 stays silent
    text = probe.run("def main():\n    return 42", k=3)
    assert len(text.tokens) == len(text.token_ids) and "⏎" in "".join(text.tokens)
    rows = describe(text, store.column("label"), n=5)
    assert rows and rows == sorted(rows, key=lambda r: -r["activation"])
    with pytest.raises(InvalidInputError, match="no text"):
        probe.run("   ")
    with pytest.raises(InvalidInputError, match="out of range"):
        probe.run("x y", watch=(10**6,))


def test_feature_correlation_matches_numpy(analysed: Workspace) -> None:
    from mistudio.core.features.interpret import feature_correlation

    store = open_features(analysed, "sae")
    reader = FeatureReader(store.folder)
    n = reader.n_rows
    feats = [int(f) for f in np.argsort(-store.column("frequency"))[:6]]
    dead = np.flatnonzero(store.column("dead"))
    feats += [int(dead[0])] if len(dead) else []
    dense = np.zeros((n, len(feats)))
    for j, f in enumerate(feats):
        rows, vals = reader.firing(f)
        dense[rows, j] = vals
    C = feature_correlation(store.folder, feats)
    live = dense.std(0) > 0
    np.testing.assert_allclose(C[np.ix_(live, live)], np.corrcoef(dense[:, live].T), atol=1e-4)
    assert np.allclose(np.diag(C), 1.0)
    if len(dead):
        assert (C[-1, :-1] == 0).all()


def test_analysis_stores_token_texts_for_browsing_without_a_tokenizer(analysed: Workspace) -> None:
    from mistudio.core.features.examples import TokenText, stored_token_text
    from mistudio.core.models.registry import load_tokenizer

    store = open_features(analysed, "sae")
    reader = FeatureReader(store.folder)
    stored = stored_token_text(store.folder)
    assert stored is not None and stored.tokenizer is None
    live = TokenText(load_tokenizer(analysed, "toy"))
    ids = np.unique(np.concatenate([np.asarray(reader.rows[:, 2]),
                                    store.column("logit_pos_ids").ravel()]))
    assert stored.many(ids) == live.many(ids)  # every token the browser shows, no "<id>"
