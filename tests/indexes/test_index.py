from __future__ import annotations

import numpy as np
import pytest

from ner_retriever import Document, DuplicateDocumentError, IndexStateError
from ner_retriever.errors import ConfigError
from ner_retriever.indexes.index import Index
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.config import FEEDBACK_DOCS
from ner_retriever.retrieve.fusion import Queries, feedback_queries
from ner_retriever.retrieve.pooling import group_by_document, top_documents
from ner_retriever.retrieve.snippets import snippet

DOCS = [
    Document("pol", "Angela Merkel and Emmanuel Macron met in Berlin on Monday."),
    Document("river", "The Danube flows through Vienna and Budapest before reaching the Black Sea."),
    Document("team", "Manchester United beat Liverpool at Old Trafford."),
    Document("car", "The Volkswagen Golf and the Ford Focus are popular cars."),
    Document("none", "it rained all day and nobody went outside."),
]


@pytest.fixture()
def retriever(tmp_path, smol_encoder):
    r = Retriever.create(tmp_path / "idx", encoder=smol_encoder, detector="spacy")
    r.add(DOCS)
    yield r
    r.close()


@pytest.mark.slow
def test_add_and_search_returns_each_document_once(retriever):
    assert len(retriever.index) == 5
    results = retriever.search("politician", k=4, mode="mentions")
    assert len(results) == 4
    assert len({r.doc_id for r in results}) == 4
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        doc = retriever.index.get_document(r.doc_id)
        for m in r.mentions:
            assert doc.text[m.start:m.end] == m.text
        assert r.score == pytest.approx(r.mentions[0].score)
        assert r.mentions[0].text in r.snippet


@pytest.mark.slow
def test_k_larger_than_documents_returns_all_with_mentions(retriever):
    results = retriever.search("city", k=50, mode="mentions")
    assert {r.doc_id for r in results} == {"pol", "river", "team", "car"}  # "none" has no mention
    # hybrid also ranks on the document vector: the mention-less document comes back, unhighlighted
    hybrid = {r.doc_id: r for r in retriever.search("city", k=50)}
    assert set(hybrid) == {d.id for d in DOCS}
    assert hybrid["none"].mentions == [] and hybrid["none"].snippet == DOCS[4].text


def _full_fusion(retriever, query, feedback=0):
    """Hybrid scores computed the slow way: every document, all three sides (the mention side
    a soft maximum over all the document's mentions; names embedded afresh from the mention
    texts, not read from the index), stats over all; with ``feedback``, each side's query is
    then moved toward the best vector of each of the top ``feedback`` documents (Rocchio with
    ``search.FEEDBACK_WEIGHT``) and every document scored again."""
    from ner_retriever.config import FEEDBACK_WEIGHT, HYBRID_WEIGHT, MENTION_TEMPERATURE
    from ner_retriever.retrieve.fusion import fuse, score_stats

    index = retriever.index
    keys, live, doc_vectors = index.doc_vectors
    q = retriever.embed_search_queries([query])[0]
    rows, doc_index, vectors = index.document_mentions(keys[live].tolist())
    texts = index.mention_rows(rows.tolist())
    names = retriever.dense.encode([texts[int(r)][2] for r in rows]).astype(np.float16)
    names = names.astype(np.float32)
    n = int(live.sum())
    own = [np.flatnonzero(doc_index == i) for i in range(n)]

    def scores(mention_q, dense_q, name_q):
        sims, name_sims = vectors @ mention_q, names @ name_q
        t = MENTION_TEMPERATURE
        mention = np.array([t * np.log(np.exp(sims[r].astype(np.float64) / t).sum())
                            if len(r) else -np.inf for r in own])
        dense = doc_vectors[live] @ dense_q
        name = np.array([name_sims[r].max() if len(r) else -np.inf for r in own])
        return fuse(mention, dense, score_stats(mention), score_stats(dense), HYBRID_WEIGHT,
                    name, score_stats(name))

    def moved(query_vector, picked):
        unit = picked / np.linalg.norm(picked, axis=1, keepdims=True)
        v = query_vector / np.linalg.norm(query_vector) + FEEDBACK_WEIGHT * unit.mean(axis=0)
        return v / np.linalg.norm(v)

    mention_q, dense_q = q[: index.config.dim], q[index.config.dim:]
    fused = scores(mention_q, dense_q, dense_q)
    if feedback:
        top = [i for i in np.argsort(-fused, kind="stable")[:feedback] if len(own[i])]
        best = [own[i][np.argmax(vectors[own[i]] @ mention_q)] for i in top]
        best_names = [own[i][np.argmax(names[own[i]] @ dense_q)] for i in top]
        top_all = np.argsort(-fused, kind="stable")[:feedback]
        fused = scores(moved(mention_q, vectors[best]),
                       moved(dense_q, doc_vectors[live][top_all]),
                       moved(dense_q, names[best_names]))
    docs = index.documents_by_key(keys[live].tolist())
    return {docs[int(k)].id: float(f) for k, f in zip(keys[live], fused)}


@pytest.mark.slow
@pytest.mark.parametrize("feedback", [0, FEEDBACK_DOCS])
def test_hybrid_search_equals_fusing_every_document(retriever, feedback):
    assert retriever.index.config.dense.model == "minilm-l6"
    for query in ("politician", "river", "car brand"):
        expected = _full_fusion(retriever, query, feedback)
        got = retriever.search(query, k=5, feedback=feedback)
        assert [r.doc_id for r in got] == sorted(expected, key=lambda d: -expected[d])
        for r in got:
            assert r.score == pytest.approx(expected[r.doc_id], abs=1e-5)
            assert [m.score for m in r.mentions] == sorted((m.score for m in r.mentions),
                                                           reverse=True)
        with pytest.raises(ConfigError, match="weight"):
            retriever.search(query, k=2, weight=1.5)
        with pytest.raises(ConfigError, match="feedback"):
            retriever.search(query, k=2, feedback=-1)


@pytest.mark.slow
def test_feedback_ranking_does_not_depend_on_k(retriever):
    """The feedback documents come from a first pass of fixed size, so a page of k results is
    the head of any longer page (what offset paging in the server relies on)."""
    for query in ("politician", "city"):
        long = [(r.doc_id, r.score) for r in retriever.search(query, k=5)]
        for k in (1, 2, 3):
            assert [(r.doc_id, r.score) for r in retriever.search(query, k=k)] == long[:k]
    with pytest.raises(ConfigError, match="feedback"):  # refused before the model runs
        retriever.search_batch(["city"], k=2, feedback=10**6)


@pytest.mark.slow
def test_feedback_moves_every_query_toward_the_top_documents(retriever):
    """Feedback from the one document about rivers pulls all three sides toward it: that
    document rises on every side against the query alone."""
    index = retriever.index
    q = retriever.embed_search_queries(["body of water"])[0]
    mention_q, dense_q = q[: index.config.dim], q[index.config.dim:]
    keys, live, doc_vectors = index.doc_vectors
    river = [k for k, d in index.documents_by_key(keys[live].tolist()).items() if d.id == "river"]
    m = feedback_queries(retriever.source, Queries(mention_q, dense_q, dense_q), np.array(river))
    moved = (m.mention, m.dense, m.names)
    _, _, vectors = index.document_mentions(river)
    _, names = index.document_names(river)
    river_vector = doc_vectors[np.searchsorted(keys, river)][0]
    sides = ((mention_q, moved[0], vectors), (dense_q, moved[1], river_vector[None]),
             (dense_q, moved[2], names))
    for before, after, own in sides:
        assert np.linalg.norm(after) == pytest.approx(1.0, abs=1e-5)
        assert (own @ after).max() > (own @ before).max() + 0.05


@pytest.mark.slow
def test_hybrid_document_vectors_follow_updates_and_reopen(tmp_path, retriever, smol_encoder):
    retriever.add([Document("river", "Barack Obama spoke in the Senate.")], if_exists="update")
    keys, live, _ = retriever.index.doc_vectors
    assert live.sum() == len(retriever.index) == 5 and len(keys) == 6  # old slot kept, dead
    assert (np.diff(keys) > 0).all()  # keys are never reused: lookups stay a binary search
    before = [r.to_dict() for r in retriever.search("politician", k=5)]
    assert _full_fusion(retriever, "politician", FEEDBACK_DOCS)["river"] == pytest.approx(
        next(r["score"] for r in before if r["doc_id"] == "river"), abs=1e-5)
    retriever.close()
    with Retriever.open(tmp_path / "idx", encoder=smol_encoder) as reader:
        after = [r.to_dict() for r in reader.search("politician", k=5)]
    assert [r["doc_id"] for r in after] == [r["doc_id"] for r in before]
    for a, b in zip(after, before):  # same ranking; scores equal up to float summation order
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert [(m["start"], m["end"]) for m in a["mentions"]] == \
            [(m["start"], m["end"]) for m in b["mentions"]]


@pytest.mark.slow
def test_mentions_only_index_and_mode_errors(tmp_path, smol_encoder):
    with Retriever.create(tmp_path / "plain", encoder=smol_encoder, hybrid=False) as r:
        r.add(DOCS[:2])
        assert r.index.config.dense is None
        results = r.search("politician", k=2)  # auto = mentions here
        assert results[0].score == pytest.approx(results[0].mentions[0].score)
        with pytest.raises(ConfigError, match="hybrid"):
            r.search("politician", mode="hybrid")
        with pytest.raises(ConfigError, match="mode"):
            r.search("politician", mode="fused")
        with pytest.raises(ConfigError, match="document vectors"):
            r.index.add([DOCS[2]], [[]], [np.zeros((0, r.index.config.dim))],
                        doc_vectors=np.zeros((1, 384)))
    with pytest.raises(ConfigError, match="hybrid"):
        Retriever.open_or_create(tmp_path / "plain", encoder=smol_encoder, hybrid=True)


@pytest.mark.slow
def test_mention_names_are_stored_per_document_and_follow_updates(tmp_path, retriever,
                                                                  smol_encoder):
    """A hybrid index stores each mention's text embedded alone (float16, per document, in
    mention order); an update replaces them; an index without names refuses them."""
    index = retriever.index
    assert index.config.names.model_dump() == {"model": "minilm-l6", "dim": 384}
    keys, live, _ = index.doc_vectors
    rows, doc_index, _ = index.document_mentions(keys.tolist())
    name_index, names = index.document_names(keys.tolist())
    np.testing.assert_array_equal(name_index, doc_index)
    texts = index.mention_rows(rows.tolist())
    fresh = retriever.dense.encode([texts[int(r)][2] for r in rows])
    np.testing.assert_allclose(names, fresh, atol=2e-3)  # float16 storage
    retriever.add([Document("car", "Lionel Messi scored twice.")], if_exists="update")
    keys, live, _ = retriever.index.doc_vectors
    by_key = retriever.index.documents_by_key(keys[live].tolist())
    new_key = [k for k, d in by_key.items() if d.id == "car"]
    _, names = retriever.index.document_names(new_key)  # the new mentions' names only
    rows, _, _ = retriever.index.document_mentions(new_key)
    assert len(names) == len(rows) >= 1
    messi = retriever.dense.encode([retriever.index.mention_rows(rows.tolist())[rows[0]][2]])
    np.testing.assert_allclose(names[0], messi[0], atol=2e-3)
    gone = keys[~live].tolist()
    assert len(retriever.index.document_names(gone)[1]) == 0  # the replaced copy's are deleted
    with pytest.raises(ConfigError, match="name vector per mention"):
        retriever.index.add([Document("x", "Paris.")], [[]], [np.zeros((0, 500))],
                            doc_vectors=np.zeros((1, 384)), name_vectors=[np.zeros((1, 384))])
    retriever.close()
    with pytest.raises(ConfigError, match="mention names"):
        Retriever.open_or_create(tmp_path / "idx", encoder=smol_encoder, names=False)
    with pytest.raises(ConfigError, match="hybrid"):
        Retriever.create(tmp_path / "bad", encoder=smol_encoder, hybrid=False, names=True)
    with Retriever.create(tmp_path / "plain", encoder=smol_encoder, names=False) as r:
        r.add(DOCS[:2])
        assert r.index.config.names is None and r.index.config.dense is not None
        assert [x.doc_id for x in r.search("politician", k=1)] == ["pol"]
        with pytest.raises(ConfigError, match="not used"):
            r.index.add([DOCS[2]], [[]], [np.zeros((0, r.index.config.dim))],
                        doc_vectors=np.zeros((1, 384)), name_vectors=[np.zeros((0, 384))])


@pytest.mark.slow
def test_altered_document_vector_is_a_clear_error(tmp_path, retriever, smol_encoder):
    import sqlite3

    retriever.close()
    db = sqlite3.connect(tmp_path / "idx" / "catalog.sqlite")
    (blob,) = db.execute("SELECT vector FROM doc_vectors LIMIT 1").fetchone()
    altered = bytes([blob[0] ^ 1]) + blob[1:]
    db.execute("UPDATE doc_vectors SET vector = ? WHERE vector = ?", (altered, blob))
    db.commit()
    db.close()
    with pytest.raises(IndexStateError, match="dense vector of document 'pol'.*catalog.sqlite"):
        Retriever.open(tmp_path / "idx", encoder=smol_encoder)


@pytest.mark.slow
def test_reopen_gives_same_results_and_append(tmp_path, retriever, smol_encoder):
    before = [r.to_dict() for r in retriever.search("river", k=3)]
    retriever.close()
    with Retriever.open(tmp_path / "idx", encoder=smol_encoder) as reopened:
        assert [r.to_dict() for r in reopened.search("river", k=3)] == before
    with Retriever.open(tmp_path / "idx", writable=True, encoder=smol_encoder) as writer:
        writer.add([Document("new", "Barack Obama visited Paris.")])
        assert len(writer.index) == 6
        assert "new" in {r.doc_id for r in writer.search("politician", k=6)}
    with Retriever.open(tmp_path / "idx", encoder=smol_encoder) as reader:
        assert len(reader.index) == 6


@pytest.mark.slow
def test_duplicate_ids_error_skip_update(retriever):
    with pytest.raises(DuplicateDocumentError, match="'pol'"):
        retriever.add([Document("pol", "Someone else.")])
    stats = retriever.add([DOCS[0], Document("extra", "Tokyo is large.")], if_exists="skip")
    assert (stats.documents, stats.skipped) == (1, 1)
    retriever.add([Document("pol", "Joe Biden spoke in Ohio.")], if_exists="update")
    assert retriever.index.get_document("pol").text == "Joe Biden spoke in Ohio."
    texts = {m.text for m in retriever.index.mentions_of("pol")}
    assert "Angela Merkel" not in texts and texts
    for r in retriever.search("politician", k=6):  # no stale mentions of the old text
        doc = retriever.index.get_document(r.doc_id)
        assert all(doc.text[m.start:m.end] == m.text for m in r.mentions)
    with pytest.raises(DuplicateDocumentError):
        retriever.add([Document("a", "Rome."), Document("a", "Milan.")])


@pytest.mark.slow
def test_interrupted_add_keeps_committed_batches_and_resumes(tmp_path, smol_encoder):
    docs = [Document(str(i), f"Document {i} mentions Paris and Angela Merkel.") for i in range(7)]

    def crashing():
        yield from docs[:5]
        raise RuntimeError("input stream broke")

    path = tmp_path / "idx"
    with Retriever.create(path, encoder=smol_encoder, detector="spacy-ents") as r:
        with pytest.raises(RuntimeError):
            r.add(crashing(), commit_every=2)
        assert len(r.index) == 4  # two committed batches, the third never committed
    with Retriever.open(path, writable=True, encoder=smol_encoder) as r:
        assert len(r.index) == 4
        stats = r.add(docs, if_exists="skip", commit_every=2)
        assert (stats.documents, stats.skipped) == (3, 4)
        assert len(r.index) == 7
        assert r.index.num_mentions() == r.index.ntotal >= 14


@pytest.mark.slow
def test_single_writer_lock(retriever, smol_encoder):
    with pytest.raises(IndexStateError, match="another process"):
        Retriever.open(retriever.index.path, writable=True, encoder=smol_encoder)
    with Retriever.open(retriever.index.path, encoder=smol_encoder) as reader:  # readers are fine
        assert len(reader.index) == 5


@pytest.mark.slow
def test_opening_with_another_encoder_is_an_error(retriever, minilm_tokenizer):
    from transformers import BertConfig, BertModel

    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    model = BertModel(BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    other = TransformerEncoder(EncoderConfig(model="tiny-bert", block=1), model=model,
                               tokenizer=minilm_tokenizer)
    with pytest.raises(ConfigError, match="was built with encoder"):
        Retriever.open(retriever.index.path, encoder=other)


@pytest.mark.slow
def test_corrupt_and_missing_index(tmp_path, retriever):
    path = retriever.index.path
    retriever.close()
    segment = next((path / "vectors").glob("seg-*.npy"))
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(IndexStateError, match="checksum"):
        Index.open(path)
    with pytest.raises(IndexStateError, match="no such directory"):
        Index.open(tmp_path / "nope")


@pytest.mark.slow
def test_head_is_recorded_and_reloaded(tmp_path, smol_encoder):
    from ner_retriever.models.head import HeadConfig, ProjectionHead

    head = ProjectionHead(HeadConfig(input_dim=smol_encoder.dim))
    with Retriever.create(tmp_path / "h", encoder=smol_encoder, head=head) as r:
        r.add(DOCS[:2])
        first = r.search("city", k=2)
        assert r.info()["head"]["checksum"] == head.checksum() and r.info()["dim"] == 500
    with Retriever.open(tmp_path / "h", encoder=smol_encoder) as r:
        assert [x.to_dict() for x in r.search("city", k=2)] == [x.to_dict() for x in first]


def test_top_documents_widens_until_k_documents():
    # 100 near-duplicate hits from doc 0 come first; docs 1..3 sit further down.
    scores = np.concatenate([np.linspace(1.0, 0.9, 100), [0.5, 0.4, 0.3]]).astype(np.float32)
    rows = np.arange(103)
    keys = np.array([0] * 100 + [1, 2, 3])
    calls = []

    def search(n):
        calls.append(n)
        return scores[:n], rows[:n]

    grouped = top_documents(search, lambda r: keys[r], k=3, ntotal=103, per_doc=2)
    assert [g.doc_key for g in grouped] == [0, 1, 2]
    assert len(grouped[0].hits) == 2 and len(calls) > 1


def test_group_by_document_skips_removed_rows():
    grouped = group_by_document(np.array([0.9, 0.8, 0.7]), np.array([5, 6, 7]),
                                np.array([-1, 3, 3]), per_doc=3)
    assert [(g.doc_key, g.score, len(g.hits)) for g in grouped] == [(3, 0.8, 2)]


def test_snippet_centres_on_the_mention():
    text = "word " * 100 + "Paris" + " tail" * 100
    start = text.index("Paris")
    s = snippet(text, start, start + 5, width=60)
    assert "Paris" in s and s.startswith("…") and s.endswith("…") and len(s) <= 62
    assert snippet("short text", 0, 5) == "short text"


@pytest.mark.slow
def test_altered_config_and_truncated_catalog_are_detected(tmp_path, retriever):
    path = retriever.index.path
    retriever.close()
    config = (path / "config.json").read_text()
    (path / "config.json").write_text(config.replace('"block": 22', '"block": 21'))
    with pytest.raises(IndexStateError, match="config.json"):
        Index.open(path)
    (path / "config.json").write_text(config)
    Index.open(path).close()
    catalog = path / "catalog.sqlite"
    catalog.write_bytes(catalog.read_bytes()[:1000])
    with pytest.raises(IndexStateError, match="catalog.sqlite"):
        Index.open(path)


@pytest.mark.slow
def test_interrupted_creation_can_be_redone(tmp_path, smol_encoder):
    path = tmp_path / "idx"
    path.mkdir()
    (path / "config.json").write_text("{}")  # creation died before the catalog was written
    assert not Index.exists(path)
    with Retriever.create(path, encoder=smol_encoder) as r:
        r.add(DOCS[:1])
    assert Index.exists(path)
