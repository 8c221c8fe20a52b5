"""Reads of an index's SQLite catalog: documents, mentions and name vectors by key, each row
checked against its checksum (a corrupt row is an error naming the index, never a wrong result).
:class:`~ner_retriever.indexes.index.Index` holds the connection and the lock."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ner_retriever.errors import IndexStateError
from ner_retriever.indexes.schema import CATALOG_NAME, row_checksum
from ner_retriever.types import Document, Mention

IN_LIST_CHUNK = 500  # ids per SQL IN (...) list: under SQLite's variable limit
# Verified name vectors kept in memory, most recently read first, up to this many bytes (fp16):
# every ranking pass reads its candidates' names, and checking each row's checksum was half of
# a read's cost. A document key never changes its names (a replaced document gets a new key).
NAME_CACHE_BYTES = 64 * 2**20


class NameCache:
    """Decoded, checksum-verified name vectors by document key, least recently used dropped
    first once ``budget`` bytes are held."""

    def __init__(self, budget: int = NAME_CACHE_BYTES):
        self.budget, self.held = budget, 0
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: Iterable[int]) -> dict[int, np.ndarray]:
        with self._lock:
            found = {k: self._rows[k] for k in keys if k in self._rows}
            for k in found:
                self._rows.move_to_end(k)
            return found

    def put(self, rows: dict[int, np.ndarray]) -> None:
        with self._lock:
            for k, part in rows.items():
                if k not in self._rows:
                    self._rows[k] = part
                    self.held += part.nbytes
            while self.held > self.budget and self._rows:
                self.held -= self._rows.popitem(last=False)[1].nbytes

    def drop(self, keys: Iterable[int]) -> None:
        """Forget deleted or replaced documents."""
        with self._lock:
            for k in keys:
                part = self._rows.pop(int(k), None)
                if part is not None:
                    self.held -= part.nbytes


class CatalogReads:
    """The catalog half of an index (``self._db``, ``self.path``, ``self.lock``, the row map,
    the store and ``self.name_cache`` come from :class:`~ner_retriever.indexes.index.Index`)."""

    def _select_in(self, sql: str, values: Iterable) -> list[tuple]:
        """Rows of ``sql`` whose ``{in}`` is a list of ``values``, run in chunks of IN_LIST_CHUNK (under
        SQLite's limit on bound parameters)."""
        values = list(values)
        found: list[tuple] = []
        for i in range(0, len(values), IN_LIST_CHUNK):
            part = values[i: i + IN_LIST_CHUNK]
            found.extend(self._db.execute(sql.format(**{"in": ",".join("?" * len(part))}), part))
        return found

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        found = self._select_in("SELECT m.row FROM mentions m JOIN documents d "
                                "ON m.doc_key = d.key WHERE d.id IN ({in})", ids)
        return np.array([r[0] for r in found], dtype=np.int64)

    def row_doc_keys(self, rows: np.ndarray) -> np.ndarray:
        """Document key per mention row; -1 for padding or mentions of removed documents."""
        row_doc = self._row_doc
        valid = (rows >= 0) & (rows < min(self._row_end, len(row_doc)))
        out = np.full(rows.shape, -1, dtype=np.int64)
        out[valid] = row_doc[rows[valid]]
        return out

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def select_keys(self, condition: str, params: Sequence = ()) -> np.ndarray:
        """Sorted keys of the documents meeting an SQL ``condition`` on the documents table
        (built by ``indexes/filters.py`` from a parsed filter, never from user text)."""
        rows = self._db.execute(f"SELECT key FROM documents WHERE {condition} ORDER BY key",
                                list(params)).fetchall()
        return np.array([r[0] for r in rows], np.int64)

    def document_stamp(self) -> tuple[int, int]:
        """``(documents, highest key)``: changes whenever a document is added or removed."""
        return tuple(self._db.execute("SELECT COUNT(*), COALESCE(MAX(key), 0) "
                                      "FROM documents").fetchone())

    def document_texts(self, keys: Iterable[int]) -> list[tuple[int, str]]:
        """``(key, text)`` of the given documents (for derived tables such as the keyword one)."""
        return self._select_in("SELECT key, text FROM documents WHERE key IN ({in})", keys)

    def num_mentions(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM mentions").fetchone()[0]

    def document_ids(self) -> Iterator[str]:
        """Every indexed document id (e.g. to drop them from a resumed run)."""
        for (doc_id,) in self._db.execute("SELECT id FROM documents"):
            yield doc_id

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        return {r[0] for r in self._select_in("SELECT id FROM documents WHERE id IN ({in})", ids)}

    def _corrupt_row(self, doc: str | int, what: str = "document") -> IndexStateError:
        """The error for a row whose checksum fails; ``doc`` is an id or a document key."""
        if isinstance(doc, int):
            found = self._db.execute("SELECT id FROM documents WHERE key = ?", (doc,)).fetchone()
            doc = found[0] if found else f"<key {doc}>"
        return IndexStateError(f"index file is corrupt (row checksum mismatch for {what} "
                               f"{doc!r}): {self.path / CATALOG_NAME}")

    def _document(self, doc_id: str, text: str, metadata: str, checksum: str) -> Document:
        if checksum != row_checksum(doc_id, text, metadata):
            raise self._corrupt_row(doc_id)
        return Document(id=doc_id, text=text, metadata=json.loads(metadata))

    def _check_mention(self, row: int, doc_key: int, start: int, end: int, text: str,
                       label: str | None, checksum: str) -> None:
        if checksum != row_checksum(row, doc_key, start, end, text, label):
            raise self._corrupt_row(doc_key, "a mention of document")

    def documents_by_key(self, keys: Sequence[int]) -> dict[int, Document]:
        if not keys:
            return {}
        q = (f"SELECT key, id, text, metadata, checksum FROM documents "
             f"WHERE key IN ({','.join('?' * len(keys))})")
        docs = {k: self._document(*rest) for k, *rest in self._db.execute(q, list(keys))}
        missing = set(keys) - docs.keys()
        if missing:  # mention rows point at a document the catalog does not hold
            raise IndexStateError(f"index file is corrupt (mentions of a missing document, key "
                                  f"{min(missing)}): {self.path / CATALOG_NAME}")
        return docs

    def get_document(self, doc_id: str) -> Document | None:
        row = self._db.execute("SELECT id, text, metadata, checksum FROM documents WHERE id = ?",
                               (doc_id,)).fetchone()
        return self._document(*row) if row else None

    def mentions_of(self, doc_id: str) -> list[Mention]:
        q = ("SELECT m.row, m.doc_key, m.start, m.end, m.text, m.label, m.checksum "
             "FROM mentions m JOIN documents d ON m.doc_key = d.key WHERE d.id = ? "
             "ORDER BY m.start")
        out = []
        for row in self._db.execute(q, (doc_id,)):
            self._check_mention(*row)
            out.append(Mention(doc_id, row[2], row[3], row[4], row[5]))
        return out

    def mention_rows(self, rows: Sequence[int]) -> dict[int, tuple[int, int, str]]:
        wanted = [int(x) for x in rows]
        out = {}
        for row in self._select_in("SELECT row, doc_key, start, end, text, label, checksum "
                                   "FROM mentions WHERE row IN ({in})", wanted):
            self._check_mention(*row)
            out[row[0]] = (row[2], row[3], row[4])
        lost = set(wanted) - out.keys()
        if lost:  # a row that the vectors and the row -> document map know is gone
            first = min(lost)
            raise self._corrupt_row(int(self.row_doc_keys(np.array([first]))[0]),
                                    f"mention row {first} of document")
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return self.store.search(queries, k)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored mention vectors of the given rows (exact, whatever the ANN index type)."""
        with self.lock:
            return self.store.vectors(rows)

    def document_mentions(self, keys: Sequence[int]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mentions of the given documents, grouped in ``keys`` order: ``(rows, doc_index,
        vectors)``, ``doc_index[i]`` = position in ``keys`` of row ``i``'s document (a document
        without mentions has no row)."""
        position = {int(k): i for i, k in enumerate(keys)}
        found = self._select_in("SELECT doc_key, row FROM mentions WHERE doc_key IN ({in})",
                                position)
        pairs = np.array(sorted((position[key], row) for key, row in found),
                         dtype=np.int64).reshape(-1, 2)
        return pairs[:, 1], pairs[:, 0], self.vectors(pairs[:, 1])

    def document_names(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Name vectors of the given documents' mentions, in :meth:`document_mentions` order:
        ``(doc_index, float32 vectors)``; rows read before come from :class:`NameCache`."""
        dim = self.config.names.dim if self.config.names else 0
        keys = [int(k) for k in keys]
        parts = self.name_cache.get(keys)
        read = {}
        for key, blob, checksum in self._select_in("SELECT doc_key, vectors, checksum FROM "
                                                   "doc_names WHERE doc_key IN ({in})",
                                                   [k for k in keys if k not in parts]):
            if checksum != row_checksum(key, blob.hex()) or len(blob) % (2 * dim):
                raise self._corrupt_row(key, "the name vectors of document")
            read[key] = np.frombuffer(blob, dtype="<f2").reshape(-1, dim)
        self.name_cache.put(read)
        parts.update(read)
        present = [(i, parts[k]) for i, k in enumerate(keys) if k in parts]
        if not present:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return (np.concatenate([np.full(len(p), i, np.int64) for i, p in present]),
                np.concatenate([p for _, p in present]).astype(np.float32))

    @property
    def doc_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(document keys, live, dense vectors)`` in memory (hybrid indexes). Keys ascend
        (documents never reuse a key); a replaced document's slot stays, marked not live."""
        n = self._dense_n
        return self._dense_keys[:n], self._dense_live[:n], self._dense[:n]

    def _load_doc_vectors(self) -> None:
        dim = self.config.dense.dim if self.config.dense else 0
        keys, blobs = [], []
        if self.config.dense:
            for key, blob, checksum in self._db.execute(
                    "SELECT doc_key, vector, checksum FROM doc_vectors ORDER BY doc_key"):
                if checksum != row_checksum(key, blob.hex()) or len(blob) != 4 * dim:
                    raise self._corrupt_row(key, "the dense vector of document")
                keys.append(key)
                blobs.append(blob)
        self._dense_keys = np.array(keys, dtype=np.int64)
        self._dense = (np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, dim)
                       .astype(np.float32) if blobs else np.zeros((0, dim), np.float32))
        self._dense_n = len(keys)
        self._dense_live = np.ones(len(keys), dtype=bool)
