"""The one hybrid ranking on hand-made vectors (no model): known answers, and the same result
whether it reads an on-disk index (IndexSource) or arrays in memory (ArraySource)."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.config import FusionConfig
from ner_retriever.errors import ConfigError
from ner_retriever.indexes.index import Index, IndexConfig
from ner_retriever.retrieve.fusion import Queries, hybrid_rank
from ner_retriever.retrieve.sources import ArraySource, IndexSource
from ner_retriever.types import Document, Mention

DIM, DENSE = 8, 6


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def corpus(rng, n_docs: int = 60):
    """Documents with 0-3 mentions each; mention / document / name vectors random."""
    counts = rng.integers(0, 4, n_docs)
    counts[0] = 2
    mentions = unit(rng.normal(size=(counts.sum(), DIM)))
    names = unit(rng.normal(size=(counts.sum(), DENSE)))
    documents = unit(rng.normal(size=(n_docs, DENSE)))
    return counts, mentions, np.repeat(np.arange(n_docs), counts), documents, names


def build_index(path, counts, mentions, documents, names) -> Index:
    config = IndexConfig(encoder={"model": "hand-made"}, raw_dim=DIM, dim=DIM, head=None,
                         detector={"name": "gold"}, dense={"model": "m", "max_length": 8,
                                                           "dim": DENSE},
                         names={"model": "m", "dim": DENSE})
    index = Index.create(path, config)
    docs, ments, vecs, name_vecs, row = [], [], [], [], 0
    for i, n in enumerate(counts):
        text = " ".join(f"w{j}" for j in range(max(int(n), 1)))
        docs.append(Document(f"d{i}", text))
        ments.append([Mention(f"d{i}", 3 * j, 3 * j + 2, text[3 * j:3 * j + 2]) for j in range(n)])
        vecs.append(mentions[row:row + n])
        # names are stored as float16: hand the arrays the rounded values too
        name_vecs.append(names[row:row + n].astype(np.float16).astype(np.float32))
        row += n
    index.add(docs, ments, vecs, doc_vectors=documents, name_vectors=name_vecs)
    return index


@pytest.mark.parametrize("feedback", [0, 5])
def test_index_and_arrays_rank_identically(tmp_path, feedback):
    rng = np.random.default_rng(0)
    counts, mentions, docs, documents, names = corpus(rng)
    names16 = names.astype(np.float16).astype(np.float32)
    with build_index(tmp_path / "idx", counts, mentions, documents, names) as index:
        on_disk = IndexSource(index)
        in_memory = ArraySource(mentions, docs, documents, names16, docs)
        cfg = FusionConfig(feedback_docs=feedback)
        for _ in range(5):
            q = Queries(unit(rng.normal(size=DIM)), *[unit(rng.normal(size=DENSE))] * 2)
            a = hybrid_rank(on_disk, q, 10, cfg)
            b = hybrid_rank(in_memory, q, 10, cfg)
            keys = index.doc_vectors[0]  # disk keys, in document order
            assert keys[b.keys].tolist() == a.keys.tolist()
            np.testing.assert_allclose(a.fused, b.fused, atol=1e-5)
            assert [h.doc_key for h in a.top(10, 2)] == keys[[h.doc_key for h in
                                                              b.top(10, 2)]].tolist()


def test_a_document_strong_on_every_side_ranks_first_with_its_best_mentions():
    rng = np.random.default_rng(1)
    counts, mentions, docs, documents, names = corpus(rng)
    q = Queries(mentions[1].copy(), documents[0].copy(), names[0].copy())  # all point at doc 0
    ranked = hybrid_rank(ArraySource(mentions, docs, documents, names, docs), q, 5,
                         FusionConfig(feedback_docs=0))
    best = ranked.top(5, per_doc=2)
    assert best[0].doc_key == 0
    assert [row for row, _ in best[0].hits] == [1, 0]  # its mentions, best first
    assert best[0].hits[0][1] == pytest.approx(1.0, abs=1e-6)
    assert [d.score for d in best] == sorted((d.score for d in best), reverse=True)


def test_without_names_and_on_an_empty_source():
    rng = np.random.default_rng(2)
    counts, mentions, docs, documents, _ = corpus(rng, 30)
    q = Queries(unit(rng.normal(size=DIM)), *[unit(rng.normal(size=DENSE))] * 2)
    ranked = hybrid_rank(ArraySource(mentions, docs, documents), q, 50, FusionConfig())
    assert len(ranked.keys) == 30  # fewer documents than candidates: every one is fused
    empty = ArraySource(mentions[:0], docs[:0], documents[:0])
    assert hybrid_rank(empty, q, 5, FusionConfig()).top(5, 1) == []


@pytest.mark.parametrize("bad", [{"weight": 1.5}, {"feedback_docs": -1},
                                 {"mention_temperature": 0.0}, {"calibration_docs": 0}])
def test_fusion_config_is_validated_once(bad):
    with pytest.raises(ConfigError):
        FusionConfig(**bad)
