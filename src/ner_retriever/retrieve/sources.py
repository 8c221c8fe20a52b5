"""Where the ranking reads its vectors: an on-disk index, or arrays in memory (evaluation).

Both implement :class:`ner_retriever.retrieve.fusion.RankingSource`, so a search and an
evaluation of the same vectors rank identically (tests/test_golden_fusion.py pins it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ner_retriever.indexes.index import Index
from ner_retriever.retrieve.fusion import Calibration, calibration_sample
from ner_retriever.retrieve.pooling import document_max, top_documents, top_positions


class IndexSource:
    """An index's vectors: mention neighbours from its store, the rest from its catalog. The
    calibration sample's vectors are read once per index state (documents, live, mentions)."""

    def __init__(self, index: Index):
        self.index = index
        self._calibration: tuple[tuple, Calibration] | None = None

    def dense_scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys, live, vectors = self.index.doc_vectors
        return keys, live, vectors @ np.asarray(query, np.float32)

    def mention_top(self, query: np.ndarray, n: int) -> np.ndarray:
        return np.array([g.doc_key for g in self.mention_ranking(query, n, 1)], np.int64)

    def mention_ranking(self, query: np.ndarray, k: int, per_doc: int):
        """Documents by their best mention alone (``search(mode="mentions")``)."""
        index = self.index
        return top_documents(lambda n: tuple(a[0] for a in index.search(query[None], n)),
                             index.row_doc_keys, k, index.ntotal, per_doc)

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
            self._calibration = (state, Calibration(sample, doc_index, vectors,
                                                    self.names(sample)))
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

    def dense_scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = np.arange(self.n_docs)
        return keys, np.ones(self.n_docs, bool), self.documents @ np.asarray(query, np.float32)

    def mention_top(self, query: np.ndarray, n: int) -> np.ndarray:
        best = document_max((self.mention_vectors @ np.asarray(query, np.float32))[None],
                            self.mention_docs, self.n_docs)[0]
        with_mentions = np.flatnonzero(np.isfinite(best))
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
            self._calibrated[size] = Calibration(sample, doc_index, vectors, self.names(sample))
        return self._calibrated[size]
