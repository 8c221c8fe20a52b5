"""Delete and compact on hand-made indexes with known answers, for every FAISS index type:
the answer is a brute-force ranking over the documents still live; a deleted document is
never returned (search, hybrid ranking, reads, reopen), re-adding its id works, and a
compaction changes no result while it shrinks the folder."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever import Document
from ner_retriever.config import FusionConfig
from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.indexes.base import store_settings
from ner_retriever.indexes.deletion import delete_documents, folder_bytes
from ner_retriever.indexes.index import Index, IndexConfig
from ner_retriever.retrieve.fusion import Queries, hybrid_rank
from ner_retriever.retrieve.pooling import top_documents
from ner_retriever.retrieve.sources import IndexSource
from ner_retriever.types import Mention

DIM = 16
PER_DOC = 8
# IVF trains past train_min rows: 300 documents x 8 mentions = 2400 rows, and the 1200 left
# after a compaction, are trained (on a seeded sample of the rows: the same rows, the same).
SMALL_IVF = {"train_min": 1000, "train_size": 1200, "nlist": 16, "nprobe": 16}
TYPES = {"flat": store_settings(),
         "hnsw": store_settings(index_type="hnsw", storage="fp32"),
         "ivfpq": store_settings(index_type="ivfpq", storage="fp16", params=SMALL_IVF)}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n_docs: int = 300, seed: int = 0, prefix: str = "d"):
    """Documents ``d0..``: 8 random unit mention vectors each, and a dense vector each."""
    rng = np.random.default_rng(seed)
    docs = [Document(f"{prefix}{i}", f"Document {i} names Paris.") for i in range(n_docs)]
    mentions = [[Mention(d.id, 19, 24, "Paris")] * PER_DOC for d in docs]
    vectors = [_unit(rng.standard_normal((PER_DOC, DIM))) for _ in docs]
    dense = _unit(rng.standard_normal((n_docs, DIM)))
    return docs, mentions, vectors, dense


def config(hybrid: bool = False, **store) -> IndexConfig:
    side = {"model": "synthetic", "max_length": 8, "dim": DIM}
    return IndexConfig(encoder={"model": "synthetic"}, raw_dim=DIM, dim=DIM, head=None,
                       detector={"name": "gold"}, dense=side if hybrid else None,
                       names={"model": "synthetic", "dim": DIM} if hybrid else None, **store)


def build(path, settings, n_docs: int = 300, hybrid: bool = False, batch: int = 100) -> Index:
    index = Index.create(path, config(hybrid, **settings))
    docs, mentions, vectors, dense = corpus(n_docs)
    for a in range(0, n_docs, batch):
        index.add(docs[a:a + batch], mentions[a:a + batch], vectors[a:a + batch],
                  doc_vectors=dense[a:a + batch] if hybrid else None,
                  name_vectors=vectors[a:a + batch] if hybrid else None)
    return index


def ranked(index: Index, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The mention ranking (documents by best mention), as (id, score)."""
    grouped = top_documents(lambda n: tuple(a[0] for a in index.search(query[None], n)),
                            index.row_doc_keys, k, index.ntotal)
    docs = index.documents_by_key([g.doc_key for g in grouped])
    return [(docs[g.doc_key].id, g.score) for g in grouped]


def ranked_ids(index: Index, query: np.ndarray, k: int) -> list[str]:
    return [doc_id for doc_id, _ in ranked(index, query, k)]


def brute_force(live: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    """The known answer: documents by their best mention's inner product (ties: id order)."""
    best = {doc_id: float((v @ query).max()) for doc_id, v in live.items()}
    return sorted(best, key=lambda d: (-best[d], int(d[1:])))[:k]


def queries(vectors, picks) -> np.ndarray:
    """Each query is a stored mention vector: its document is the known rank 1."""
    return np.stack([vectors[i][3] for i in picks])


@pytest.mark.parametrize("index_type", list(TYPES))
def test_deleted_documents_are_never_returned_and_their_ids_can_come_back(tmp_path,
                                                                          index_type):
    path = tmp_path / "idx"
    index = build(path, TYPES[index_type])
    docs, mentions, vectors, _ = corpus()
    gone = [f"d{i}" for i in range(0, 300, 3)]  # every third document
    q = queries(vectors, range(0, 60, 2))  # half of them the rank 1 of a deleted document
    assert all(ranked_ids(index, v, 1) == [f"d{i}"] for v, i in zip(q, range(0, 60, 2)))
    stats = delete_documents(index, gone + ["nope", gone[0]])
    assert (stats.deleted, stats.missing) == (100, ["nope"])
    live = {d.id: v for d, v in zip(docs, vectors) if d.id not in set(gone)}

    def check(ix: Index) -> None:
        assert len(ix) == 200 and ix.num_mentions() == 200 * PER_DOC
        for v in q:
            got = ranked_ids(ix, v, 10)
            assert not set(got) & set(gone)
            if index_type == "flat":
                assert got == brute_force(live, v, 10)
            else:  # approximate: the known rank 1 at least
                assert got[0] == brute_force(live, v, 1)[0]
        assert ix.get_document("d0") is None and ix.mentions_of("d0") == []
        assert ix.existing_ids(gone) == set()

    check(index)
    index.close()
    with Index.open(path) as reader:
        check(reader)
    with Index.open(path, writable=True) as writer:
        assert writer.delete(["d0"]) == 0  # already gone: nothing, no error
        writer.add(docs[:1], mentions[:1], vectors[:1])  # the id comes back, new vectors found
        assert ranked_ids(writer, q[0], 1) == ["d0"]
        assert [m.text for m in writer.mentions_of("d0")] == ["Paris"] * PER_DOC


@pytest.mark.parametrize("index_type", list(TYPES))
def test_compaction_changes_no_result_and_reclaims_space(tmp_path, index_type):
    index = build(tmp_path / "idx", TYPES[index_type])
    docs, mentions, vectors, _ = corpus()
    index.delete([f"d{i}" for i in range(300) if i % 2])
    q = queries(vectors, range(0, 40, 2))
    before = [ranked(index, v, 10) for v in q]
    size = folder_bytes(index.path)
    stats = index.compact()
    assert (stats.rows_before, stats.rows_after, stats.documents) == (2400, 1200, 150)
    assert stats.bytes_before == size > stats.bytes_after == folder_bytes(index.path)
    assert index.ntotal == 1200 and [s.rows for s in index.segments()] == [1200]
    assert sorted(p.name for p in (index.path / "vectors").glob("seg-*")) == \
        [index.segments()[0].name]  # the old segments are gone
    if index_type == "ivfpq":  # retrained on the live rows: the same as building them afresh
        live = [i for i in range(300) if i % 2 == 0]
        fresh = Index.create(tmp_path / "fresh", config(**TYPES[index_type]))
        fresh.add([docs[i] for i in live], [mentions[i] for i in live],
                  [vectors[i] for i in live])
        before = [ranked(fresh, v, 10) for v in q]
        assert fresh.store.trained and index.store.trained
        fresh.close()
    assert [ranked(index, v, 10) for v in q] == before
    index.add(docs[1:2], mentions[1:2], vectors[1:2])  # rows continue after the compaction
    assert index.segments()[-1].first_row == 1200
    index.close()
    with Index.open(tmp_path / "idx") as reader:
        assert ranked_ids(reader, vectors[1][0], 1) == ["d1"]
        assert [ranked(reader, v, 10) for v in q] == before


def test_hybrid_ranking_names_and_calibration_forget_deleted_documents(tmp_path):
    index = build(tmp_path / "idx", TYPES["flat"], n_docs=120, hybrid=True)
    _, _, vectors, dense = corpus(120)
    key = {f"d{i}": int(index._keys_of([f"d{i}"])[0]) for i in range(120)}
    gone = [f"d{i}" for i in range(0, 120, 4)]
    cfg = FusionConfig(calibration_docs=500)  # every document in the sample

    def hybrid(ix: Index, i: int) -> list[str]:
        ranked = hybrid_rank(IndexSource(ix), Queries(vectors[i][0], dense[i], dense[i]), 10,
                             cfg)
        top = ranked.top(10, 1)
        docs = ix.documents_by_key([g.doc_key for g in top])
        return [docs[g.doc_key].id for g in top]

    assert hybrid(index, 0)[0] == "d0"
    index.delete(gone)
    source = IndexSource(index)
    sample = source.calibration(cfg.calibration_docs)
    assert not set(sample.keys.tolist()) & {key[g] for g in gone}
    assert len(sample.keys) == 90
    _, names = index.document_names([key["d0"], key["d1"]])
    assert len(names) == PER_DOC  # d0's name vectors went with it
    results = [hybrid(index, i) for i in range(0, 40)]
    assert all(not set(r) & set(gone) and len(r) == 10 for r in results)
    assert [r[0] for r in results[1::4]] == [f"d{i}" for i in range(1, 40, 4)]
    index.compact()
    assert [hybrid(index, i) for i in range(0, 40)] == results
    index.close()
    with Index.open(tmp_path / "idx") as reader:
        assert [hybrid(reader, i) for i in range(0, 40)] == results
        assert len(reader.doc_vectors[0]) == 90


def test_update_and_delete_share_one_removal(tmp_path):
    """A replaced document's old vectors are dead exactly like a deleted one's."""
    index = build(tmp_path / "idx", TYPES["flat"], n_docs=20)
    docs, mentions, vectors, _ = corpus(20)
    index.add(docs[:1], mentions[:1], [_unit(-vectors[0])], if_exists="update")
    assert ranked_ids(index, vectors[0][0], 20)[0] != "d0"
    assert index.compact().rows_after == 20 * PER_DOC
    assert ranked_ids(index, -vectors[0][0], 1) == ["d0"]
    index.close()


def test_bad_input_is_a_clear_error(tmp_path):
    index = build(tmp_path / "idx", TYPES["flat"], n_docs=5)
    with pytest.raises(ConfigError, match="list of document ids"):
        index.delete("d1")
    with pytest.raises(ConfigError, match="non-empty strings"):
        index.delete(["d1", ""])
    assert len(index) == 5
    index.close()
    with Index.open(tmp_path / "idx") as reader:
        with pytest.raises(IndexStateError, match="read-only: cannot delete"):
            reader.delete(["d1"])
        with pytest.raises(IndexStateError, match="read-only: cannot compact"):
            reader.compact()


def test_name_vectors_read_again_come_verified_from_the_cache(tmp_path):
    index = build(tmp_path / "idx", TYPES["flat"], n_docs=20, hybrid=True)
    keys = [int(k) for k in index._keys_of([f"d{i}" for i in range(20)])]
    first = index.document_names(keys[:12])
    assert index.name_cache.held > 0
    again = index.document_names(keys[::-1])  # 12 cached, 8 read, another order
    fresh = Index.open(tmp_path / "idx").document_names(keys[::-1])
    for got, want in zip(again, fresh):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(first[1], index.document_names(keys[:12])[1])
    index.delete(["d0"])
    assert len(index.document_names(keys[:1])[0]) == 0  # a deleted document's names are gone
    index.close()


def test_the_name_cache_keeps_to_its_budget():
    from ner_retriever.indexes.catalog import NameCache
    cache = NameCache(budget=3 * 8)
    cache.put({k: np.zeros((2, 2), np.float16) for k in range(5)})  # 8 bytes each
    assert cache.held == 24 and set(cache.get(range(5))) == {2, 3, 4}
    cache.get([2])  # used: kept over 3 and 4
    cache.put({9: np.zeros((2, 2), np.float16)})
    assert set(cache.get(range(10))) == {2, 4, 9}
    cache.drop([2, 7])
    assert cache.held == 16
