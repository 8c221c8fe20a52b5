"""The on-disk format of an index's catalog: file names, the SQLite schema, the config it
records and the row checksums that every read of a result is checked against."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ner_retriever.choices import COMPONENTS

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
CATALOG_NAME = "catalog.sqlite"
LOCK_NAME = "write.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, metadata TEXT NOT NULL,
    checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mentions (
    row INTEGER PRIMARY KEY, doc_key INTEGER NOT NULL, start INTEGER NOT NULL,
    end INTEGER NOT NULL, text TEXT NOT NULL, label TEXT, checksum TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mentions_doc ON mentions(doc_key);
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY, first_row INTEGER NOT NULL, rows INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doc_vectors (
    doc_key INTEGER PRIMARY KEY, vector BLOB NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doc_names (
    doc_key INTEGER PRIMARY KEY, vectors BLOB NOT NULL, checksum TEXT NOT NULL);
"""


class EncoderRecord(BaseModel):
    """The encoder settings a query must be embedded with (``EncoderConfig.identity()``); kept
    here, free of torch, so ``info`` reads an index without loading a model. An index of
    hand-made vectors may record the model alone: a field left None takes the encoder's
    default (``block`` None is the model's default block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    block: int | None = None
    # concatenated after ``block``'s; left out of the file when there are none (older indexes
    # round-trip byte for byte)
    extra_blocks: list[int] | None = Field(default=None, exclude_if=lambda v: not v)
    component: Literal[COMPONENTS] | None = None  # type: ignore[valid-type]
    prepend_bos: bool | None = None
    query_template: str | None = None

    def settings(self) -> dict[str, Any]:
        """The recorded fields, for ``EncoderConfig(**...)``."""
        return self.model_dump(exclude_none=True)


class HeadRecord(BaseModel):
    """The projection head's identity: the checksum of its weights and its ``HeadConfig``
    fields, which ``Retriever.open`` compares with the saved head (the extra keys)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    checksum: str = Field(min_length=1)
    input_dim: int = Field(gt=0)


class DenseRecord(BaseModel):
    """The document-level dense encoder of a hybrid index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    max_length: int = Field(gt=0)  # tokens of a document the dense model reads
    dim: int = Field(gt=0)


class NamesRecord(BaseModel):
    """The model that embeds each mention's text alone (the hybrid ranking's names side)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    dim: int = Field(gt=0)


class IndexConfig(BaseModel):
    """Everything needed to embed queries exactly as the indexed mentions were embedded."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    encoder: EncoderRecord
    raw_dim: int
    dim: int
    head: HeadRecord | None  # None = no head: raw vectors, L2-normalised
    detector: dict[str, Any]  # shape depends on the detector (a union nests others)
    store: str = "faiss"
    created: str = ""
    # Store options (see indexes.base.store_settings); defaults = the original format.
    index_type: str = "flat"
    storage: str = "fp32"
    uri: str | None = None  # milvus: a Milvus Lite path (relative = inside the index) or server
    store_params: dict[str, Any] = {}
    # Hybrid ranking: the document-level dense encoder whose vector every document also gets;
    # None = mention vectors only.
    dense: DenseRecord | None = None
    # Hybrid ranking's third side: each mention's text embedded alone with the dense model,
    # stored per document as float16 and read back for candidates only; None = not stored
    # (indexes made before it, or created with names off).
    names: NamesRecord | None = None
    # Mention vectors are stored scaled by the detector's confidence ** this (0 = unscaled, as
    # in indexes made before it; search.CONFIDENCE_WEIGHT for new ones).
    confidence_weight: float = 0.0
    # What the document-side vectors were computed in (fp32 on a CPU, bf16 / fp16 on a GPU);
    # absent = fp32 (indexes made before it; written only when not fp32, so their config.json
    # stays byte for byte). Queries may run in another precision (Retriever.open).
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="fp32",
                                                       exclude_if=lambda v: v == "fp32")


@dataclass(frozen=True, slots=True)
class StoredMention:
    row: int
    doc_id: str
    start: int
    end: int
    text: str


def row_checksum(*fields: str | int | None) -> str:
    """Digest of a catalog row's content (documents: id, text, metadata; mentions: row,
    doc_key, start, end, text, label). SQLite's page checks cannot see a flipped byte that still
    decodes, so every row read for a result is checked against this."""
    digest = hashlib.blake2b(digest_size=8)
    for value in fields:  # length-prefixed: no two different rows share an encoding
        data = b"\xff" if value is None else str(value).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def has_checksum(db: sqlite3.Connection, table: str) -> bool:
    return "checksum" in {c[1] for c in db.execute(f"PRAGMA table_info({table})")}


def write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add_row_checksums(db: sqlite3.Connection) -> None:
    """Migrates a catalog written before row checksums, in one transaction. The digests
    certify the rows as they are now: damage that happened before cannot be told apart."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in ("documents", "mentions"):
            if not has_checksum(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT NOT NULL DEFAULT ''")
        mention_columns = "row, doc_key, start, end, text, label"
        for table, key, columns in (("documents", "key", "id, text, metadata"),
                                    ("mentions", "row", mention_columns)):
            last = -1
            while rows := db.execute(f"SELECT {key}, {columns} FROM {table} WHERE {key} > ? "
                                     f"ORDER BY {key} LIMIT 1000", (last,)).fetchall():
                db.executemany(f"UPDATE {table} SET checksum = ? WHERE {key} = ?",
                               [(row_checksum(*r[1:]), r[0]) for r in rows])
                last = rows[-1][0]
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
