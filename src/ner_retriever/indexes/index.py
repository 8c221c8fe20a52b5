"""The on-disk index: a SQLite catalog (documents, mentions, committed segments) plus a vector
store. The catalog transaction is the single commit point, so a batch is all-or-nothing and an
interrupted run leaves the last committed state intact."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from pydantic import ValidationError

from ner_retriever.config import IfExists, check_if_exists
from ner_retriever.errors import ConfigError, DuplicateDocumentError, IndexStateError
from ner_retriever.indexes.base import STORES, Segment, VectorStore, file_sha256, make_store
from ner_retriever.types import Document, Mention
from ner_retriever.indexes.catalog import CatalogReads, NameCache
from ner_retriever.indexes.deletion import (CompactStats, compact_index, delete_documents,
                                            drop_documents)
from ner_retriever.indexes.schema import (CATALOG_NAME, CONFIG_NAME, FORMAT_VERSION, LOCK_NAME,
                                          IndexConfig, add_row_checksums, row_checksum,
                                          write_atomic)
from ner_retriever.indexes.schema import _SCHEMA  # noqa: the catalog tables
from ner_retriever.indexes.schema import has_checksum as _has_checksum


class Index(CatalogReads):
    """Open with :meth:`create` or :meth:`open`; writers hold a file lock, readers don't."""

    def __init__(self, path: Path, config: IndexConfig, writable: bool):
        self.path = path
        self.config = config
        self.writable = writable
        # Held by every read that spans several queries and by every commit: readers on the
        # writer's connection must never see a batch that is not committed yet.
        self.lock = threading.RLock()
        self.name_cache = NameCache()
        self._lock: FileLock | None = None
        if writable:
            self._lock = FileLock(str(path / LOCK_NAME))
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                raise IndexStateError(
                    f"index {path} is being written by another process (lock {path / LOCK_NAME})"
                ) from None
        try:
            self._open()
        except BaseException:  # a failed open must not keep the writer lock (or the catalog)
            self.close()
            raise

    def _open(self) -> None:
        path, config, writable = self.path, self.config, self.writable
        catalog = path / CATALOG_NAME
        if not catalog.is_file():
            raise IndexStateError(f"index file missing: {catalog}")
        try:
            self._db = sqlite3.connect(str(catalog), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if writable:
                self._db.executescript(_SCHEMA)
            (status,) = self._db.execute("PRAGMA quick_check").fetchone()
            recorded = self._db.execute(
                "SELECT value FROM meta WHERE key = 'config_sha256'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexStateError(f"index file is corrupt: {catalog}: {exc}") from None
        if status != "ok":
            raise IndexStateError(f"index file is corrupt: {catalog}: {status}")
        if recorded is None:  # an emptied or foreign catalog, not an altered config
            raise IndexStateError(f"index file is corrupt (it records no config): {catalog}")
        if recorded[0] != file_sha256(path / CONFIG_NAME):
            raise IndexStateError(
                f"index file was altered (checksum mismatch): {path / CONFIG_NAME}")
        if not all(_has_checksum(self._db, t) for t in ("documents", "mentions")):
            if not writable:
                raise IndexStateError(
                    f"index {path} was written before catalog rows had checksums: open it once "
                    f"for writing (e.g. `ner-retriever index` with --if-exists skip) to add them, "
                    f"or rebuild it: {catalog}")
            add_row_checksums(self._db)
        if config.store not in STORES:
            raise IndexStateError(f"{path / CONFIG_NAME}: unknown store {config.store!r}")
        self.store: VectorStore = make_store(
            config.store, path / "vectors", config.dim, index_type=config.index_type,
            storage=config.storage, uri=config.uri, params=config.store_params,
            writable=writable)
        if not writable:
            # A reader pins the state committed when it opened (one read transaction, kept
            # until close): its catalog reads then always agree with the vectors loaded below,
            # however another process appends, updates or removes documents meanwhile.
            self._db.execute("BEGIN")
        segments = self.segments()
        if writable:
            self.store.discard_uncommitted(segments)
        self._row_doc = self._load_row_doc()
        self._row_end = len(self._row_doc)
        self.store.load(segments, dead_rows=np.flatnonzero(self._row_doc < 0))
        self._load_doc_vectors()

    def _reload_catalog_state(self) -> None:
        """Reread what is kept in memory from the catalog (after a compaction)."""
        self._row_doc = self._load_row_doc()
        self._row_end = len(self._row_doc)
        self._load_doc_vectors()

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: IndexConfig) -> Index:
        path = Path(path)
        if cls.exists(path):
            raise IndexStateError(f"{path} already holds an index")
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{CATALOG_NAME}.tmp"
        for leftover in (CONFIG_NAME, CATALOG_NAME, f"{CATALOG_NAME}-wal", f"{CATALOG_NAME}-shm",
                         f"{CATALOG_NAME}-journal", tmp.name, f"{tmp.name}-journal"):
            (path / leftover).unlink(missing_ok=True)  # from a creation that was interrupted
        config = config.model_copy(
            update={"created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        index = cls.__new__(cls)
        # The catalog records the config's checksum and appears complete or not at all (built
        # aside, then renamed): a directory without it was interrupted during creation.
        write_atomic(path / CONFIG_NAME, config.model_dump_json(indent=2))
        db = sqlite3.connect(str(tmp))
        db.executescript(_SCHEMA)
        with db:
            db.execute("INSERT INTO meta VALUES ('config_sha256', ?)",
                       (file_sha256(path / CONFIG_NAME),))
        db.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path / CATALOG_NAME)
        index.__init__(path, config, writable=True)
        return index

    @staticmethod
    def exists(path: str | Path) -> bool:
        """True once creation completed (the catalog records the config's checksum)."""
        catalog = Path(path) / CATALOG_NAME
        if not (Path(path) / CONFIG_NAME).is_file() or not catalog.is_file():
            return False
        try:
            db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT 1 FROM meta WHERE key = 'config_sha256'").fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return True  # exists but broken: opening it reports the corruption
        return row is not None

    @classmethod
    def read_config(cls, path: str | Path) -> IndexConfig:
        path = Path(path)
        cfg = path / CONFIG_NAME
        if not path.is_dir():
            raise IndexStateError(f"no index at {path} (no such directory)")
        if not cfg.is_file():
            raise IndexStateError(f"no index at {path} (missing {CONFIG_NAME})")
        try:
            config = IndexConfig.model_validate_json(cfg.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError) as exc:
            raise IndexStateError(f"{cfg}: not a valid index config: {exc}") from None
        if config.format_version != FORMAT_VERSION:
            raise IndexStateError(f"{cfg}: index format {config.format_version} is not supported")
        return config

    @classmethod
    def open(cls, path: str | Path, writable: bool = False) -> Index:
        path = Path(path)
        return cls(path, cls.read_config(path), writable)

    def close(self) -> None:
        """Also undoes a partial open (whatever was opened so far)."""
        self._close_store()
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock is not None:
            self._lock.release()

    def _close_store(self) -> None:
        close = getattr(getattr(self, "store", None), "close", None)
        if close is not None:
            with self.lock:
                close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        rows = self._db.execute(
            "SELECT name, first_row, rows, sha256 FROM segments ORDER BY first_row").fetchall()
        return [Segment(*r) for r in rows]

    def _load_row_doc(self) -> np.ndarray:
        total = sum(seg.rows for seg in self.segments())
        row_doc = np.full(self._next_row(), -1, dtype=np.int64)
        if total:
            data = np.array(self._db.execute("SELECT row, doc_key FROM mentions").fetchall(),
                            dtype=np.int64).reshape(-1, 2)
            row_doc[data[:, 0]] = data[:, 1]
        return row_doc

    def _next_row(self) -> int:
        (value,) = self._db.execute(
            "SELECT COALESCE(MAX(first_row + rows), 0) FROM segments").fetchone()
        return int(value)

    def _mark_dead(self, rows: np.ndarray, keys: np.ndarray) -> None:
        """After a commit that dropped documents (deleted or replaced): unmap their mention
        rows and mark their dense vectors not live, so no ranking returns them (the vectors
        stay in FAISS segments until :meth:`compact`), and let the store and the name cache
        forget them."""
        self.name_cache.drop(keys)
        rows = rows[rows < len(self._row_doc)]
        self._row_doc[rows] = -1
        if self.config.dense is not None and len(keys):
            self._update_doc_vectors(keys, np.zeros(0, np.int64),
                                     np.zeros((0, self.config.dense.dim), np.float32))
        if len(rows):
            self.store.remove(rows)

    def _update_row_doc(self, first_row: int, replaced: np.ndarray) -> None:
        """After a commit: map the new rows (and unmap replaced ones) without rereading every
        mention, so a long bulk load stays linear; the array grows by doubling."""
        end = self._next_row()
        row_doc = self._row_doc
        if end > len(row_doc):
            row_doc = np.full(max(end, 2 * len(row_doc)), -1, dtype=np.int64)
            row_doc[:self._row_end] = self._row_doc[:self._row_end]
        new = np.array(self._db.execute("SELECT row, doc_key FROM mentions WHERE row >= ?",
                                        (first_row,)).fetchall(), dtype=np.int64).reshape(-1, 2)
        row_doc[new[:, 0]] = new[:, 1]
        row_doc[replaced] = -1
        self._row_doc, self._row_end = row_doc, end

    def _update_doc_vectors(self, removed: np.ndarray, keys: np.ndarray,
                            vectors: np.ndarray) -> None:
        """Append after a commit; buffers grow by doubling so a bulk load stays linear."""
        n, end = self._dense_n, self._dense_n + len(keys)
        if len(removed):
            self._dense_live[:n][np.isin(self._dense_keys[:n], removed)] = False
        if end > len(self._dense_keys):
            size = max(end, 2 * len(self._dense_keys), 64)
            grown_keys = np.full(size, -1, dtype=np.int64)
            grown_live = np.zeros(size, dtype=bool)
            grown = np.zeros((size, self._dense.shape[1]), np.float32)
            grown_keys[:n], grown_live[:n], grown[:n] = (
                self._dense_keys[:n], self._dense_live[:n], self._dense[:n])
            self._dense_keys, self._dense_live, self._dense = grown_keys, grown_live, grown
        self._dense_keys[n:end], self._dense_live[n:end], self._dense[n:end] = keys, True, vectors
        self._dense_n = end

    def _keys_of(self, ids: Sequence[str]) -> np.ndarray:
        found = self._select_in("SELECT key FROM documents WHERE id IN ({in})", ids)
        return np.array([r[0] for r in found], dtype=np.int64)

    @property
    def ntotal(self) -> int:
        return self.store.ntotal

    # -- writes --------------------------------------------------------------------------------
    def add(self, docs: Sequence[Document], mentions: Sequence[Sequence[Mention]],
            vectors: Sequence[np.ndarray], if_exists: IfExists = "error",
            doc_vectors: np.ndarray | None = None,
            name_vectors: Sequence[np.ndarray] | None = None) -> int:
        """Commit one batch atomically; returns the number of documents written.

        ``doc_vectors`` (one dense vector per document of ``docs``) is required exactly when
        the index was created for hybrid ranking (``config.dense``), ``name_vectors`` (per
        document, one dense vector per mention) exactly when it stores names
        (``config.names``)."""
        doc_vectors, name_vectors = self._check_vectors(docs, mentions, doc_vectors,
                                                        name_vectors)
        if not self.writable:
            raise IndexStateError(f"index {self.path} was opened read-only")
        check_if_exists(if_exists)
        with self.lock:
            present = self.existing_ids(d.id for d in docs)
            if present and if_exists == "error":
                doc = next(d for d in docs if d.id in present)
                raise DuplicateDocumentError(doc.id, doc.source)
            keep = [i for i, d in enumerate(docs) if not (d.id in present and if_exists == "skip")]
            if not keep:
                return 0
            stacked = [np.asarray(vectors[i], dtype=np.float32).reshape(-1, self.config.dim)
                       for i in keep]
            first_row = self._next_row()
            total = sum(len(v) for v in stacked)
            segment = (self.store.write_segment(first_row, np.concatenate(stacked))
                       if total else None)
            # "skip" keeps the indexed copies; only "update" replaces them.
            replaced = present if if_exists == "update" else set()
            replaced_rows = self._rows_of(sorted(replaced))
            replaced_keys = self._keys_of(sorted(replaced))
            kept_vectors = None if doc_vectors is None else doc_vectors[keep]
            kept_names = None if name_vectors is None else [name_vectors[i] for i in keep]
            new_keys = self._commit(docs, mentions, keep, replaced, first_row, segment,
                                    kept_vectors, kept_names)
            self._mark_dead(replaced_rows, replaced_keys)
            if segment is not None:
                self.store.load([segment])
            self._update_row_doc(first_row, replaced_rows)
            if kept_vectors is not None:
                self._update_doc_vectors(replaced_keys, np.array(new_keys, np.int64),
                                         kept_vectors)
            return len(keep)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents in one commit; returns how many. Ids the index does not hold are
        no error (``Retriever.delete`` lists them), so a retried delete succeeds."""
        return delete_documents(self, ids).deleted

    def compact(self) -> CompactStats:
        """Rewrite the store and catalog without the rows of deleted or replaced documents
        and reclaim their disk space; crash-safe (one commit switches to the new files)."""
        return compact_index(self)

    def _check_vectors(self, docs, mentions, doc_vectors, name_vectors):
        """The document and name vectors of a batch as float32, checked against the config."""
        if (doc_vectors is None) != (self.config.dense is None):
            raise ConfigError(f"index {self.path}: document vectors are "
                              f"{'required' if self.config.dense else 'not used'} here")
        if (name_vectors is None) != (self.config.names is None):
            raise ConfigError(f"index {self.path}: mention name vectors are "
                              f"{'required' if self.config.names else 'not used'} here")
        if doc_vectors is not None:
            doc_vectors = np.asarray(doc_vectors, dtype=np.float32)
            if doc_vectors.shape != (len(docs), self.config.dense.dim):
                raise ConfigError(f"expected {len(docs)} document vectors of "
                                  f"{self.config.dense.dim} dims, got {doc_vectors.shape}")
        if name_vectors is not None:
            name_vectors = [np.asarray(v, dtype=np.float32) for v in name_vectors]
            shapes = [(len(m), self.config.names.dim) for m in mentions]
            if len(name_vectors) != len(docs) or any(
                    v.shape != shape for v, shape in zip(name_vectors, shapes)):
                raise ConfigError(f"expected one {self.config.names.dim}-d name vector per "
                                  f"mention of each of the {len(docs)} documents")
        return doc_vectors, name_vectors

    def _commit(self, docs, mentions, keep, present, first_row, segment,
                doc_vectors: np.ndarray | None = None,
                name_vectors: list[np.ndarray] | None = None) -> list[int]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if present:
                drop_documents(db, list(present))
            row, rows, keys = first_row, [], []
            for i in keep:
                doc = docs[i]
                metadata = json.dumps(doc.metadata, ensure_ascii=False)
                cur = db.execute(
                    "INSERT INTO documents (id, text, metadata, checksum) VALUES (?, ?, ?, ?)",
                    (doc.id, doc.text, metadata, row_checksum(doc.id, doc.text, metadata)))
                key = cur.lastrowid
                keys.append(key)
                for m in mentions[i]:
                    fields = (row, key, m.start, m.end, m.text, m.label)
                    rows.append((*fields, row_checksum(*fields)))
                    row += 1
            db.executemany("INSERT INTO mentions (row, doc_key, start, end, text, label, "
                           "checksum) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            if doc_vectors is not None:
                blobs = [v.astype("<f4").tobytes() for v in doc_vectors]
                db.executemany("INSERT INTO doc_vectors VALUES (?, ?, ?)",
                               [(key, blob, row_checksum(key, blob.hex()))
                                for key, blob in zip(keys, blobs)])
            if name_vectors is not None:
                blobs = [v.astype("<f2").tobytes() for v in name_vectors]
                db.executemany("INSERT INTO doc_names VALUES (?, ?, ?)",
                               [(key, blob, row_checksum(key, blob.hex()))
                                for key, blob in zip(keys, blobs)])
            if segment is not None:
                db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)",
                           (segment.name, segment.first_row, segment.rows, segment.sha256))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return keys
