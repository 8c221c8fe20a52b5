"""Vector stores: FAISS index types (flat/HNSW/IVF-PQ, fp16/PQ storage) and Milvus Lite, all
through the real catalog (``Index``) so row ids, commits and per-document dedupe are covered."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ner_retriever.retrieve.appending import check_append_settings
from ner_retriever import Document
from ner_retriever.errors import ConfigError
from ner_retriever.indexes.index import Index, IndexConfig
from ner_retriever.retrieve.pooling import top_documents
from ner_retriever.indexes.base import store_settings
from ner_retriever.indexes.faiss import ANN_FILE, ANN_MANIFEST
from ner_retriever.indexes.faiss_build import build_faiss_index, index_bytes, span_transform
from ner_retriever.types import Mention

DIM = 32
# Small-data settings so IVF-PQ trains on a few thousand rows (defaults target millions).
SMALL_IVF = {"train_min": 2000, "train_size": 4000, "nlist": 16, "pq_m": 16, "pq_nbits": 6,
             "nprobe": 8}
COMBOS = [("flat", "fp32"), ("flat", "fp16"), ("hnsw", "fp32"), ("hnsw", "fp16"),
          ("ivfpq", "pq"), ("ivfpq", "sq8"), ("ivfpq", "fp16"), ("ivfpq", "pq-disk")]


def _data(n_docs: int, per_doc: int = 8, seed: int = 0, offset: int = 0):
    """Clustered unit vectors (like mention vectors: types form clusters)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((40, DIM)).astype(np.float32)
    docs, mentions, vectors = [], [], []
    for i in range(offset, offset + n_docs):
        text = f"Document {i} mentions something."
        docs.append(Document(str(i), text))
        mentions.append([Mention(str(i), 0, 8, "Document") for _ in range(per_doc)])
        v = centers[rng.integers(0, 40, per_doc)] + 0.35 * rng.standard_normal((per_doc, DIM))
        vectors.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return docs, mentions, vectors


def _config(**store) -> IndexConfig:
    return IndexConfig(encoder={"model": "synthetic"}, raw_dim=DIM, dim=DIM, head=None,
                       detector={"name": "gold"}, **store)


def _queries(n: int = 20) -> np.ndarray:
    q = np.random.default_rng(7).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _top_docs(index: Index, query: np.ndarray, k: int) -> list[int]:
    grouped = top_documents(lambda n: tuple(a[0] for a in index.search(query[None], n)),
                            index.row_doc_keys, k, index.ntotal)
    return [g.doc_key for g in grouped]


def _build(path, settings, n_docs=400, batch=100):
    index = Index.create(path, _config(**settings))
    docs, mentions, vectors = _data(n_docs)
    for a in range(0, n_docs, batch):
        index.add(docs[a:a + batch], mentions[a:a + batch], vectors[a:a + batch])
    return index


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """Exact reference: flat fp32 FAISS."""
    index = _build(tmp_path_factory.mktemp("exact") / "idx", store_settings())
    q = _queries()
    rows = index.search(q, 50)[1]
    docs = [_top_docs(index, v, 10) for v in q]
    index.close()
    return rows, docs


@pytest.mark.parametrize(("index_type", "storage"), COMBOS)
def test_faiss_index_types_recall_reopen_append(tmp_path, exact, index_type, storage):
    settings = store_settings("faiss", index_type, storage, params=SMALL_IVF)
    path = tmp_path / "idx"
    index = _build(path, settings)
    assert index.ntotal == index.num_mentions() == 3200
    if index_type == "ivfpq":
        assert index.store.trained  # trained once 2,000 rows were committed
    q = _queries()
    rows = index.search(q, 50)[1]
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(rows, exact[0])])
    docs = [_top_docs(index, v, 10) for v in q]
    doc_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(docs, exact[1])])
    floor = {"fp32": 0.95, "fp16": 0.9, "sq8": 0.9, "pq": 0.6, "pq-disk": 0.9}[storage]
    if index_type == "flat":
        floor = 0.999 if storage == "fp32" else 0.98
    assert recall >= floor, f"recall@50 {recall:.3f}"
    assert doc_recall >= floor, f"document recall@10 {doc_recall:.3f}"
    assert all(len(d) == 10 == len(set(d)) for d in docs)
    # k beyond the number of documents: the widening loop exhausts the index.
    assert len(_top_docs(index, q[0], 1000)) == 400
    index.close()
    persisted = index_type in ("hnsw", "ivfpq")
    assert (path / "vectors" / ANN_FILE).is_file() == persisted
    with Index.open(path) as reader:  # the saved ANN file gives the same neighbours
        np.testing.assert_array_equal(reader.search(q, 50)[1], rows)
    with Index.open(path, writable=True) as writer:  # append after reopen
        new_docs, new_mentions, new_vectors = _data(20, seed=5, offset=1000)
        new_vectors[0][0] = q[3]  # an exact match for query 3
        writer.add(new_docs, new_mentions, new_vectors)
        assert writer.ntotal == 3360
        top = writer.documents_by_key(_top_docs(writer, q[3], 1))
        assert [d.id for d in top.values()] == ["1000"]
    with Index.open(path) as reader:
        assert reader.ntotal == 3360
        assert [d.id for d in reader.documents_by_key(_top_docs(reader, q[3], 1)).values()] \
            == ["1000"]


@pytest.mark.slow
def test_pq_disk_reranks_candidates_on_the_stored_vectors(tmp_path):
    """``pq-disk`` keeps only PQ codes in memory and re-scores refine_factor * k candidates
    with the fp16 segment vectors: its scores are the exact inner products with those."""
    settings = store_settings("faiss", "ivfpq", "pq-disk", params=SMALL_IVF)
    index = _build(tmp_path / "idx", settings)
    plain = _build(tmp_path / "plain", store_settings("faiss", "ivfpq", "pq", params=SMALL_IVF))
    assert index.store.memory_bytes() == plain.store.memory_bytes()  # no copies in memory
    q = _queries()
    scores, rows = index.search(q, 20)
    stored = np.concatenate(_data(400)[2]).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ stored.T, rows, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    truth = np.argsort(-(q @ stored.T), axis=1)[:, :20]
    def recall(found):
        return np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, truth)])
    assert recall(rows) > recall(plain.search(q, 20)[1]) + 0.1
    assert recall(rows) >= 0.9
    index.close()
    plain.close()


def test_ivfpq_searches_exactly_until_trained(tmp_path):
    index = Index.create(tmp_path / "idx", _config(**store_settings(
        "faiss", "ivfpq", params={**SMALL_IVF, "train_min": 10_000})))
    docs, mentions, vectors = _data(50)
    index.add(docs, mentions, vectors)
    assert not index.store.trained
    q = _queries(3)
    stacked = np.concatenate(vectors)
    np.testing.assert_array_equal(index.search(q, 5)[1], np.argsort(-(q @ stacked.T))[:, :5])
    index.close()
    assert not (tmp_path / "idx" / "vectors" / ANN_FILE).exists()  # nothing worth saving


def test_corrupt_or_stale_ann_file_is_rebuilt(tmp_path):
    path = tmp_path / "idx"
    index = _build(path, store_settings("faiss", "hnsw", "fp16"), n_docs=100)
    q = _queries()
    rows = index.search(q, 20)[1]
    index.close()
    ann = path / "vectors" / ANN_FILE
    data = bytearray(ann.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ann.write_bytes(bytes(data))
    with Index.open(path, writable=True) as writer:  # checksum mismatch: rebuilt
        np.testing.assert_array_equal(writer.search(q, 20)[1], rows)
    with Index.open(path) as reader:  # and saved again on close
        assert reader.store._saved_rows == reader.ntotal == 800
        np.testing.assert_array_equal(reader.search(q, 20)[1], rows)
    (path / "vectors" / ANN_MANIFEST).unlink()
    with Index.open(path) as reader:  # no manifest: rebuilt in memory
        np.testing.assert_array_equal(reader.search(q, 20)[1], rows)


@pytest.mark.slow
def test_ivfpq_fits_128_bytes_per_mention_at_500d():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2300, 500)).astype(np.float32)
    index = build_faiss_index(500, "ivfpq", "pq", {"nlist": 1}, train=x[:300])
    assert faiss.extract_index_ivf(index).code_size == 100  # default: 100 sub-quantisers
    index.add_with_ids(x[:300], np.arange(300))
    before = index_bytes(index)
    index.add_with_ids(x[300:], np.arange(300, 2300))
    assert (index_bytes(index) - before) / 2000 <= 128  # 100 PQ bytes + an 8-byte row id


def _low_rank(n: int, rank: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors inside a ``rank``-d subspace of ``dim``-d space (like head outputs: the
    shipped head maps 192-d vectors to 500-d)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(42).standard_normal((rank, dim))
    x = rng.standard_normal((n, rank)) @ basis + 0.3 * rng.standard_normal((1, rank)) @ basis
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_span_transform_finds_the_subspace_and_keeps_inner_products():
    x = _low_rank(2000, 24, 128)
    transform = span_transform(x)
    assert transform.d_out == 24
    y = transform.apply(x[:50])
    np.testing.assert_allclose(y @ y.T, x[:50] @ x[:50].T, atol=1e-5)
    full = np.random.default_rng(1).standard_normal((500, 64)).astype(np.float32)
    assert span_transform(full) is None  # nothing to gain: no transform


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["pq", "sq8", "fp16"])
def test_ivf_in_the_subspace_ranks_like_exact_search(storage):
    import faiss

    x = _low_rank(6000, 20, 96)
    q = _low_rank(10, 20, 96, seed=3)
    index = build_faiss_index(96, "ivfpq", storage, {"nlist": 8, "nprobe": 8, "pq_nbits": 8},
                              train=x)
    assert faiss.extract_index_ivf(index).d == 20  # codes over the span, not 96 dimensions
    index.add_with_ids(x, np.arange(6000, dtype=np.int64))
    scores, rows = index.search(q, 20)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :20]
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(rows, truth)])
    assert recall >= {"pq": 0.6, "sq8": 0.9, "fp16": 0.95}[storage], recall
    np.testing.assert_allclose(scores[:, 0], (q @ x.T).max(1), atol=0.02)
    assert index_bytes(index) / 6000 < {"pq": 40, "sq8": 40, "fp16": 100}[storage]
    off = build_faiss_index(96, "ivfpq", storage, {"nlist": 8, "pq_nbits": 8,
                                                   "subspace": False}, train=x)
    assert faiss.extract_index_ivf(off).d == 96


def test_index_in_the_span_is_saved_and_reopened(tmp_path):
    """The store trains IVF in the vectors' span, saves it (transform included) and a reader
    gets the same neighbours from the file; appending after reopening still works."""
    import faiss

    rows_per_doc, dim = 8, 64
    x = _low_rank(3200, 12, dim)
    docs = [Document(str(i), f"Document {i}.") for i in range(400)]
    mentions = [[Mention(str(i), 0, 8, "Document")] * rows_per_doc for i in range(400)]
    config = IndexConfig(encoder={"model": "synthetic"}, raw_dim=dim, dim=dim, head=None,
                         detector={"name": "gold"},
                         **store_settings("faiss", "ivfpq", "sq8", params=SMALL_IVF))
    path = tmp_path / "idx"
    index = Index.create(path, config)
    for a in range(0, 400, 100):
        index.add(docs[a:a + 100], mentions[a:a + 100],
                  [x[i * rows_per_doc:(i + 1) * rows_per_doc] for i in range(a, a + 100)])
    assert faiss.extract_index_ivf(index.store._index).d == 12
    q = _low_rank(5, 12, dim, seed=9)
    scores, rows = index.search(q, 30)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :30]
    assert np.mean([len(set(a) & set(b)) / 30 for a, b in zip(rows, truth)]) >= 0.9
    index.close()
    with Index.open(path) as reader:
        assert reader.store._saved_rows == 3200  # loaded from ann.faiss, not rebuilt
        assert faiss.extract_index_ivf(reader.store._index).d == 12
        np.testing.assert_array_equal(reader.search(q, 30)[1], rows)


def test_store_settings_are_validated_and_recorded(tmp_path):
    with pytest.raises(ConfigError, match="supports storage"):
        store_settings("faiss", "flat", "pq")
    with pytest.raises(ConfigError, match="unknown index type"):
        store_settings("faiss", "annoy")
    with pytest.raises(ConfigError, match="unknown store"):
        store_settings("qdrant")
    with pytest.raises(ConfigError, match="milvus"):
        store_settings("faiss", uri="x.db")
    with pytest.raises(ConfigError, match="unknown store parameters"):
        store_settings("faiss", "hnsw", params={"efsearch": 3})
    assert store_settings("faiss", "hnsw")["storage"] == "fp16"
    assert store_settings("faiss", "ivfpq")["storage"] == "pq"
    milvus = store_settings("milvus", index_path=tmp_path / "idx")
    assert milvus["uri"] == "milvus.db" and milvus["store_params"]["collection"]
    inside = store_settings("milvus", uri=str(tmp_path / "idx" / "m.db"),
                            index_path=tmp_path / "idx")
    assert inside["uri"] == "m.db"
    assert store_settings("milvus", uri="http://localhost:19530")["uri"] == \
        "http://localhost:19530"
    old = IndexConfig.model_validate_json(  # an index written before store options existed
        '{"encoder": {"model": "smollm2-135m", "block": 22, "component": "value", '
        '"prepend_bos": true, "query_template": "mentions of {}"}, "raw_dim": 4, "dim": 4, '
        '"head": null, "detector": {}}')
    assert (old.store, old.index_type, old.storage, old.uri) == ("faiss", "flat", "fp32", None)


# -- Milvus Lite ---------------------------------------------------------------------------------
needs_milvus = pytest.mark.skipif(
    importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
    reason="pymilvus and milvus-lite are not installed")


@pytest.mark.slow
@needs_milvus
def test_milvus_lite_index_reopen_append_dedupe_and_leftovers(tmp_path, exact, monkeypatch):
    path = tmp_path / "idx"
    index = _build(path, store_settings("milvus", index_path=path), n_docs=400, batch=200)
    assert (path / "milvus.db").exists()  # Milvus Lite inside the index folder
    q = _queries()
    docs = [_top_docs(index, v, 10) for v in q]
    assert docs == exact[1]  # FLAT in Milvus = exact search, same documents as FAISS
    # A document with 150 near-identical mentions must not crowd out the others.
    crowd = np.tile(q[0], (150, 1)).astype(np.float32)
    index.add([Document("crowd", "Crowded.")], [[Mention("crowd", 0, 7, "Crowded")] * 150],
              [crowd])
    top = _top_docs(index, q[0], 5)
    assert len(top) == 5 == len(set(top))
    assert index.documents_by_key(top[:1])[top[0]].id == "crowd"
    # A crashed writer: vectors written, catalog never committed.
    end = index.ntotal
    index.store.write_segment(end, np.tile(q[1], (30, 1)))
    index.close()
    with Index.open(path) as reader:  # readers never see uncommitted rows
        assert reader.ntotal == end
        rows = reader.search(q[1:2], 40)[1][0]
        assert (rows < end).all()
    with Index.open(path, writable=True) as writer:  # the next writer deletes them
        assert writer.store._count(10 ** 9) == end
        new_docs, new_mentions, new_vectors = _data(10, seed=3, offset=2000)
        new_vectors[0][0] = q[2]
        writer.add(new_docs, new_mentions, new_vectors)
        hits = writer.documents_by_key(_top_docs(writer, q[2], 1))
        assert [d.id for d in hits.values()] == ["2000"]
    with Index.open(path) as reader:
        assert reader.ntotal == end + 80
        assert len(_top_docs(reader, q[5], 1000)) == 411  # exhaustive: every document
        scores, rows = reader.search(q[5:6], 700)
        import ner_retriever.indexes.milvus as store_module

        monkeypatch.setattr(store_module, "MILVUS_MAX_TOPK", 256)  # past the server's limit
        it_scores, it_rows = reader.search(q[5:6], 700)  # pages with a search iterator
        assert it_rows.shape == (1, 700) and (it_rows >= 0).all()
        assert len(set(it_rows[0])) == 700
        np.testing.assert_allclose(it_scores, scores, atol=1e-5)


@pytest.mark.slow
@needs_milvus
def test_milvus_lite_hnsw_and_ivfpq(tmp_path, exact):
    q = _queries()
    for index_type in ("hnsw", "ivfpq"):
        path = tmp_path / index_type
        params = {"nlist": 16, "pq_m": 16, "pq_nbits": 8} if index_type == "ivfpq" else {}
        index = _build(path, store_settings("milvus", index_type, params=params,
                                            index_path=path), n_docs=400, batch=400)
        docs = [_top_docs(index, v, 10) for v in q]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(docs, exact[1])])
        assert recall >= (0.9 if index_type == "hnsw" else 0.5), recall
        assert all(len(d) == 10 == len(set(d)) for d in docs)
        index.close()


@pytest.mark.slow
@needs_milvus
def test_milvus_end_to_end_with_the_real_model(tmp_path, smol_encoder):
    from ner_retriever.retrieve.retriever import Retriever

    docs = [Document("pol", "Angela Merkel and Emmanuel Macron met in Berlin on Monday."),
            Document("river", "The Danube flows through Vienna and Budapest."),
            Document("team", "Manchester United beat Liverpool at Old Trafford."),
            Document("car", "The Volkswagen Golf and the Ford Focus are popular cars.")]
    results = {}
    for store in ("faiss", "milvus"):
        with Retriever.create(tmp_path / store, encoder=smol_encoder, detector="spacy",
                              store=store) as r:
            r.add(docs[:3])
        with Retriever.open(tmp_path / store, writable=True, encoder=smol_encoder) as r:
            r.add(docs[3:])  # append after reopen
            assert r.info()["store"] == store
            results[store] = [(x.doc_id, round(x.score, 4)) for x in r.search("car", k=4)]
    assert results["milvus"] == results["faiss"]
    assert len({d for d, _ in results["milvus"]}) == 4
    with Retriever.open(tmp_path / "milvus", writable=True, encoder=smol_encoder) as r:
        with pytest.raises(ConfigError, match="cannot change when appending"):
            check_append_settings(r, index_type="hnsw")  # what open_or_create checks
        check_append_settings(r, store="milvus", index_type="flat")  # agreeing options are fine
