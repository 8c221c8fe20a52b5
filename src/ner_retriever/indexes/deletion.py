"""Deleting documents and compacting an index, with the crash guarantees of ``add``.

Delete: one catalog transaction drops the documents and every row derived from them
(:data:`DOCUMENT_TABLES`); their mention vectors stay in the store's segments as tombstones,
unmapped in the row map, so the ranking skips them exactly as it skips the rows of a document
replaced by ``add(..., if_exists="update")``. Milvus then deletes them from its collection
(after the commit; a crash in between leaves rows that the next writer deletes).

Compact: the store writes the live vectors as new segments, renumbered 0..n-1 (FAISS; Milvus
keeps its rows and compacts its collection in place); one catalog transaction renumbers the
mention rows and swaps the segment list; only then are the old files removed and the catalog
vacuumed. A kill before the commit leaves the old state (the new files are uncommitted
leftovers, removed by the next writer), after it the new one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.indexes.catalog import IN_LIST_CHUNK, CatalogReads
from ner_retriever.indexes.schema import row_checksum

# Tables whose rows belong to one document (column ``doc_key``): a deleted or replaced
# document takes them along. A new per-document table must be listed here.
DOCUMENT_TABLES = ("mentions", "doc_vectors", "doc_names")
RENUMBER_CHUNK = 10_000  # mention rows read and renumbered per statement batch


@dataclass(frozen=True, slots=True)
class DeleteStats:
    """What a delete did: documents removed, and the requested ids the index did not hold
    (not an error: deleting is idempotent, so a retried request succeeds)."""

    deleted: int
    missing: list[str]

    def to_dict(self) -> dict:
        return {"deleted": self.deleted, "missing": list(self.missing)}


@dataclass(frozen=True, slots=True)
class CompactStats:
    """Disk use of the index folder before and after, and the mention rows dropped."""

    bytes_before: int
    bytes_after: int
    rows_before: int
    rows_after: int
    documents: int
    seconds: float

    def to_dict(self) -> dict:
        return {"bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "rows_before": self.rows_before, "rows_after": self.rows_after,
                "documents": self.documents, "seconds": round(self.seconds, 3)}


def drop_documents(db: sqlite3.Connection, ids: list[str]) -> None:
    """Delete documents and their derived rows, inside the caller's transaction (the one
    implementation shared by delete and by ``add``'s update)."""
    marks = ",".join("?" * len(ids))
    for table in DOCUMENT_TABLES:
        db.execute(f"DELETE FROM {table} WHERE doc_key IN "
                   f"(SELECT key FROM documents WHERE id IN ({marks}))", ids)
    db.execute(f"DELETE FROM documents WHERE id IN ({marks})", ids)


def check_ids(ids: Iterable[str]) -> list[str]:
    """The ids to delete, once each in the given order; a bare string is refused (it would be
    taken letter by letter)."""
    if isinstance(ids, (str, bytes)):
        raise ConfigError(f"delete takes a list of document ids, not one string ({ids!r}): "
                          f"pass [{ids!r}]")
    out = list(dict.fromkeys(ids))
    for doc_id in out:
        if not isinstance(doc_id, str) or not doc_id:
            raise ConfigError(f"document ids must be non-empty strings, got {doc_id!r}")
    return out


def _writable(index: CatalogReads, verb: str) -> None:
    if not index.writable:
        raise IndexStateError(f"index {index.path} was opened read-only: cannot {verb}")


def delete_documents(index: CatalogReads, ids: Iterable[str]) -> DeleteStats:
    """Remove documents in one commit; searches, reads and reopens never see them again."""
    ids = check_ids(ids)
    _writable(index, "delete")
    with index.lock:
        found = index.existing_ids(ids)
        present, missing = sorted(found), [i for i in ids if i not in found]
        if not present:
            return DeleteStats(0, missing)
        rows, keys = index._rows_of(present), index._keys_of(present)
        db = index._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(present), IN_LIST_CHUNK):  # under SQLite's limit
                drop_documents(db, present[start:start + IN_LIST_CHUNK])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        index._mark_dead(rows, keys)
        return DeleteStats(len(present), missing)


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (the index folder: catalog, WAL, segments, ANN)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _renumber(index: CatalogReads) -> None:
    """Give the mention rows the numbers 0..n-1 in their order (inside the caller's
    transaction). A row only ever moves down, onto a number no unmoved row holds."""
    db, last, new = index._db, -1, 0
    while rows := db.execute("SELECT row, doc_key, start, end, text, label, checksum FROM "
                             "mentions WHERE row > ? ORDER BY row LIMIT ?",
                             (last, RENUMBER_CHUNK)).fetchall():
        updates = []
        for row in rows:
            index._check_mention(*row)  # a damaged row must not be certified afresh
            if row[0] != new:
                fields = (new, *row[1:6])
                updates.append((new, row_checksum(*fields), row[0]))
            new += 1
        db.executemany("UPDATE mentions SET row = ?, checksum = ? WHERE row = ?", updates)
        last = rows[-1][0]


def compact_index(index: CatalogReads) -> CompactStats:
    """Rewrite the store and catalog without dead rows, then reclaim their disk space."""
    _writable(index, "compact")
    started = time.perf_counter()
    with index.lock:
        before = folder_bytes(index.path)
        db = index._db
        live = np.array([r[0] for r in db.execute("SELECT row FROM mentions ORDER BY row")],
                        dtype=np.int64)
        rows_before = sum(s.rows for s in index.segments())
        segments = index.store.rewrite(live)
        db.execute("BEGIN IMMEDIATE")
        try:
            if segments is not None:
                _renumber(index)
                db.execute("DELETE FROM segments")
                db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?)",
                               [(s.name, s.first_row, s.rows, s.sha256) for s in segments])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        index.store.adopt(segments, live)
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index._reload_catalog_state()
        return CompactStats(before, folder_bytes(index.path), rows_before,
                            sum(s.rows for s in index.segments()) if segments is not None
                            else len(live), len(index), time.perf_counter() - started)
