"""RequestSource (retrieve/memo.py) remembers one request's reads without changing a ranking:
the same arrays, in the same order, as the source it wraps, on an index and on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.config import FusionConfig
from ner_retriever.retrieve.combine import rank_types
from ner_retriever.retrieve.fusion import hybrid_rank, rank_all
from ner_retriever.retrieve.memo import RequestSource
from ner_retriever.retrieve.sources import IndexSource
from tests.retrieve.test_exhaustive import random_queries, sources


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_reads_come_back_in_the_wrapped_sources_order(tmp_path):
    index, arrays, _ = sources(tmp_path, 120)
    rng = np.random.default_rng(3)
    with index:
        for source in (arrays, IndexSource(index)):
            memo = RequestSource(source)
            for _ in range(6):  # overlapping, unsorted key lists, some read before
                keys = rng.choice(120, size=int(rng.integers(1, 40)), replace=False)
                same(memo.mentions(keys), source.mentions(keys))
                same(memo.names(keys), source.names(keys))
            same(memo.mentions(np.zeros(0, np.int64)), source.mentions(np.zeros(0, np.int64)))


@pytest.mark.parametrize("threshold", [-0.5, 1.0])
def test_rankings_are_bit_identical(tmp_path, threshold):
    index, arrays, q = sources(tmp_path)
    rng = np.random.default_rng(4)
    other = random_queries(rng)
    cfg = FusionConfig(feedback_docs=5)
    with index:
        for source in (arrays, IndexSource(index)):
            for run in (lambda s: [hybrid_rank(s, q, 10, cfg)],
                        lambda s: [rank_all(s, q, cfg, threshold)],
                        lambda s: rank_types(s, [q, other], cfg, threshold)):
                for want, got in zip(run(source), run(RequestSource(source))):
                    for field in ("keys", "fused", "rows", "doc_index", "sims", "row_fused"):
                        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_a_source_without_names_stays_without(tmp_path):
    index, arrays, _ = sources(tmp_path, 40)
    index.close()
    bare = type(arrays)(arrays.mention_vectors, arrays.mention_docs, arrays.documents)
    memo = RequestSource(bare)
    assert memo.names(np.arange(5)) is None and memo.names(np.arange(3)) is None
