"""The keyword constraint (``must=``): an SQLite FTS5 table of the documents' text, in its own
file next to the catalog so that adding one needs no change to the catalog's format.

It is built on first use (so older indexes get one) and brought up to date with the catalog
the reader sees before each lookup (documents added, replaced or deleted since), in one
transaction: a crash leaves the previous, still consistent, table. Matching is by whole words
(FTS5 ``unicode61`` tokens: case-insensitive, diacritics folded); a term of several words must
occur as that phrase."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from ner_retriever.errors import ConfigError, IndexStateError

if TYPE_CHECKING:
    from ner_retriever.indexes.index import Index

LEXICAL_NAME = "lexical.sqlite"
BUSY_TIMEOUT_S = 30.0  # another process may be bringing the table up to date
SYNC_CHUNK = 500  # documents read from the catalog per query while syncing
_SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS doc_text USING fts5(text, "
           "tokenize = 'unicode61 remove_diacritics 2')")


def check_term(term: str) -> str:
    """The term, stripped; a clear error when it holds no word."""
    if not isinstance(term, str) or not term.strip():
        raise ConfigError("must: the keyword is empty")
    if not any(ch.isalnum() for ch in term):
        raise ConfigError(f"must: {term!r} holds no letter or digit to match")
    return term.strip()


def phrase(term: str) -> str:
    """``term`` as one FTS5 phrase (quotes doubled), so no FTS5 syntax in it is run."""
    return '"' + term.replace('"', '""') + '"'


class LexicalIndex:
    """The FTS5 table of one open :class:`Index`."""

    def __init__(self, index: Index):
        self.index = index
        self.path = index.path / LEXICAL_NAME
        self._synced: tuple[int, int] | None = None  # catalog (count, max key) last synced

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise IndexStateError(f"index {self.index.path}: cannot open the keyword index "
                                  f"{self.path}: {exc}") from None
        return db

    def keys(self, term: str) -> np.ndarray:
        """Sorted keys of the documents containing ``term``."""
        term = check_term(term)
        db = self._connect()
        try:
            self._sync(db)
            rows = db.execute("SELECT rowid FROM doc_text WHERE doc_text MATCH ? "
                              "ORDER BY rowid", (phrase(term),)).fetchall()
        except sqlite3.Error as exc:
            raise IndexStateError(f"index {self.index.path}: keyword index {self.path}: "
                                  f"{exc}") from None
        finally:
            db.close()
        return np.array([r[0] for r in rows], np.int64)

    def _sync(self, db: sqlite3.Connection) -> None:
        """Add the catalog's documents the table lacks, drop those the catalog lost."""
        with self.index.lock:
            stamp = self.index.document_stamp()
            if stamp == self._synced:
                return
            wanted = set(self.index.select_keys("1").tolist())
            db.execute("BEGIN IMMEDIATE")
            try:
                have = {r[0] for r in db.execute("SELECT rowid FROM doc_text")}
                gone = sorted(have - wanted)
                db.executemany("DELETE FROM doc_text WHERE rowid = ?", [(k,) for k in gone])
                new = sorted(wanted - have)
                for i in range(0, len(new), SYNC_CHUNK):
                    rows = self.index.document_texts(new[i:i + SYNC_CHUNK])
                    db.executemany("INSERT INTO doc_text (rowid, text) VALUES (?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._synced = tuple(stamp)
