"""FAISS store: segments are ``.npy`` files (float32, or float16 when the
storage is compressed), checksummed in the catalog. The searchable index is built in memory:
``flat`` (exact), ``hnsw`` (graph) or ``ivfpq`` (inverted lists + product quantisation,
  8-bit scalar codes, or PQ re-ranked on fp16 copies in memory or on the segments on disk),
IVF in the span of the vectors (exact there).
Index types that are slow to build (HNSW, IVF-PQ) are also saved as a FAISS file next to the
segments (atomic write, SHA-256 and the rows it covers in ``ann.json``), so reopening loads
it and adds only the segments committed since; a missing or corrupt file is rebuilt from the
segments, which stay the source of truth.
"""
from __future__ import annotations

import json
import os
import resource
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ner_retriever.errors import IndexStateError
from ner_retriever.indexes.base import (DEFAULT_PARAMS, DEFAULT_STORAGE, Segment, empty_result,
                                        file_sha256, fsync_dir, write_file_atomic)
from ner_retriever.indexes.faiss_build import (build_faiss_index, exact_rerank, for_scattered_reads,
                                               index_bytes, ivf_of, prefetch_rows)

ANN_FILE = "ann.faiss"
ANN_MANIFEST = "ann.json"
COMPACT_SEGMENT_ROWS = 1 << 16  # rows per segment a compaction writes (bounded memory)

class FaissStore:
    """Embedded default: ``.npy`` segments on disk plus an in-memory FAISS index."""

    # Segment maps kept open for pq-disk's reads; each holds a file descriptor, so half the
    # soft limit on open files (and at most a quarter of Linux's default 65,530 maps).
    MAPS_OPEN = max(64, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2, 16384))

    def __init__(self, folder: str | Path, dim: int, verify: bool = True, *,
                 index_type: str = "flat", storage: str | None = None,
                 params: dict[str, Any] | None = None, writable: bool = False):
        self.folder = Path(folder)
        self.dim = dim
        self.verify = verify
        self.index_type = index_type
        self.storage = storage or DEFAULT_STORAGE[index_type]
        self.params = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items()
                                            if k in DEFAULT_PARAMS}}
        self.writable = writable
        self._dtype = np.float32 if self.storage == "fp32" else np.float16
        self._segments: list[Segment] = []      # committed and searchable, in row order
        self._loaded: set[str] = set()
        self._trained_rows: int | None = None   # ivfpq: rows when it was trained
        self._saved_rows = 0                    # rows covered by the ANN file on disk
        self._index = self._fresh_index()
        self._tried_file = False
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()  # segment name -> memory map

    # -- construction of the in-memory index ---------------------------------------------------
    @property
    def _persistent(self) -> bool:
        """Only graph/trained indexes are worth saving; flat ones rebuild from segments fast."""
        return self.index_type in ("hnsw", "ivfpq")

    def _fresh_index(self) -> faiss.Index:
        if self.index_type == "ivfpq":  # exact search until there is enough data to train
            return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        return build_faiss_index(self.dim, self.index_type, self.storage, self.params)

    @property
    def trained(self) -> bool:
        return self.index_type != "ivfpq" or self._trained_rows is not None

    def _spec(self) -> dict[str, Any]:
        return {"index_type": self.index_type, "storage": self.storage, "dim": self.dim,
                "params": {k: self.params[k] for k in sorted(self.params) if k != "save_every"}}

    # -- segments ------------------------------------------------------------------------------
    def write_segment(self, first_row: int, vectors: np.ndarray, tag: str = "") -> Segment:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        vectors = np.ascontiguousarray(vectors, dtype=self._dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"seg-{first_row:012d}-{len(vectors)}{tag}.npy"
        write_file_atomic(self.folder / name, lambda fh: np.save(fh, vectors))
        return Segment(name, first_row, len(vectors), file_sha256(self.folder / name))

    def _read_segment(self, seg: Segment, verify: bool | None = None) -> np.ndarray:
        path = self.folder / seg.name
        if not path.is_file():
            raise IndexStateError(f"index file missing: {path}")
        if (self.verify if verify is None else verify) and file_sha256(path) != seg.sha256:
            raise IndexStateError(f"index file is corrupt (checksum mismatch): {path}")
        try:
            vectors = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise IndexStateError(f"index file is corrupt: {path}: {exc}") from exc
        if vectors.shape != (seg.rows, self.dim):
            raise IndexStateError(f"index file is corrupt (shape {vectors.shape}): {path}")
        return vectors

    def _add(self, index: faiss.Index, seg: Segment, vectors: np.ndarray) -> None:
        ids = np.arange(seg.first_row, seg.first_row + seg.rows, dtype=np.int64)
        for start in range(0, seg.rows, 65536):  # bounded float32 copies of fp16 segments
            chunk = np.ascontiguousarray(vectors[start:start + 65536], dtype=np.float32)
            index.add_with_ids(chunk, ids[start:start + 65536])

    def load(self, segments: Sequence[Segment], dead_rows: np.ndarray | None = None) -> None:
        """``dead_rows`` (rows of deleted documents) stay in the index, filtered out by the
        catalog's row map, until :meth:`rewrite` drops them."""
        new = sorted((s for s in segments if s.name not in self._loaded),
                     key=lambda s: s.first_row)
        if not new:
            return
        if self._persistent and not self._tried_file:
            self._tried_file = True
            new = self._load_file(new)
        for seg in new:
            vectors = self._read_segment(seg)
            self._add(self._index, seg, vectors)
            self._loaded.add(seg.name)
            self._segments.append(seg)
            if not self.writable and len(self._maps) < self.MAPS_OPEN:
                # kept mapped: a compaction that removes the file meanwhile cannot break a
                # reader still pinned to the state it opened
                self._maps[seg.name] = for_scattered_reads(vectors)
        self._segments.sort(key=lambda s: s.first_row)
        if self.index_type == "ivfpq":
            rows = self.ntotal
            p = self.params
            if (self._trained_rows is None and rows >= int(p["train_min"])) or (
                    self._trained_rows is not None and p["nlist"] is None
                    and rows >= int(p["retrain_growth"]) * self._trained_rows):
                self._train_and_rebuild()
        if (self.writable and self._persistent and self.trained
                and self.ntotal - self._saved_rows >= int(self.params["save_every"])):
            self.save()

    def _sample(self, size: int) -> np.ndarray:
        """A seeded sample of committed rows (the same sample whenever the rows are the same)."""
        total = sum(s.rows for s in self._segments)
        rng = np.random.default_rng(0)
        picks = np.sort(rng.choice(total, size=min(size, total), replace=False))
        out, offset, at = [], 0, 0
        for seg in self._segments:
            hi = np.searchsorted(picks, offset + seg.rows)
            if hi > at:
                vectors = self._read_segment(seg, verify=False)
                out.append(np.asarray(vectors[picks[at:hi] - offset], dtype=np.float32))
            at, offset = hi, offset + seg.rows
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _train_and_rebuild(self) -> None:
        train = self._sample(int(self.params["train_size"]))
        index = build_faiss_index(self.dim, self.index_type, self.storage, self.params, train,
                                  rows=self.ntotal)
        for seg in self._segments:
            self._add(index, seg, self._read_segment(seg, verify=False))
        self._index = index
        self._trained_rows = self.ntotal
        if self.writable:
            self.save()

    # -- the saved ANN file --------------------------------------------------------------------
    def _load_file(self, new: list[Segment]) -> list[Segment]:
        """Load ``ann.faiss`` when it matches the committed segments; returns those still to
        add. A stale, foreign or corrupt file is ignored (and replaced by the next save)."""
        manifest_path, path = self.folder / ANN_MANIFEST, self.folder / ANN_FILE
        if self._segments or not manifest_path.is_file() or not path.is_file():
            return new
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return new
        if manifest.get("spec") != self._spec():
            return new
        n = sum(1 for s in new if s.first_row < manifest.get("rows_end", -1))
        if (n == 0 or n != manifest.get("segments") or new[n - 1].name != manifest.get("last")
                or sum(s.rows for s in new[:n]) != manifest.get("ntotal")):
            return new
        if file_sha256(path) != manifest.get("sha256"):
            return new  # corrupt: rebuild from the segments
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            return new
        if index.ntotal != manifest["ntotal"] or index.d != self.dim:
            return new
        self._index = index
        self._trained_rows = manifest.get("trained_rows")
        done = new[:n]
        self._segments.extend(done)
        self._loaded.update(s.name for s in done)
        self._saved_rows = manifest["ntotal"]
        self._set_search_params()
        return new[n:]

    def save(self) -> None:
        """Write the in-memory ANN index atomically, then its manifest (checksum, coverage)."""
        if not (self._persistent and self.trained and self._segments):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / ANN_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self._index, str(tmp))  # streamed: no second copy in memory
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
        fsync_dir(self.folder)
        last = self._segments[-1]
        manifest = {"spec": self._spec(), "sha256": digest,
                    "rows_end": last.first_row + last.rows, "segments": len(self._segments),
                    "last": last.name, "ntotal": self.ntotal, "trained_rows": self._trained_rows}
        text = json.dumps(manifest, indent=1).encode()
        write_file_atomic(self.folder / ANN_MANIFEST, lambda fh: fh.write(text))
        self._saved_rows = self.ntotal

    def close(self) -> None:
        self._maps.clear()
        if self.writable and self._saved_rows != self.ntotal:
            self.save()

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        keep = {seg.name for seg in committed}
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if (path.name.startswith("seg-") or path.name.startswith(".")) \
                    and path.name not in keep:
                path.unlink(missing_ok=True)

    # -- deletion and compaction ---------------------------------------------------------------
    def remove(self, rows: np.ndarray) -> None:
        """Nothing to do: segments are immutable and the in-memory index mirrors them; the
        catalog's row map filters the rows of deleted documents until :meth:`rewrite`."""

    def rewrite(self, live_rows: np.ndarray) -> list[Segment]:
        """Write the vectors of ``live_rows`` (ascending) as new segments numbered 0..n-1,
        not yet committed (names carry a fresh tag, so no committed file is overwritten)."""
        tag, out = f"-c{uuid.uuid4().hex[:8]}", []
        for start in range(0, len(live_rows), COMPACT_SEGMENT_ROWS):
            chunk = live_rows[start:start + COMPACT_SEGMENT_ROWS]
            out.append(self.write_segment(start, self.vectors(chunk), tag))
        return out

    def adopt(self, segments: list[Segment] | None, live_rows: np.ndarray) -> None:
        """After the catalog committed :meth:`rewrite`'s segments: remove the old files and
        search the new ones (the ANN file is rebuilt and saved for them)."""
        if segments is None:
            return
        self._maps.clear()
        for name in (ANN_MANIFEST, ANN_FILE):
            (self.folder / name).unlink(missing_ok=True)
        self.discard_uncommitted(segments)
        if self.folder.is_dir():
            fsync_dir(self.folder)
        self._segments, self._loaded, self._trained_rows, self._saved_rows = [], set(), None, 0
        self._index, self._tried_file = self._fresh_index(), True
        self.load(segments)
        self.save()

    # -- search --------------------------------------------------------------------------------
    def _set_search_params(self, k: int = 0, exhaustive: bool = False) -> None:
        p = self.params
        ivf = ivf_of(self._index) if self.index_type == "ivfpq" and self.trained else None
        if ivf is not None:
            ivf.nprobe = ivf.nlist if exhaustive else min(int(p["nprobe"]), ivf.nlist)
        if self.index_type == "hnsw":
            inner = faiss.downcast_index(self._index.index)
            inner.hnsw.efSearch = max(int(p["ef_search"]), k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ntotal == 0:
            return empty_result(len(queries))
        k = max(1, min(k, self.ntotal))
        on_disk = self.storage == "pq-disk" and self.trained
        fetch = min(self.ntotal, k * int(self.params["refine_factor"])) if on_disk else k
        self._set_search_params(k)
        scores, rows = self._index.search(queries, fetch)
        if self.index_type == "ivfpq" and self.trained and ((rows >= 0).sum(1) < k).any():
            # The probed lists held fewer than k rows: the caller asked for more neighbours
            # than the approximate search reaches, so scan every list.
            self._set_search_params(k, exhaustive=True)
            scores, rows = self._index.search(queries, fetch)
            self._set_search_params(k)
        if on_disk:
            return exact_rerank(queries, rows, self.vectors, k)
        return scores, rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        starts = np.array([s.first_row for s in self._segments], dtype=np.int64)
        where = np.searchsorted(starts, rows, side="right") - 1
        order = np.argsort(where, kind="stable")
        cuts = np.flatnonzero(np.diff(where[order])) + 1
        reads = []
        for picked in np.split(order, cuts) if len(rows) else []:
            i = int(where[picked[0]])
            seg = self._segments[i] if i >= 0 else None
            offsets = rows[picked] - (seg.first_row if seg else 0)
            if seg is None or (offsets >= seg.rows).any():
                raise IndexStateError(f"no committed vector for row {int(rows[picked][0])}")
            mapped = self._mapped(seg)
            prefetch_rows(mapped, offsets)  # every segment's pages requested before any read
            reads.append((picked, mapped, offsets))
        for picked, mapped, offsets in reads:
            out[picked] = mapped[offsets]
        return out

    def _mapped(self, seg: Segment) -> np.ndarray:
        """A segment's memory map, kept open for the next reads (``pq-disk`` reads candidate
        rows on every query); at most ``MAPS_OPEN`` at a time, least recently used first out."""
        mapped = self._maps.pop(seg.name, None)
        if mapped is None:
            mapped = for_scattered_reads(self._read_segment(seg, verify=False))
            while len(self._maps) >= self.MAPS_OPEN:
                self._maps.popitem(last=False)
        self._maps[seg.name] = mapped
        return mapped

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def memory_bytes(self) -> int:
        return index_bytes(self._index)
