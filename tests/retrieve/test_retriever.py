"""The ``Retriever`` facade on a small index with the tiny random encoder and gold spans:
create, add, search (scores checked against the stored vectors by hand), info, reopen, and
the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ner_retriever import Document, IndexStateError, Retriever, Span
from ner_retriever.errors import ConfigError
from ner_retriever.models.encoder import EncoderConfig
from ner_retriever.models.head import HeadConfig, ProjectionHead
from ner_retriever.retrieve.retriever import HEAD_DIR

TEXTS = ["Angela Merkel visited Paris.", "Barack Obama spoke in Chicago.",
         "Lionel Messi scored in Madrid.", "Marie Curie worked in Warsaw.",
         "Tokyo hosted the Olympics."]


def corpus() -> list[Document]:
    docs = []
    for i, text in enumerate(TEXTS):
        words = text.rstrip(".").split()
        first = text.index(words[0])
        spans = [Span(first, first + len(" ".join(words[:2])), "person"),
                 Span(text.index(words[-1]), text.index(words[-1]) + len(words[-1]), "place")]
        docs.append(Document(f"d{i}", text, spans=spans[1:] if i == 4 else spans))
    return docs


def create(path, encoder, **kwargs) -> Retriever:
    return Retriever.create(path, encoder=encoder, detector="gold", hybrid=False,
                            **{"head": None, **kwargs})


@pytest.fixture()
def built(tmp_path, tiny_encoder):
    with create(tmp_path / "idx", tiny_encoder) as r:
        r.add(corpus(), commit_every=2)
    return tmp_path / "idx"


def expected_ranking(retriever: Retriever, query: str) -> list[tuple[str, float]]:
    """Each document scored by its best mention's cosine with the query, by hand."""
    q = retriever.embed_queries([query])[0]
    batch = retriever.embedder()(corpus())
    scores = [(doc.id, float((v @ q).max())) for doc, v in zip(corpus(), batch.vectors)]
    return sorted(scores, key=lambda s: -s[1])


def test_a_new_index_records_its_settings(tmp_path, tiny_encoder):
    with create(tmp_path / "idx", tiny_encoder) as r:
        info = r.info()
    assert (info["documents"], info["mentions"]) == (0, 0)
    assert (info["model"], info["block"], info["component"]) == ("tiny-llama", 1, "value")
    assert info["head"] is None and info["hybrid"] is None and info["dim"] == tiny_encoder.dim
    assert info["detector"] == {"name": "gold"} and info["store"] == "faiss"


def test_search_ranks_documents_by_their_best_mention(built, tiny_encoder):
    with Retriever.open(built, encoder=tiny_encoder) as r:
        assert (r.info()["documents"], r.info()["mentions"]) == (5, 9)
        results = r.search("a person", k=5, per_doc=2)
        want = expected_ranking(r, "a person")
    assert [res.doc_id for res in results] == [d for d, _ in want]
    np.testing.assert_allclose([res.score for res in results], [s for _, s in want], atol=1e-5)
    for res in results:
        doc = next(d for d in corpus() if d.id == res.doc_id)
        assert {(m.start, m.end) for m in res.mentions} <= {(s.start, s.end) for s in doc.spans}
        assert [m.score for m in res.mentions] == sorted((m.score for m in res.mentions),
                                                         reverse=True)
        assert res.mentions[0].text in res.snippet and res.score == res.mentions[0].score


def test_k_and_per_doc_limit_the_results(built, tiny_encoder):
    with Retriever.open(built, encoder=tiny_encoder) as r:
        top = r.search("a city", k=2, per_doc=1)
        batch = r.search_batch(["a city", "a person"], k=2, per_doc=1)
    assert len(top) == 2 and all(len(res.mentions) == 1 for res in top)
    assert [res.doc_id for res in batch[0]] == [res.doc_id for res in top]


def test_reopened_for_writing_it_appends_and_finds_the_new_document(built, tiny_encoder):
    with Retriever.open(built, writable=True, encoder=tiny_encoder) as r:
        before = r.search("a city", k=5)
        r.add([Document("d9", "Rome is old.", spans=[Span(0, 4, "place")])])
        assert len(r.index) == 6
        after = r.search("a city", k=6)
    assert "d9" in {res.doc_id for res in after}
    assert [(x.doc_id, x.score) for x in after if x.doc_id != "d9"] == \
        [(x.doc_id, x.score) for x in before]


def test_bad_queries_and_modes_are_refused(built, tiny_encoder):
    with Retriever.open(built, encoder=tiny_encoder) as r:
        with pytest.raises(ConfigError, match="query is empty"):
            r.search("  ")
        with pytest.raises(ConfigError, match="hybrid off"):
            r.search("a city", mode="hybrid")
        with pytest.raises(ConfigError, match="search mode"):
            r.search("a city", mode="sideways")
        with pytest.raises(ConfigError):
            r.search("a city", k=0)


def test_opening_with_another_encoder_or_creating_twice_is_refused(built, tiny_encoder):
    other = EncoderConfig(model="tiny-llama", block=2)
    with pytest.raises(ConfigError, match="was built with encoder"):
        Retriever.open(built, encoder=type("E", (), {"config": other, "dim": tiny_encoder.dim})())
    with pytest.raises(IndexStateError, match="already holds an index"):
        create(built, tiny_encoder)
    with pytest.raises(ConfigError, match="need hybrid=True"):
        create(built.parent / "other", tiny_encoder, names=True)


def test_a_head_is_saved_with_the_index_and_checked_on_open(tmp_path, tiny_encoder):
    torch.manual_seed(0)
    head = ProjectionHead(HeadConfig(input_dim=tiny_encoder.dim, hidden_dim=24, output_dim=16))
    path = tmp_path / "idx"
    with create(path, tiny_encoder, head=head) as r:
        r.add(corpus())
        assert r.info()["dim"] == 16 and r.info()["head"]["checksum"] == head.checksum()
        first = [(x.doc_id, x.score) for x in r.search("a person", k=3)]
    with Retriever.open(path, encoder=tiny_encoder) as r:
        assert [(x.doc_id, x.score) for x in r.search("a person", k=3)] == first
    with torch.no_grad():
        head.net[0].weight.add_(1.0)
    head.save(path / HEAD_DIR)  # other weights behind the recorded checksum
    with pytest.raises(ConfigError, match="checksum"):
        Retriever.open(path, encoder=tiny_encoder)
    wrong = ProjectionHead(HeadConfig(input_dim=tiny_encoder.dim + 1))
    with pytest.raises(ConfigError, match=f"expects {tiny_encoder.dim + 1}-d vectors"):
        create(tmp_path / "other", tiny_encoder, head=wrong)


@pytest.mark.slow
def test_a_hybrid_index_fuses_and_still_offers_the_mention_ranking(tmp_path, tiny_encoder):
    path = tmp_path / "hybrid"
    with Retriever.create(path, encoder=tiny_encoder, detector="gold", head=None) as r:
        r.add(corpus())
        info = r.info()
        assert info["hybrid"] == {"model": "minilm-l6", "max_length": 256, "dim": 384}
        assert info["config"]["names"] == {"model": "minilm-l6", "dim": 384}
        fused = r.search("a city", k=5)
        mentions = r.search("a city", k=5, mode="mentions")
        want = expected_ranking(r, "a city")
        assert r.embed_search_queries(["a city"]).shape == (1, r.index.config.dim + 384)
    assert sorted(x.doc_id for x in fused) == sorted(d for d, _ in want)
    assert [x.doc_id for x in mentions] == [d for d, _ in want]
    with Retriever.open(path, encoder=tiny_encoder) as r:
        assert [(x.doc_id, x.score) for x in r.search("a city", k=5)] == \
            [(x.doc_id, x.score) for x in fused]
