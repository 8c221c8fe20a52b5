"""Filters inside the ranking (``allowed`` document keys), on hand-made vectors: the index and
the arrays agree, a filtered top k holds the best allowed documents (k of them whenever k are
allowed), the calibration (hence every fused score) does not depend on the filter, and the
mention-only ranking gives the same answer through its exact and its over-fetching path."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.config import FusionConfig
from ner_retriever.errors import ConfigError
from ner_retriever.retrieve.fusion import Queries, hybrid_rank
from ner_retriever.retrieve.sources import ArraySource, IndexSource

from tests.retrieve.test_fusion import DENSE, DIM, build_index, corpus, unit

N_DOCS = 80


def random_queries(rng) -> Queries:
    return Queries(unit(rng.normal(size=DIM)), *[unit(rng.normal(size=DENSE))] * 2)


@pytest.fixture()
def sides(tmp_path):
    rng = np.random.default_rng(7)
    counts, mentions, docs, documents, names = corpus(rng, N_DOCS)
    names16 = names.astype(np.float16).astype(np.float32)
    index = build_index(tmp_path / "idx", counts, mentions, documents, names)
    yield index, ArraySource(mentions, docs, documents, names16, docs), counts
    index.close()


@pytest.mark.parametrize("feedback", [0, 5])
@pytest.mark.parametrize("share", [0.05, 0.3, 1.0])
def test_filtered_ranking_is_the_best_allowed_documents_on_both_sources(sides, feedback, share):
    index, arrays, _ = sides
    rng = np.random.default_rng(int(share * 100) + feedback)
    keys = index.doc_vectors[0]  # disk key of document i
    allowed = np.sort(rng.choice(N_DOCS, max(1, int(share * N_DOCS)), replace=False))
    cfg = FusionConfig(feedback_docs=feedback)
    for _ in range(4):
        q = random_queries(rng)
        k = min(10, len(allowed))
        got = hybrid_rank(arrays, q, k, cfg, allowed)
        on_disk = hybrid_rank(IndexSource(index), q, k, cfg, keys[allowed])
        assert keys[got.keys].tolist() == on_disk.keys.tolist()
        np.testing.assert_allclose(got.fused, on_disk.fused, atol=1e-5)
        top = got.keys[got.order(k)]
        assert len(top) == k and set(top) <= set(allowed.tolist())
        if feedback == 0:  # one pass: the fused score of a document ignores the filter
            everything = hybrid_rank(arrays, q, N_DOCS, cfg)
            best_allowed = [d for d in everything.keys[everything.order(N_DOCS)] if d in allowed]
            assert top.tolist() == best_allowed[:k]
            by_key = dict(zip(everything.keys.tolist(), everything.fused))
            np.testing.assert_allclose(got.fused, [by_key[d] for d in got.keys], atol=1e-6)


def test_no_allowed_document_gives_no_result_and_bad_filters_are_refused(sides):
    index, arrays, _ = sides
    q = random_queries(np.random.default_rng(3))
    for source in (arrays, IndexSource(index)):
        assert hybrid_rank(source, q, 5, FusionConfig(), np.zeros(0, np.int64)).top(5, 1) == []
        with pytest.raises(ConfigError, match="sorted"):
            hybrid_rank(source, q, 5, FusionConfig(), np.array([3, 1]))
        with pytest.raises(ConfigError, match="integer keys"):
            hybrid_rank(source, q, 5, FusionConfig(), np.array([0.5]))


def test_mention_ranking_exact_and_overfetching_paths_agree(sides):
    """A small filter is scored exactly, a large one by widening a filtered neighbour search:
    both return the allowed documents with the best mention, best first."""
    index, arrays, counts = sides
    rng = np.random.default_rng(11)
    keys = index.doc_vectors[0]
    exact, widening = IndexSource(index), IndexSource(index, exact_filter_docs=0)
    for size in (3, 12, 40):
        allowed = keys[np.sort(rng.choice(N_DOCS, size, replace=False))]
        with_mentions = int(sum(counts[np.searchsorted(keys, allowed)] > 0))
        q = unit(rng.normal(size=DIM))
        a = exact.mention_ranking(q, 10, 2, allowed)
        b = widening.mention_ranking(q, 10, 2, allowed)
        assert [d.doc_key for d in a] == [d.doc_key for d in b]
        assert len(a) == min(10, with_mentions)
        assert {d.doc_key for d in a} <= set(allowed.tolist())
        # the best mention of each; a widened search may not have fetched a second one
        np.testing.assert_allclose([d.score for d in a], [d.score for d in b], atol=1e-5)
        assert [d.hits[0][0] for d in a] == [d.hits[0][0] for d in b]
        best = arrays.mention_top(q, 10, np.searchsorted(keys, allowed))
        assert sorted(keys[best].tolist()) == sorted(d.doc_key for d in a)
