"""Exhaustive mode, several types and the entity inventory on hand-made vectors (no model):
``rank_all`` returns exactly the documents a full ranking scores past the cut-off, on an
on-disk index and on arrays alike; mention-level fused scores; the minimum combination."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.config import FusionConfig
from ner_retriever.retrieve.combine import all_types, rank_types
from ner_retriever.retrieve.fusion import Candidates, Queries, hybrid_rank, rank_all
from ner_retriever.retrieve.inventory import inventory, normalise_name
from ner_retriever.retrieve.sources import ArraySource, IndexSource
from tests.retrieve.test_fusion import DENSE, DIM, build_index, corpus, unit


def random_queries(rng) -> Queries:
    return Queries(unit(rng.normal(size=DIM)), unit(rng.normal(size=DENSE)),
                   unit(rng.normal(size=DENSE)))


def sources(tmp_path, n_docs=300):
    rng = np.random.default_rng(1)
    counts, mentions, docs, documents, names = corpus(rng, n_docs)
    names16 = names.astype(np.float16).astype(np.float32)
    index = build_index(tmp_path / "idx", counts, mentions, documents, names)
    return index, ArraySource(mentions, docs, documents, names16, docs), random_queries(rng)


@pytest.mark.parametrize("threshold", [-0.5, 0.5, 1.5, 9.0])
def test_rank_all_is_the_full_ranking_cut_at_the_threshold(tmp_path, threshold):
    index, arrays, q = sources(tmp_path)
    cfg = FusionConfig(feedback_docs=5)
    with index:
        full = hybrid_rank(arrays, q, arrays.n_docs, cfg)  # every document a candidate
        want = {f"d{k}" for k in full.keys[full.fused >= threshold].tolist()}
        for source in (arrays, IndexSource(index)):
            got = rank_all(source, q, cfg, threshold)
            ids = ({k: f"d{k}" for k in got.keys.tolist()} if source is arrays else
                   {k: d.id for k, d in index.documents_by_key(got.keys.tolist()).items()})
            assert set(ids.values()) == want
            assert (got.fused >= threshold).all()
            np.testing.assert_allclose(np.sort(got.fused), np.sort(full.fused[full.fused >=
                                                                              threshold]),
                                       atol=1e-4)


def test_a_mention_scores_like_its_document_when_it_is_the_only_one(tmp_path):
    index, arrays, q = sources(tmp_path, 80)
    index.close()
    ranked = hybrid_rank(arrays, q, arrays.n_docs, FusionConfig(feedback_docs=0))
    per_doc = np.bincount(ranked.doc_index, minlength=len(ranked.keys))
    for i, n in enumerate(per_doc):
        own = ranked.row_fused[ranked.doc_index == i]
        if n == 1:
            assert own[0] == pytest.approx(ranked.fused[i], abs=1e-6)
        assert (own <= ranked.fused[i] + 1e-6).all()  # the soft maximum is at least the max


def test_select_keeps_each_documents_mentions(tmp_path):
    index, arrays, q = sources(tmp_path, 80)
    index.close()
    ranked = hybrid_rank(arrays, q, arrays.n_docs, FusionConfig(feedback_docs=0))
    keep = ranked.fused > np.median(ranked.fused)
    kept = ranked.select(keep)
    assert kept.keys.tolist() == ranked.keys[keep].tolist()
    for i, key in enumerate(kept.keys):
        j = int(np.flatnonzero(ranked.keys == key)[0])
        assert kept.hits(i, 5) == ranked.hits(j, 5)


def made(keys, fused, rows_per_doc, sims=None, row_fused=None) -> Candidates:
    doc_index = np.repeat(np.arange(len(keys)), rows_per_doc)
    rows = np.arange(len(doc_index)) + 100 * keys[doc_index] if len(keys) else doc_index
    sims = np.linspace(1, 0, len(rows)) if sims is None else np.asarray(sims, float)
    return Candidates(np.asarray(keys), np.asarray(fused, float), rows, doc_index, sims,
                      sims if row_fused is None else np.asarray(row_fused, float))


def test_several_types_keep_documents_of_every_type_by_their_weakest_score():
    person = made(np.array([1, 2, 3, 5]), [3.0, 2.0, 5.0, 4.0], [1, 1, 1, 1])
    city = made(np.array([2, 3, 4, 5]), [6.0, 2.5, 9.0, 1.0], [1, 1, 1, 2])
    got = all_types([person, city], None, per_doc=1)
    assert [(g.doc_key, g.score) for g in got] == [(3, 2.5), (2, 2.0), (5, 1.0)]
    assert got[0].queries == [0, 1] and len(got[0].hits) == 2
    assert [g.doc_key for g in all_types([person, city], 2, 1)] == [3, 2]
    assert all_types([person, made(np.array([9]), [1.0], [1])], None, 1) == []


def test_the_inventory_groups_normalised_names_past_the_cut_off():
    ranked = made(np.array([0, 1, 2]), [3.0, 2.5, 2.2], [2, 2, 1],
                  row_fused=[3.0, 0.5, 2.4, 2.5, 2.2])
    texts = dict(zip(ranked.rows.tolist(), ["Danube", "Vienna", " DANUBE", "Rhine",
                                            "Danube"]))
    ids = {0: "a", 1: "b", 2: "c"}
    got = inventory(ranked, texts, 2.0, 10, lambda keys: {k: ids[k] for k in keys})
    assert [(e.text, e.documents, e.mentions, e.score, e.examples) for e in got] == [
        ("Danube", 3, 3, 3.0, ["a", "b", "c"]), ("Rhine", 1, 1, 2.5, ["b"])]
    assert [e.text for e in inventory(ranked, texts, 2.0, 1, lambda k: ids)] == ["Danube"]
    assert normalise_name("Río\tGrande ") == "río grande"


def test_later_types_ranked_among_the_passing_documents_give_the_same_answer(tmp_path):
    index, arrays, q = sources(tmp_path)
    rng = np.random.default_rng(7)
    other = random_queries(rng)
    cfg = FusionConfig(feedback_docs=5)
    with index:
        for source in (arrays, IndexSource(index)):
            each = [rank_all(source, x, cfg, 0.3) for x in (q, other)]
            chained = rank_types(source, [q, other], cfg, 0.3)
            want = [(g.doc_key, round(g.score, 6)) for g in all_types(each, None, 2)]
            assert want and [(g.doc_key, round(g.score, 6))
                             for g in all_types(chained, None, 2)] == want


@pytest.mark.parametrize("k", [1, 5, 20])
def test_a_top_k_of_several_types_is_the_exhaustive_answers_top_k(tmp_path, k):
    from ner_retriever.retrieve.combine import top_types
    index, arrays, q = sources(tmp_path)
    rng = np.random.default_rng(7)
    cfg = FusionConfig(feedback_docs=5)
    with index:
        for trial in range(6):
            types = [q] + [random_queries(rng) for _ in range(1 + trial % 2)]
            for threshold in (-1.0, 0.0, 0.8):
                for source in (arrays, IndexSource(index)):
                    ranked = rank_types(source, types, cfg, threshold)
                    want = all_types(ranked, k, 2) if len(ranked) == len(types) else []
                    got = top_types(source, types, cfg, threshold, k, 2) or []
                    assert [(h.doc_key, h.hits, h.queries) for h in got] == \
                        [(h.doc_key, h.hits, h.queries) for h in want]
                    np.testing.assert_allclose([h.score for h in got],
                                               [h.score for h in want], atol=1e-9)


def test_the_calibration_sample_counts_the_passing_documents(tmp_path):
    """Where exhaustive rankings start (``passing_estimate``): exact when the sample is the
    whole corpus, the sample's count scaled to the corpus otherwise."""
    from ner_retriever.retrieve.fusion import fused_candidates, passing_estimate, start_size
    index, arrays, q = sources(tmp_path)
    cfg = FusionConfig(feedback_docs=0)
    with index:
        for source in (arrays, IndexSource(index)):
            every = fused_candidates(source, q, 300, cfg)  # 300 documents: all candidates
            assert len(every.keys) == 300
            for threshold in (-0.5, 0.5, 1.5):
                passing = int((every.fused >= threshold).sum())
                assert passing_estimate(source, q, cfg, threshold) == passing
                assert start_size(passing_estimate(source, q, cfg, threshold)) >= passing
            third = FusionConfig(feedback_docs=0, calibration_docs=100)
            assert passing_estimate(source, q, third, 0.5) % 3 == 0  # 100 of 300 documents
