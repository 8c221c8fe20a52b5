"""Vector stores: where mention vectors live and how nearest neighbours are found.

A store writes vectors in segments. A written segment stays invisible until the catalog (the
SQLite database of the index) commits it, which makes every batch all-or-nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from ner_retriever.errors import IndexStateError


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

    def load(self, segments: Sequence[Segment]) -> None:
        """Make committed segments searchable (called on open and after each commit)."""
        ...

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        """Remove segments a crashed writer left behind."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: ``(scores, rows)``, rows padded with -1."""
        ...

    @property
    def ntotal(self) -> int: ...


def _fsync_dir(path: Path) -> None:
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


class FaissStore:
    """Embedded default: float32 ``.npy`` segments on disk, exact inner-product search (FAISS)."""

    def __init__(self, folder: str | Path, dim: int, verify: bool = True):
        self.folder = Path(folder)
        self.dim = dim
        self.verify = verify
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._loaded: set[str] = set()

    def write_segment(self, first_row: int, vectors: np.ndarray) -> Segment:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"seg-{first_row:012d}-{len(vectors)}.npy"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)
        _fsync_dir(self.folder)
        return Segment(name, first_row, len(vectors), file_sha256(self.folder / name))

    def load(self, segments: Sequence[Segment]) -> None:
        for seg in segments:
            if seg.name in self._loaded:
                continue
            path = self.folder / seg.name
            if not path.is_file():
                raise IndexStateError(f"index file missing: {path}")
            if self.verify and file_sha256(path) != seg.sha256:
                raise IndexStateError(f"index file is corrupt (checksum mismatch): {path}")
            try:
                vectors = np.load(path, mmap_mode="r")
            except ValueError as exc:
                raise IndexStateError(f"index file is corrupt: {path}: {exc}") from exc
            if vectors.shape != (seg.rows, self.dim):
                raise IndexStateError(f"index file is corrupt (shape {vectors.shape}): {path}")
            ids = np.arange(seg.first_row, seg.first_row + seg.rows, dtype=np.int64)
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            self._loaded.add(seg.name)

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        keep = {seg.name for seg in committed}
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        if self.ntotal == 0:
            return (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        return self._index.search(queries, k)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)


STORES = {"faiss": FaissStore}
