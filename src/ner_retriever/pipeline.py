"""The add pipeline: validate -> detect -> encode -> project -> commit, one batch at a time.

``Retriever.add``, the Ray writer (``scale/ray.py``) and the HTTP server all run these same
steps, so every path indexes a document exactly alike; only where :class:`BatchEmbedder` runs
differs (in process, or in a Ray actor).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ner_retriever.config import IfExists, check_if_exists
from ner_retriever.detect.base import Detector, JointDetector
from ner_retriever.errors import CorpusError, DuplicateDocumentError
from ner_retriever.indexes.index import Index
from ner_retriever.io.corpus import iter_batches
from ner_retriever.models.head import ProjectionHead, confidence_scale, per_document
from ner_retriever.types import Document, Mention

Progress = Callable[[int, int], None]  # (documents, mentions) of a committed batch


@dataclass
class AddStats:
    documents: int = 0
    skipped: int = 0
    mentions: int = 0
    seconds: float = 0.0


@dataclass
class EncodedBatch:
    """One batch ready to commit: its documents, their mentions and every vector the index
    stores for them (document and name vectors only on hybrid indexes)."""

    docs: list[Document]
    mentions: list[list[Mention]]
    vectors: list[np.ndarray]
    doc_vectors: np.ndarray | None = None
    name_vectors: list[np.ndarray] | None = None

    @property
    def n_mentions(self) -> int:
        return sum(len(m) for m in self.mentions)


def check_document(doc: Document) -> None:
    """A document needs a non-empty id and text; the error names where it came from."""
    where = doc.source or f"document {doc.id!r}"
    if not isinstance(doc.id, str) or not doc.id.strip():
        raise CorpusError("document id is missing or empty", where)
    if not isinstance(doc.text, str) or not doc.text.strip():
        raise CorpusError(f"document {doc.id!r} has empty text", where)


@dataclass
class Admission:
    """The validate step: each document checked, an id seen twice in one run refused, and the
    index's ``if_exists`` rule applied (``skip`` resumes an interrupted run)."""

    index: Index
    if_exists: IfExists = "error"
    stats: AddStats = field(default_factory=AddStats)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        check_if_exists(self.if_exists)

    def admit(self, batch: Sequence[Document]) -> list[Document]:
        for doc in batch:
            check_document(doc)
            if doc.id in self.seen:
                raise DuplicateDocumentError(doc.id, doc.source)
            self.seen.add(doc.id)
        if self.if_exists == "update":
            return list(batch)
        present = self.index.existing_ids(d.id for d in batch)
        if present and self.if_exists == "error":
            doc = next(d for d in batch if d.id in present)
            raise DuplicateDocumentError(doc.id, doc.source)
        self.stats.skipped += len(present)
        return [d for d in batch if d.id not in present]


@dataclass
class BatchEmbedder:
    """The detect -> encode -> project steps for one batch. A detector that shares the
    encoder's forward pass (a :class:`JointDetector`) returns spans and vectors from one pass."""

    detector: Detector
    encoder: object
    head: ProjectionHead | None
    dim: int
    dense: object | None = None
    names: bool = False
    confidence_weight: float = 0.0

    def __call__(self, docs: Sequence[Document]) -> EncodedBatch:
        if isinstance(self.detector, JointDetector):
            spans, raw = self.detector.detect_and_encode(docs, self.encoder)
        else:
            spans = self.detector.detect(docs)
            raw = self.encoder.encode_spans([d.text for d in docs],
                                            [[(s.start, s.end) for s in sp] for sp in spans])
        mentions = [[Mention(d.id, s.start, s.end, d.text[s.start:s.end], s.label) for s in sp]
                    for d, sp in zip(docs, spans)]
        vectors = per_document(self.head, raw, self.dim)
        if self.confidence_weight:
            vectors = [v * confidence_scale([s.confidence for s in sp],
                                            self.confidence_weight)[:, None]
                       for v, sp in zip(vectors, spans, strict=True)]
        batch = EncodedBatch(list(docs), mentions, vectors)
        if self.dense is not None:
            batch.doc_vectors = self.dense.encode([d.text for d in docs])
            if self.names:
                batch.name_vectors = self._names(mentions)
        return batch

    def _names(self, mentions: list[list[Mention]]) -> list[np.ndarray]:
        """Each mention's text embedded alone (the names side of the hybrid ranking)."""
        flat = self.dense.encode([m.text for ms in mentions for m in ms])
        bounds = np.cumsum([0] + [len(ms) for ms in mentions])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def commit(index: Index, batch: EncodedBatch, if_exists: IfExists, stats: AddStats) -> int:
    """The commit step: one atomic catalog transaction; returns the documents added."""
    added = index.add(batch.docs, batch.mentions, batch.vectors, if_exists=if_exists,
                      doc_vectors=batch.doc_vectors, name_vectors=batch.name_vectors)
    stats.documents += added
    stats.mentions += batch.n_mentions
    return added


def add_documents(index: Index, docs: Iterable[Document], embed: BatchEmbedder,
                  if_exists: IfExists = "error", batch_size: int = 256,
                  progress: Progress | None = None) -> AddStats:
    """Run the whole pipeline in this process, ``batch_size`` documents per atomic batch."""
    admission = Admission(index, if_exists)
    start = time.perf_counter()
    for batch in iter_batches(docs, batch_size):
        batch = admission.admit(batch)
        mentions = 0
        if batch:
            encoded = embed(batch)
            commit(index, encoded, if_exists, admission.stats)
            mentions = encoded.n_mentions
        if progress is not None:
            progress(len(batch), mentions)
    admission.stats.seconds = time.perf_counter() - start
    return admission.stats
