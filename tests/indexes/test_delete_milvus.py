"""Delete and compact on the Milvus Lite store: rows leave the collection, the known answers
hold before and after reopen, and a writer killed between its commit and the Milvus delete
leaves rows that the next writer deletes."""

from __future__ import annotations

import importlib.util

import pytest

from ner_retriever.indexes.base import store_settings
from ner_retriever.indexes.deletion import drop_documents
from ner_retriever.indexes.index import Index
from tests.indexes.test_delete import PER_DOC, brute_force, build, corpus, queries, ranked_ids

needs_milvus = pytest.mark.skipif(
    importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
    reason="pymilvus and milvus-lite are not installed")


@pytest.mark.slow  # Milvus Lite starts a server process: seconds
@needs_milvus
def test_milvus_delete_compact_reopen_and_recovery(tmp_path):
    path = tmp_path / "idx"
    index = build(path, store_settings("milvus", index_path=path), n_docs=60, batch=30)
    docs, mentions, vectors, _ = corpus(60)
    gone = [f"d{i}" for i in range(0, 60, 3)]
    q = queries(vectors, range(0, 30))
    assert index.delete(gone) == 20
    live = {d.id: v for d, v in zip(docs, vectors) if d.id not in set(gone)}
    expected = [brute_force(live, v, 10) for v in q]
    assert [ranked_ids(index, v, 10) for v in q] == expected
    assert index.store._count(10 ** 9) == 40 * PER_DOC  # deleted from the collection
    stats = index.compact()
    assert stats.rows_after == 40 * PER_DOC
    assert [ranked_ids(index, v, 10) for v in q] == expected
    # A writer killed after its delete commit, before Milvus deleted the rows:
    db = index._db
    db.execute("BEGIN IMMEDIATE")
    drop_documents(db, ["d1"])
    db.execute("COMMIT")
    index.close()
    with Index.open(path) as reader:  # the leftover rows are never returned
        assert "d1" not in ranked_ids(reader, vectors[1][0], 10)
    with Index.open(path, writable=True) as writer:  # and the next writer deletes them
        assert writer.store._count(10 ** 9) == 39 * PER_DOC
        writer.add(docs[:1], mentions[:1], vectors[:1])  # a deleted id comes back
        assert ranked_ids(writer, vectors[0][0], 1) == ["d0"]
