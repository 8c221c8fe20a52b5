"""The add pipeline (validate -> detect -> encode -> project -> commit) with a tiny random
model and gold spans: what each step refuses, skips and replaces."""

from __future__ import annotations

import pytest

from ner_retriever import CorpusError, Document, DuplicateDocumentError, Retriever, Span
from ner_retriever.errors import ConfigError
from ner_retriever.pipeline import Admission, BatchEmbedder, check_document


def doc(i: int, text: str = "Angela Merkel visited Paris.") -> Document:
    return Document(f"d{i}", text, spans=[Span(0, 13, "person"), Span(22, 27, "city")])


@pytest.fixture()
def retriever(tmp_path, tiny_encoder):
    with Retriever.create(tmp_path / "idx", encoder=tiny_encoder, detector="gold", head=None,
                          hybrid=False) as r:
        yield r


def test_batches_commit_with_their_mentions(retriever):
    stats = retriever.add([doc(i) for i in range(5)], commit_every=2)
    assert (stats.documents, stats.mentions, stats.skipped) == (5, 10, 0)
    assert [m.text for m in retriever.index.mentions_of("d3")] == ["Angela Merkel", "Paris"]
    assert retriever.search("chancellor", k=3, mode="mentions")


def test_duplicates_are_refused_skipped_or_replaced(retriever):
    retriever.add([doc(0), doc(1)])
    with pytest.raises(DuplicateDocumentError):
        retriever.add([doc(2), doc(2)])  # twice in one run
    with pytest.raises(DuplicateDocumentError):
        retriever.add([doc(1)])  # already indexed
    stats = retriever.add([doc(1), doc(3)], if_exists="skip")
    assert (stats.documents, stats.skipped) == (1, 1)
    retriever.add([doc(1, "Angela Merkel flew to Paris.")], if_exists="update")
    assert retriever.index.get_document("d1").text == "Angela Merkel flew to Paris."


def test_bad_documents_and_settings_are_refused_before_anything_is_written(retriever):
    with pytest.raises(CorpusError, match="empty text"):
        retriever.add([doc(0), Document("d9", "   ")])
    assert len(retriever.index) == 0  # the batch held a bad document: nothing committed
    with pytest.raises(CorpusError, match="id is missing"):
        check_document(Document(" ", "text"))
    with pytest.raises(ConfigError, match="if_exists"):
        Admission(retriever.index, "sometimes")


def test_the_embedder_is_what_add_runs(retriever):
    embed = retriever.embedder()
    assert isinstance(embed, BatchEmbedder) and embed.dim == retriever.index.config.dim
    batch = embed([doc(0)])
    assert batch.n_mentions == 2 and batch.doc_vectors is None
    assert batch.vectors[0].shape == (2, retriever.index.config.dim)
