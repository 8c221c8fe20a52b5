"""Where the ranking reads its vectors: an on-disk index, or arrays in memory (evaluation).

Both implement :class:`ner_retriever.retrieve.fusion.RankingSource`, so a search and an
evaluation of the same vectors rank identically
(tests/integration/test_golden_fusion.py pins it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ner_retriever.indexes.index import Index
from ner_retriever.retrieve.fusion import Calibration, calibration_sample
from ner_retriever.retrieve.pooling import (OVERFETCH, DocumentHits, document_max,
                                            group_by_document, top_documents, top_positions)

# A filter allowing at most this many documents ranks their mentions exactly (a neighbour
# search would widen through many rows of other documents); a larger one over-fetches from the
# store in proportion to the share of the corpus it excludes, widening until k are found.
EXACT_FILTER_DOCS = 4096


def in_sorted(keys: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in the sorted array ``allowed``."""
    if not len(allowed):
        return np.zeros(np.shape(keys), bool)
    at = np.minimum(np.searchsorted(allowed, keys), len(allowed) - 1)
    return allowed[at] == keys


class IndexSource:
    """An index's vectors: mention neighbours from its store, the rest from its catalog. The
    calibration sample's vectors are read once per index state (documents, live, mentions)."""

    def __init__(self, index: Index, exact_filter_docs: int = EXACT_FILTER_DOCS):
        self.index = index
        self.exact_filter_docs = exact_filter_docs
        self._calibration: tuple[tuple, Calibration] | None = None
        self._n_docs: tuple[int, int] | None = None  # (mention rows, documents) when counted

    def dense_top(self, query: np.ndarray, n: int,
                  allowed: np.ndarray | None = None) -> np.ndarray:
        keys, live, vectors = self.index.doc_vectors
        query = np.asarray(query, np.float32)
        if allowed is None:
            scores = np.where(live, vectors @ query, -np.inf)
            return keys[top_positions(scores, min(n, int(live.sum())))]
        at = np.minimum(np.searchsorted(keys, allowed), max(len(keys) - 1, 0))
        picked = at[(keys[at] == allowed) & live[at]] if len(keys) else at[:0]
        return keys[picked[top_positions(vectors[picked] @ query, n)]]

    def mention_top(self, query: np.ndarray, n: int,
                    allowed: np.ndarray | None = None) -> np.ndarray:
        return np.array([g.doc_key for g in self.mention_ranking(query, n, 1, allowed)],
                        np.int64)

    def mention_ranking(self, query: np.ndarray, k: int, per_doc: int,
                        allowed: np.ndarray | None = None) -> list[DocumentHits]:
        """Documents by their best mention alone (``search(mode="mentions")``), only the
        ``allowed`` ones (sorted keys; None: all)."""
        index = self.index
        if allowed is not None and len(allowed) <= self.exact_filter_docs:
            return self._exact_ranking(query, k, per_doc, allowed)
        doc_keys, overfetch = index.row_doc_keys, OVERFETCH
        if allowed is not None:
            def only_allowed(rows: np.ndarray) -> np.ndarray:  # other documents' rows: padding
                keys = index.row_doc_keys(rows)
                return np.where(in_sorted(keys, allowed), keys, -1)
            doc_keys = only_allowed
            overfetch = OVERFETCH * max(1, -(-self._document_count() // len(allowed)))
        return top_documents(lambda n: tuple(a[0] for a in index.search(query[None], n)),
                             doc_keys, k, index.ntotal, per_doc, overfetch)

    def _exact_ranking(self, query: np.ndarray, k: int, per_doc: int,
                       allowed: np.ndarray) -> list[DocumentHits]:
        """The mention ranking of a small filter: every allowed mention scored exactly."""
        rows, doc_index, vectors = self.index.document_mentions(allowed.tolist())
        sims = vectors @ np.asarray(query, np.float32)
        order = np.lexsort((rows, -sims))
        return group_by_document(sims[order], rows[order], allowed[doc_index[order]],
                                 per_doc, limit=k)

    def _document_count(self) -> int:
        """Documents in the index, counted once per number of mention rows."""
        if self._n_docs is None or self._n_docs[0] != self.index.ntotal:
            self._n_docs = (self.index.ntotal, len(self.index))
        return self._n_docs[1]

    def mentions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.index.document_mentions(np.asarray(keys).tolist())

    def names(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.index.config.names:
            return None
        return self.index.document_names(np.asarray(keys).tolist())

    def document_vectors(self, keys: np.ndarray) -> np.ndarray:
        all_keys, _, vectors = self.index.doc_vectors
        return vectors[np.searchsorted(all_keys, np.asarray(keys))]

    def calibration(self, size: int) -> Calibration:
        keys, live, _ = self.index.doc_vectors
        state = (len(keys), int(live.sum()), self.index.ntotal, size)
        if self._calibration is None or self._calibration[0] != state:
            live_keys = keys[live]
            sample = live_keys[calibration_sample(len(live_keys), size)]
            _, doc_index, vectors = self.mentions(sample)
            self._calibration = (state, Calibration(sample, self.document_vectors(sample),
                                                    doc_index, vectors, self.names(sample),
                                                    len(live_keys)))
        return self._calibration[1]


@dataclass(frozen=True)
class ArraySource:
    """Vectors of a whole document collection in memory, document ``i`` having key ``i``:
    normalised mention vectors (index space) with their document, one dense vector per
    document, and the mention names with their document (None: no names side)."""

    mention_vectors: np.ndarray
    mention_docs: np.ndarray
    documents: np.ndarray
    name_vectors: np.ndarray | None = None
    name_docs: np.ndarray | None = None
    # the calibration sample by size: read once, as IndexSource reads it once per state
    _calibrated: dict[int, Calibration] = field(default_factory=dict, init=False, repr=False,
                                                compare=False)

    @property
    def n_docs(self) -> int:
        return len(self.documents)

    def dense_top(self, query: np.ndarray, n: int,
                  allowed: np.ndarray | None = None) -> np.ndarray:
        query = np.asarray(query, np.float32)
        if allowed is None:
            return top_positions(self.documents @ query, n)
        allowed = allowed[(allowed >= 0) & (allowed < self.n_docs)]
        return allowed[top_positions(self.documents[allowed] @ query, n)]

    def mention_top(self, query: np.ndarray, n: int,
                    allowed: np.ndarray | None = None) -> np.ndarray:
        best = document_max((self.mention_vectors @ np.asarray(query, np.float32))[None],
                            self.mention_docs, self.n_docs)[0]
        keep = np.isfinite(best)
        if allowed is not None:
            keep &= in_sorted(np.arange(self.n_docs), allowed)
        with_mentions = np.flatnonzero(keep)
        return with_mentions[top_positions(best[with_mentions], n)]

    def _rows_of(self, docs: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``keys``' documents grouped in ``keys`` order, and their position there."""
        position = np.full(self.n_docs, -1, np.int64)
        position[np.asarray(keys, np.int64)] = np.arange(len(keys))
        rows = np.flatnonzero(position[docs] >= 0)
        rows = rows[np.argsort(position[docs[rows]], kind="stable")]
        return rows, position[docs[rows]]

    def mentions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, doc_index = self._rows_of(self.mention_docs, keys)
        return rows, doc_index, self.mention_vectors[rows]

    def names(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self.name_vectors is None:
            return None
        rows, doc_index = self._rows_of(self.name_docs, keys)
        return doc_index, self.name_vectors[rows]

    def document_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self.documents[np.asarray(keys, np.int64)]

    def calibration(self, size: int) -> Calibration:
        if size not in self._calibrated:
            sample = calibration_sample(self.n_docs, size)
            _, doc_index, vectors = self.mentions(sample)
            self._calibrated[size] = Calibration(sample, self.documents[sample], doc_index,
                                                 vectors, self.names(sample), self.n_docs)
        return self._calibrated[size]
