"""Evaluation: the metric on hand-made cases, description mapping, baselines on a tiny corpus,
the hybrid fusion, caching, and the CLI's JSON contract (real models, no mocks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

from ner_retriever.evaluation.descriptions import (
    SHIPPED_MAPS,
    Descriptions,
    describe_tag,
    is_other_tag,
    load_descriptions,
)
from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.evaluation.data import EvalSet, load_eval_set, sample_indices
from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.evaluate import EvalOptions, evaluate
from ner_retriever.evaluation.metrics import r_precision
from ner_retriever.evaluation.scoring import hybrid_rank, mention_document_scores
from ner_retriever.retrieve.sources import ArraySource
from ner_retriever.config import MENTION_TEMPERATURE
from ner_retriever.retrieve.fusion import feedback_query, fuse, score_stats
from ner_retriever.retrieve.pooling import best_rows, document_max, document_softmax

# Nine sentences. politician: docs 0, 1, 3 (doc 1 mentions two politicians); GPE: 0, 2, 4;
# music: only doc 5 (a type with one document); location-other is a catch-all; doc 6-8 have
# no gold mention at all.
CONLL = """\
Angela\tB-person-politician
Merkel\tI-person-politician
visited\tO
Paris\tB-location-GPE
.\tO

Obama\tB-person-politician
and\tO
Macron\tB-person-politician
met\tO
.\tO

Berlin\tB-location-GPE
is\tO
large\tO
.\tO

Senator\tO
Sanders\tB-person-politician
spoke\tO
.\tO

They\tO
flew\tO
to\tO
Tokyo\tB-location-GPE
and\tO
the\tO
Alps\tB-location-other
.\tO

Imagine\tB-art-music
was\tO
a\tO
hit\tO
.\tO

The\tO
cat\tO
slept\tO
.\tO

Rain\tO
fell\tO
all\tO
day\tO
.\tO

We\tO
ate\tO
bread\tO
.\tO
"""


@pytest.fixture()
def conll(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.bio"
    path.write_text(CONLL, encoding="utf-8")
    return path


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, minilm_tokenizer) -> Path:
    """A random 3-block Llama saved as a local model folder (with MiniLM's fast tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    model = tf.LlamaModel(tf.LlamaConfig(
        vocab_size=len(minilm_tokenizer), hidden_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=256))
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


# -- metric ----------------------------------------------------------------------------------
def test_r_precision_perfect_none_and_partial():
    rel = np.array([0, 2])
    assert r_precision(np.array([0.9, 0.1, 0.8, 0.2]), rel) == 1.0
    assert r_precision(np.array([0.1, 0.9, 0.2, 0.8]), rel) == 0.0
    assert r_precision(np.array([0.9, 0.8, 0.1, 0.2]), rel) == 0.5
    mask = np.array([True, False, True, False])
    assert r_precision(np.array([0.9, 0.8, 0.1, 0.2]), mask) == 0.5


def test_r_precision_ties_count_in_expectation():
    # Everything tied: R / n of the top R are relevant on average, whatever the order.
    assert r_precision(np.zeros(5), np.array([1, 3])) == pytest.approx(2 / 5)
    # One clear winner (relevant), then a three-way tie for the last slot with one relevant.
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert r_precision(scores, np.array([0, 2])) == pytest.approx((1 + 1 / 3) / 2)
    # Document order does not matter: reversing the documents gives the same value.
    assert r_precision(scores[::-1], np.array([4, 2])) == pytest.approx((1 + 1 / 3) / 2)


def test_r_precision_unscored_documents_and_nan_rank_last():
    scores = np.array([-np.inf, 0.3, np.nan, -np.inf])
    assert r_precision(scores, np.array([1])) == 1.0
    # Relevant documents without any mention: only as good as a random tail.
    assert r_precision(scores, np.array([1, 0])) == pytest.approx((1 + 1 / 3) / 2)


def test_r_precision_single_relevant_document_and_empty_type():
    assert r_precision(np.array([0.1, 0.7, 0.3]), np.array([1])) == 1.0
    assert r_precision(np.array([0.1, 0.7, 0.3]), np.array([2])) == 0.0
    with pytest.raises(ValueError):
        r_precision(np.array([0.1, 0.2]), np.array([], dtype=np.int64))


def test_duplicate_mentions_count_their_document_once():
    # Doc 0 has three near-identical mentions that all beat everything else; doc 1 and doc 2
    # have one mention each. Relevant: docs 0 and 2. Ranking by mention would fill the top 2
    # with doc 0 twice; per-document max keeps doc 0 once and lets doc 2 in.
    mentions = np.array([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.0, 1.0], [0.8, 0.6]],
                        dtype=np.float32)
    doc_index = np.array([0, 0, 0, 1, 2])
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    scores = mention_document_scores(query, mentions, doc_index, n_docs=4)
    assert scores.shape == (1, 4)
    assert scores[0, 0] == pytest.approx(1.0) and scores[0, 3] == -np.inf
    assert r_precision(scores[0], np.array([0, 2])) == 1.0


def test_document_max_matches_a_loop():
    rng = np.random.default_rng(0)
    doc_index = np.sort(rng.integers(0, 30, size=200))
    sims = rng.normal(size=(3, 200)).astype(np.float32)
    got = document_max(sims, doc_index, 35)
    for d in range(35):
        rows = doc_index == d
        expected = sims[:, rows].max(axis=1) if rows.any() else np.full(3, -np.inf)
        np.testing.assert_array_equal(got[:, d], expected)


def test_document_softmax_rewards_several_good_mentions():
    sims = np.array([[0.5, 0.5, 0.2, 0.9]], dtype=np.float32)
    doc_index = np.array([0, 0, 1, 3])  # document 2 has no mention
    got = document_softmax(sims, doc_index, 4, temperature=0.05)[0]
    assert got[0] == pytest.approx(0.5 + 0.05 * np.log(2))  # two equal mentions: + t log 2
    assert got[1] == pytest.approx(0.2) and got[3] == pytest.approx(0.9)
    assert got[2] == -np.inf
    rng = np.random.default_rng(1)
    doc_index = np.sort(rng.integers(0, 30, size=200))
    sims = rng.normal(size=(3, 200)).astype(np.float32)
    soft, hard = document_softmax(sims, doc_index, 35, 0.05), document_max(sims, doc_index, 35)
    assert ((soft >= hard) | np.isinf(hard)).all()  # never below the best mention
    loop = [0.05 * np.log(np.exp(sims[0, doc_index == d].astype(np.float64) / 0.05).sum())
            for d in range(30) if (doc_index == d).any()]
    np.testing.assert_allclose(soft[0][np.isfinite(soft[0])], loop, rtol=1e-5)


def test_fuse_standardises_each_side_and_floors_missing_mentions():
    mention = np.array([0.9, 0.1, 0.5, -np.inf])
    dense = np.array([0.1, 0.9, 0.5, 0.2])
    m_stats, d_stats = score_stats(mention), score_stats(dense)
    assert m_stats.floor == pytest.approx(0.1)  # no mention = the lowest mention score
    fused = fuse(mention, dense, m_stats, d_stats, 1.0)
    assert fused[3] == pytest.approx(fused[1]) and np.argmax(fused) == 0
    assert np.argsort(-fuse(mention, dense, m_stats, d_stats, 0.0)).tolist()[:3] == [1, 2, 3]
    with pytest.raises(ConfigError):
        fuse(mention, dense, m_stats, d_stats, 1.5)


def test_hybrid_rank_only_ranks_candidates_and_matches_full_fusion_on_small_sets():
    # 300 documents < the 1,024-document calibration sample and cfg.candidates(k) >= 100:
    # a type with R = 20 relevant documents fuses the top 100 of each side.
    rng = np.random.default_rng(0)
    mentions, docs, documents, query = _planted(rng, n_docs=300, relevant=20)
    es = EvalSet("toy", docs=[None] * 300, types=["t"], skipped=[],
                 relevant={"t": np.arange(20)}, descriptions={"t": ["t"]})
    got = hybrid_rank(es, ArraySource(mentions, docs, documents), query, query,
                      FusionConfig(weight=0.5, feedback_docs=0))[0]
    best = mention_document_scores(query, mentions, docs, 300)[0]
    soft = mention_document_scores(query, mentions, docs, 300, temperature=MENTION_TEMPERATURE)[0]
    dense = (query @ documents.T)[0]
    ranked = np.isfinite(got)
    top = set(np.argsort(-best)[:100]) | set(np.argsort(-dense)[:100])
    assert set(np.flatnonzero(ranked)) == top
    full = fuse(soft.astype(np.float64), dense, score_stats(soft), score_stats(dense), 0.5)
    np.testing.assert_allclose(got[ranked], full[ranked], rtol=1e-6)


def test_best_rows_and_feedback_query():
    scores = np.array([0.1, 0.9, 0.3, 0.5, 0.5, -1.0])
    doc_index = np.array([0, 0, 0, 2, 2, 5])
    assert best_rows(scores, doc_index).tolist() == [1, 3, 5]  # ties: the first row
    assert best_rows(scores[:0], doc_index[:0]).tolist() == []
    q = np.array([2.0, 0.0, 0.0], np.float32)
    np.testing.assert_allclose(feedback_query(q, np.zeros((0, 3))), q)  # nothing to learn from
    np.testing.assert_allclose(feedback_query(q, np.eye(3)[1:2], 0.0), [1, 0, 0])
    moved = feedback_query(q, np.array([[0, 3.0, 0], [0, 0, 1.0]]), 1.0)  # q/|q| + mean(units)
    np.testing.assert_allclose(moved, np.array([1, 0.5, 0.5]) / np.sqrt(1.5), rtol=1e-6)


def _planted(rng, n_docs=400, relevant=40, dim=16):
    """Each document has two random mentions; a relevant one's first mention leans toward
    direction ``u``, and so does its document vector. The query points partly elsewhere."""
    u, off = np.eye(dim)[0], np.eye(dim)[1]
    mentions = rng.normal(size=(n_docs, 2, dim)) * 0.5
    mentions[:relevant, 0] += 2.0 * u
    mentions = mentions.reshape(-1, dim).astype(np.float32)
    mentions /= np.linalg.norm(mentions, axis=1, keepdims=True)
    documents = rng.normal(size=(n_docs, dim)).astype(np.float32)
    documents[:relevant] += u
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    query = (0.8 * u + off).astype(np.float32)[None]
    return mentions, np.repeat(np.arange(n_docs), 2), documents, query / np.linalg.norm(query)


def test_hybrid_rank_feedback_pulls_an_off_centre_query_to_its_mentions():
    mentions, docs, documents, query = _planted(np.random.default_rng(2))
    es = EvalSet("toy", docs=[None] * 400, types=["t"], skipped=[],
                 relevant={"t": np.arange(40)}, descriptions={"t": ["t"]})
    sides = ArraySource(mentions, docs, documents)
    once = hybrid_rank(es, sides, query, query, FusionConfig(feedback_docs=0))
    with_names = ArraySource(mentions, docs, documents, mentions, docs)  # names: same vectors
    assert not np.array_equal(hybrid_rank(es, with_names, query, query,
                                          FusionConfig(feedback_docs=0)), once)
    before = r_precision(once[0], es.relevant["t"])
    after = r_precision(hybrid_rank(es, sides, query, query, FusionConfig(feedback_docs=10))[0],
                        es.relevant["t"])
    assert after >= before + 0.15, (before, after)  # 0.575 -> 0.8
    with pytest.raises(ConfigError, match="feedback"):
        FusionConfig(feedback_docs=-1)


def test_sample_indices_is_seeded_and_in_file_order():
    a = sample_indices(100, 10, seed=0)
    assert a == sorted(a) and len(set(a)) == 10 and a == sample_indices(100, 10, seed=0)
    assert a != sample_indices(100, 10, seed=1)
    assert sample_indices(5, 10, seed=0) == [0, 1, 2, 3, 4]


# -- data and descriptions -------------------------------------------------------------------
def test_eval_set_types_relevance_and_skipped(conll):
    es = load_eval_set([conll])
    assert len(es.docs) == 9
    assert es.types == ["art-music", "location-GPE", "person-politician"]
    assert es.skipped == ["location-other"]
    assert es.relevant["person-politician"].tolist() == [0, 1, 3]
    assert es.relevant["art-music"].tolist() == [5]
    assert es.descriptions["location-GPE"] == ["geopolitical entity"]
    assert "location-other" in load_eval_set([conll], include_other=True).types
    # A sample that loses every music sentence no longer evaluates music (zero relevant).
    small = load_eval_set([conll], sample=4, seed=3)
    assert all(len(small.relevant[t]) >= 1 for t in small.types)
    assert set(small.types) <= set(es.types)
    with pytest.raises(ConfigError):
        load_eval_set([conll], types=["person-athlete"])


def test_eval_set_can_leave_out_sentences(conll):
    """Sentences a learned detector trained on stay out of a validation set (and its cache)."""
    es = load_eval_set([conll])
    gone = {es.docs[0].text, es.docs[5].text}
    rest = load_eval_set([conll], exclude_texts=gone)
    assert [d.text for d in rest.docs] == [d.text for d in es.docs if d.text not in gone]
    assert "art-music" not in rest.types  # its only sentence left
    assert rest.identity != es.identity and "excluded" not in es.identity
    with pytest.raises(CorpusError):
        load_eval_set([conll], exclude_texts={d.text for d in es.docs})


@pytest.mark.parametrize("tag, expected", [
    ("person-politician", "politician"),
    ("person_politician", "politician"),
    ("location_GPE", "geopolitical entity"),
    ("location-GPE", "geopolitical entity"),
    ("CreativeWork", "creative work"),
    ("creative-work", "creative work"),
    ("OtherPER", "person"),
    ("HumanSettlement", "human settlement"),
    ("MusicalGRP", "musical group"),
    ("Medication/Vaccine", "medication or vaccine"),
    ("location_road/railway/highway/transit", "road, railway, highway or transit"),
    ("organization-government/governmentagency", "government or governmentagency"),
    ("location-other", "location"),
    ("ORG", "organization"),
    ("PER", "person"),
])
def test_describe_tag(tag, expected):
    assert describe_tag(tag) == expected


def test_other_like_tags():
    for tag in ("O", "location-other", "art_other", "MISC", "OtherPER", "OtherPROD", "other"):
        assert is_other_tag(tag), tag
    for tag in ("person-politician", "location_GPE", "Organization", "creative-work", "Other"):
        assert is_other_tag(tag) == (tag == "Other"), tag


def test_shipped_maps_and_lenient_lookup(tmp_path):
    for name in SHIPPED_MAPS:
        assert load_descriptions(name).mapping
    fewnerd = load_descriptions("fewnerd")
    assert fewnerd("location_GPE") == fewnerd("location-GPE") == "geopolitical entity"
    assert fewnerd("location_bodiesofwater") == "bodies of water"
    assert fewnerd("organization_government/governmentagency") == \
        "government or government agency"
    assert fewnerd.covers("person_athlete") and not fewnerd.covers("Spaceship")
    assert fewnerd("Spaceship") == "spaceship"  # falls back to the derived description
    multi = load_descriptions("multiconer2")
    assert multi("HumanSettlement") == "human settlement" and multi("humansettlement")
    assert multi("OtherPER") == "person" and multi("MusicalGRP") == "musical group"
    assert load_descriptions("wnut17")("creative-work") == "creative work"
    own = tmp_path / "map.json"
    own.write_text(json.dumps({"_comment": "x", "politician": ["politician", "statesman"]}))
    mine = load_descriptions(own)
    assert mine.get_all("person-politician") == ["politician", "statesman"]
    assert mine("person-politician") == "politician"
    own.write_text("{not json")
    with pytest.raises(ConfigError):
        load_descriptions(own)
    own.write_text(json.dumps({"politician": 3}))
    with pytest.raises(ConfigError):
        load_descriptions(own)
    with pytest.raises(ConfigError):
        load_descriptions(tmp_path / "missing.json")
    assert Descriptions()("person-actor") == "actor"


# -- baselines -------------------------------------------------------------------------------
DOCS = ["The river Thames flows through London.",
        "Angela Merkel is a German politician.",
        "He ate pasta for dinner.",
        "The Amazon is the largest river by discharge."]


def test_bm25_ranks_term_matches_first():
    from ner_retriever.evaluation.baselines import bm25_scores

    scores = bm25_scores(DOCS, ["river", "politician", "zebra", "the"])
    assert scores.shape == (4, 4)
    assert set(np.argsort(-scores[0])[:2].tolist()) == {0, 3}
    assert np.argmax(scores[1]) == 1
    assert not scores[2].any() and not scores[3].any()  # unknown word, stopword


@pytest.mark.slow
def test_dense_minilm_ranks_by_meaning():
    from ner_retriever.models.dense import DenseEncoder

    dense = DenseEncoder()
    vectors = dense.encode(DOCS)
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    queries = dense.encode(["body of water", "political leader", "food"])
    sims = queries @ vectors.T
    assert set(np.argsort(-sims[0])[:2].tolist()) == {0, 3}
    assert np.argmax(sims[1]) == 1 and np.argmax(sims[2]) == 2
    # Batching and padding do not change a document's vector.
    np.testing.assert_allclose(dense.encode([DOCS[2]])[0], vectors[2], atol=1e-5)


# -- whole evaluation and the CLI ------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_all_methods_and_cache(conll, cache, tiny_model_dir):
    es = load_eval_set([conll])
    opts = EvalOptions(model=str(tiny_model_dir), block=1, component="value")
    report = evaluate(es, opts)
    assert list(report["results"]) == ["ner-retriever", "bm25", "dense", "hybrid"]
    for result in report["results"].values():
        assert set(result["per_type"]) == set(es.types)
        assert 0.0 <= result["r_precision"] <= 1.0
        assert result["r_precision"] == pytest.approx(np.mean(list(result["per_type"].values())))
    cached = list((cache / "eval").rglob("*.npy"))
    assert {p.name for p in cached} == {"1-value.npy", "documents.npy", "names.npy"}
    assert report["settings"]["name_weight"] == 0.2
    again = evaluate(es, opts)  # served from the cache: identical numbers
    assert again["results"] == report["results"]
    # The cache follows the file's content: a copy elsewhere with a new time stamp hits it,
    # an edited copy does not.
    copy = conll.parent / "elsewhere" / conll.name
    copy.parent.mkdir()
    copy.write_bytes(conll.read_bytes())
    assert load_eval_set([copy]).identity == es.identity
    copy.write_bytes(conll.read_bytes().replace(b"Paris", b"Lyons"))
    assert load_eval_set([copy]).identity != es.identity
    w1 = evaluate(es, EvalOptions(model=str(tiny_model_dir), block=1, hybrid_weight=1.0,
                                  names=False, feedback=0, methods=["ner-retriever", "hybrid"]))
    assert w1["settings"]["name_weight"] is None
    assert w1["results"]["hybrid"]["r_precision"] == pytest.approx(
        w1["results"]["ner-retriever"]["r_precision"])
    with pytest.raises(ConfigError):
        evaluate(es, EvalOptions(methods=["bm25", "tfidf"]))


@pytest.mark.slow
def test_cli_json_contract(conll, cache, tiny_model_dir):
    from ner_retriever.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(conll), "--model", str(tiny_model_dir),
                                 "--layer", "2", "--component", "key", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert isinstance(report["dataset"], str) and report["dataset"] == "tiny.bio"
    assert report["documents"] == 9 and report["types"] == 3 and report["mentions"] == "gold"
    assert set(report["results"]) == {"ner-retriever", "bm25", "dense", "hybrid"}
    for res in report["results"].values():
        assert set(res) == {"r_precision", "per_type"}
        assert isinstance(res["r_precision"], float)
        assert set(res["per_type"]) == {"art-music", "location-GPE", "person-politician"}
    assert report["skipped_types"] == ["location-other"]
    assert report["settings"]["block"] == 2 and report["settings"]["component"] == "key"
    assert report["settings"]["feedback_docs"] == 20 and report["settings"]["feedback_weight"] == 1
    once = runner.invoke(app, ["evaluate", str(conll), "--model", str(tiny_model_dir),
                               "--layer", "2", "--component", "key", "--methods", "hybrid",
                               "--feedback", "0", "--json"])
    assert json.loads(once.stdout)["settings"]["feedback_docs"] == 0, once.output

    table = runner.invoke(app, ["evaluate", str(conll), "--model", str(tiny_model_dir),
                                "--methods", "bm25,dense", "--sample", "6", "--seed", "1"])
    assert table.exit_code == 0, table.output
    assert "macro" in table.stdout and "R-Precision" in table.stdout
    assert "ner-retriever" not in table.stdout

    bad = runner.invoke(app, ["evaluate", str(conll), "--methods", "nope"])
    assert bad.exit_code == 1 and "unknown method" in bad.output
    bad = runner.invoke(app, ["evaluate", str(conll), "--methods", "bm25",
                              "--query-template", "{} and {}"])
    assert bad.exit_code == 1 and "once" in bad.output
    missing = runner.invoke(app, ["evaluate", str(conll.parent / "none.bio")])
    assert missing.exit_code == 1 and "no such file" in missing.output


@pytest.mark.slow
def test_cli_detected_mentions_report_recall(conll, cache, tiny_model_dir):
    from ner_retriever.cli.main import app

    result = CliRunner().invoke(app, ["evaluate", str(conll), "--model", str(tiny_model_dir),
                                      "--mentions", "detected", "--methods", "ner-retriever",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mentions"] == "detected"
    recall = report["detection_recall"]
    assert 0.0 < recall["exact"] <= recall["overlap"] <= 1.0 and recall["gold"] == 9
    assert not math.isnan(report["results"]["ner-retriever"]["r_precision"])


def test_vector_cache_refuses_vectors_of_other_spans(tmp_path):
    from ner_retriever.io.cache import VectorCache

    a = VectorCache(tmp_path, {"data": 1}, check="spans-a")
    a.save("22-value", np.ones((3, 2), np.float32))
    assert a.load("22-value", 3) is not None
    assert a.load("22-value", 4) is None  # row count must match too
    b = VectorCache(tmp_path, {"data": 1}, check="spans-b")
    assert b.folder == a.folder and b.load("22-value", 3) is None
    b.save("10-key", np.zeros((3, 2), np.float32))  # drops the stale 22-value
    assert a.load("22-value", 3) is None and b.load("10-key", 3) is not None
    assert VectorCache(None, {"data": 1}).load("x", 1) is None


@pytest.mark.slow
def test_detected_spans_carry_confidences_through_the_cache(conll, tmp_path, smol_encoder):
    from ner_retriever.evaluation.vectors import detect_spans

    es = load_eval_set([conll])
    spans, conf, report = detect_spans(es, "learned+spacy", tmp_path)
    assert [len(s) for s in spans] == [len(c) for c in conf] and report["detected"] > 0
    assert all(0 < c <= 1 for doc in conf for c in doc)
    again = detect_spans(es, "learned+spacy", tmp_path)  # read back from the JSON cache
    assert again[0] == spans and again[1] == conf
    _, none, _ = detect_spans(es, "spacy", tmp_path)
    assert all(c is None for doc in none for c in doc)
