"""One request's reads, remembered: a search runs several passes over overlapping documents (the
feedback pass re-reads the first pass's top documents, exhaustive mode widens ``k`` and several
types rank the same documents again), and every pass reads its candidates' mention and name
vectors from the catalog. :class:`RequestSource` reads each document once per request and
answers later passes from memory, in exactly the order the wrapped source gives (so rankings
are bit-identical, tests/unit/test_memo.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ner_retriever.retrieve.fusion import Calibration, RankingSource

# A read of missing documents: their keys -> (document key of each row, row payloads...)
Read = Callable[[np.ndarray], tuple[np.ndarray, ...]]


class _Rows:
    """Rows read so far (document key, read order, payload arrays), answered per key list."""

    def __init__(self) -> None:
        self.fetched = np.zeros(0, np.int64)  # sorted keys already read
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._joined: tuple[np.ndarray, ...] | None = None

    def get(self, keys: np.ndarray, read: Read) -> tuple[np.ndarray, ...]:
        """``(position in keys of each row, payloads...)``, rows grouped in ``keys`` order and in
        read order within a document."""
        missing = np.setdiff1d(keys, self.fetched)
        if len(missing):
            self._parts.append(read(missing))
            self.fetched = np.union1d(self.fetched, missing)
            self._joined = None
        if self._joined is None:
            self._joined = tuple(np.concatenate(p) for p in zip(*self._parts))
        row_keys, *payloads = self._joined
        if not len(keys) or not len(row_keys):
            return (np.zeros(0, np.int64), *(p[:0] for p in payloads))
        by_key = np.argsort(keys, kind="stable")
        at = np.minimum(np.searchsorted(keys[by_key], row_keys), len(keys) - 1)
        hit = np.flatnonzero(keys[by_key[at]] == row_keys)
        position = by_key[at[hit]]
        order = np.argsort(position, kind="stable")  # read order kept within a document
        rows = hit[order]
        return (position[order], *(p[rows] for p in payloads))


class RequestSource:
    """A :class:`~ner_retriever.retrieve.fusion.RankingSource` for one request: mention and
    name vectors read once per document, everything else passed through."""

    def __init__(self, source: RankingSource):
        self.source = source
        self._mentions, self._names = _Rows(), _Rows()
        self._has_names: bool | None = None

    def dense_top(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
                  ) -> np.ndarray:
        return self.source.dense_top(query, n, allowed)

    def mention_top(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
                    ) -> np.ndarray:
        return self.source.mention_top(query, n, allowed)

    def document_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self.source.document_vectors(keys)

    def calibration(self, size: int) -> Calibration:
        return self.source.calibration(size)

    def mentions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def read(missing: np.ndarray) -> tuple[np.ndarray, ...]:
            rows, doc_index, vectors = self.source.mentions(missing)
            return missing[doc_index], rows, vectors

        doc_index, rows, vectors = self._mentions.get(np.asarray(keys, np.int64), read)
        return rows, doc_index, vectors

    def names(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self._has_names is False:
            return None
        keys = np.asarray(keys, np.int64)
        if self._has_names is None:  # the first read says whether the source has names
            first = self.source.names(keys)
            self._has_names = first is not None
            if first is None:
                return None
            self._names.get(keys, lambda missing: (keys[first[0]], first[1]))
            return first

        def read(missing: np.ndarray) -> tuple[np.ndarray, ...]:
            doc_index, vectors = self.source.names(missing)
            return missing[doc_index], vectors

        return self._names.get(keys, read)
