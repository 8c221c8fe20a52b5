"""What every vector store shares: segments, the store protocol, the settings and the registry.

A store writes vectors in segments. A written segment stays invisible until the catalog (the
SQLite database of the index) commits it, which makes every batch all-or-nothing. Row ids are
always the catalog's global mention rows, whatever the backend. Backends (``STORES``):
``faiss`` (embedded default, :mod:`ner_retriever.indexes.faiss`) and ``milvus``
(:mod:`ner_retriever.indexes.milvus`, an optional extra, imported only when used).
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ner_retriever.choices import INDEX_TYPES
from ner_retriever.errors import ConfigError, IndexStateError


# Storage used when none is given, per index type.
DEFAULT_STORAGE = {"flat": "fp32", "hnsw": "fp16", "ivfpq": "pq"}
# ivfpq + sq8 = inverted lists of 8-bit scalar codes instead of PQ codes;
# ivfpq + fp16 = IVF-PQ candidates re-ranked with fp16 copies of the vectors (IndexRefine);
# ivfpq + pq-disk = the same re-ranking, but on the fp16 segments the store keeps on disk
# anyway: memory holds only the PQ codes, each query reads refine_factor * k rows.
VALID_STORAGE = {"flat": ("fp32", "fp16"), "hnsw": ("fp32", "fp16"),
                 "ivfpq": ("pq", "sq8", "fp16", "pq-disk")}

# Tunables; any of them can be overridden per index (recorded in the index config).
DEFAULT_PARAMS: dict[str, Any] = {
    "hnsw_m": 32,             # graph degree
    "ef_construction": 80,
    "ef_search": 128,         # raised to k when k is larger
    "nlist": None,            # IVF lists; None = 4 * sqrt(rows at training), power of two
    "pq_m": None,             # PQ sub-quantisers; None = largest divisor of dim <= 100
    "pq_nbits": 8,
    "nprobe": 32,
    "refine_factor": 4,       # ivfpq + fp16/pq-disk: candidates re-ranked = refine_factor * k
    "train_min": 50_000,      # ivfpq: exact search until this many rows, then train
    "train_size": 200_000,    # ivfpq: training sample (seeded, from the committed rows)
    "retrain_growth": 8,      # ivfpq: retrain when the index grew this much since training
    "save_every": 1_000_000,  # rows added before the ANN file is saved again (and on close)
    "subspace": True,         # ivfpq: search in the span of the training sample (exact there)
}


@dataclass(frozen=True, slots=True)
class Segment:
    """A block of consecutive mention rows, as recorded in the catalog."""

    name: str
    first_row: int
    rows: int
    sha256: str


class VectorStore(Protocol):
    """The part of an index that holds vectors; backends implement only this."""

    def write_segment(self, first_row: int, vectors: np.ndarray) -> Segment:
        """Persist vectors durably, not yet searchable."""
        ...

    def load(self, segments: Sequence[Segment], dead_rows: np.ndarray | None = None) -> None:
        """Make committed segments searchable (called on open and after each commit).
        ``dead_rows``, on open: committed rows whose documents the catalog has dropped since
        (a store that deletes rows may still hold some of them after a crash)."""
        ...

    def remove(self, rows: np.ndarray) -> None:
        """Forget committed rows whose documents the catalog dropped (delete, update); called
        after that commit, idempotent. The ranking never returns them either way (the row map
        has no document for them)."""
        ...

    def rewrite(self, live_rows: np.ndarray) -> list[Segment] | None:
        """Compaction, before the catalog commits: new, uncommitted segments holding the
        vectors of ``live_rows`` (ascending) renumbered 0..n-1; or None where the store
        reclaims the space in place and rows keep their numbers."""
        ...

    def adopt(self, segments: list[Segment] | None, live_rows: np.ndarray) -> None:
        """Compaction, after the catalog committed :meth:`rewrite`'s result: drop the old
        files and search the new state."""
        ...

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        """Remove segments a crashed writer left behind."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: ``(scores, rows)``, rows padded with -1."""
        ...

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of committed rows, ``(len(rows), dim)`` float32 (exact scores for
        candidates that an approximate search did not return, e.g. in hybrid ranking)."""
        ...

    def close(self) -> None:
        """Persist what is worth keeping (writers) and release resources."""
        ...

    @property
    def ntotal(self) -> int: ...


# -- settings --------------------------------------------------------------------------------
def store_settings(store: str = "faiss", index_type: str = "flat", storage: str | None = None,
                   uri: str | None = None, params: dict[str, Any] | None = None,
                   index_path: str | Path | None = None) -> dict[str, Any]:
    """Validate store options and fill defaults; the result is recorded in the index config."""
    if store not in STORES:
        raise ConfigError(f"unknown store {store!r}; choose one of {', '.join(STORES)}")
    if index_type not in INDEX_TYPES:
        raise ConfigError(f"unknown index type {index_type!r}; choose one of "
                          f"{', '.join(INDEX_TYPES)}")
    if storage is None:  # Milvus Lite has no fp16 vectors: plain floats unless asked
        storage = "fp32" if store == "milvus" and index_type != "ivfpq" else \
            DEFAULT_STORAGE[index_type]
    if storage not in VALID_STORAGE[index_type]:
        raise ConfigError(f"index type {index_type} supports storage "
                          f"{' or '.join(VALID_STORAGE[index_type])}, not {storage!r}")
    params = dict(params or {})
    unknown = set(params) - set(DEFAULT_PARAMS) - {"collection"}
    if unknown:
        raise ConfigError(f"unknown store parameters: {', '.join(sorted(unknown))}")
    if store == "faiss":
        if uri is not None:
            raise ConfigError("--uri is for the milvus store; the faiss store lives in the index")
    else:
        if index_type == "ivfpq" and storage != "pq":
            raise ConfigError("the milvus store supports ivfpq with pq storage only (Milvus "
                              "re-ranks with its own refine settings)")
        uri = _record_uri(uri, index_path)
        params.setdefault("collection", f"ner_retriever_{uuid.uuid4().hex[:12]}")
    return {"store": store, "index_type": index_type, "storage": storage, "uri": uri,
            "store_params": params}


def is_server_uri(uri: str) -> bool:
    return re.match(r"^(https?|tcp|grpc|grpcs|unix)://", uri) is not None


def _record_uri(uri: str | None, index_path: str | Path | None) -> str:
    """Server URIs as given. A Milvus Lite path given by the user is resolved against the
    working directory and recorded relative to the index when inside it (so the index folder
    can move), absolute otherwise; the default is ``milvus.db`` inside the index."""
    if uri is None:
        return "milvus.db"
    if is_server_uri(uri):
        return uri
    absolute = Path(uri).expanduser().resolve()
    if index_path is not None and _inside(absolute, Path(index_path)):
        return str(absolute.relative_to(Path(index_path).resolve()))
    return str(absolute)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# Store name -> (module, class). Resolved on use, so that opening a faiss index never imports
# pymilvus (an optional extra) and the backend modules can import this one.
STORES = {"faiss": ("ner_retriever.indexes.faiss", "FaissStore"),
          "milvus": ("ner_retriever.indexes.milvus", "MilvusStore")}


def make_store(name: str, folder: Path, dim: int, *, index_type: str = "flat",
               storage: str | None = None, uri: str | None = None,
               params: dict[str, Any] | None = None, writable: bool = False) -> VectorStore:
    try:
        module, class_name = STORES[name]
    except KeyError:
        raise IndexStateError(f"unknown store {name!r}") from None
    cls = getattr(import_module(module), class_name)
    if name == "faiss":
        return cls(folder, dim, index_type=index_type, storage=storage, params=params,
                   writable=writable)
    return cls(folder, dim, index_type=index_type, storage=storage, uri=uri, params=params,
               writable=writable)


# -- helpers ---------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def empty_result(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)


