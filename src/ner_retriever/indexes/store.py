"""Vector stores: where mention vectors live and how nearest neighbours are found.

A store writes vectors in segments. A written segment stays invisible until the catalog (the
SQLite database of the index) commits it, which makes every batch all-or-nothing. Row ids are
always the catalog's global mention rows, whatever the backend.

Backends (``STORES``):

* ``faiss`` (embedded default): segments are ``.npy`` files (float32, or float16 when the
  storage is compressed), checksummed in the catalog. The searchable index is built in memory:
  ``flat`` (exact), ``hnsw`` (graph) or ``ivfpq`` (inverted lists + product quantisation,
  8-bit scalar codes, or PQ re-ranked on fp16 copies in memory or on the segments on disk),
  IVF in the span of the vectors (exact there).
  Index types that are slow to build (HNSW, IVF-PQ) are also saved as a FAISS file next to the
  segments (atomic write, SHA-256 and the rows it covers in ``ann.json``), so reopening loads
  it and adds only the segments committed since; a missing or corrupt file is rebuilt from the
  segments, which stay the source of truth.
* ``milvus``: rows in a Milvus collection with primary key = global row; a local path URI
  runs embedded Milvus Lite, ``http://host:19530`` a Milvus server. Rows past the catalog's
  last committed row are crash leftovers: ignored by searches, deleted by the next writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import resource
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from ner_retriever.errors import ConfigError, IndexStateError

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
STORAGES = ("fp32", "fp16", "pq", "sq8", "pq-disk")
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
ANN_FILE = "ann.faiss"
ANN_MANIFEST = "ann.json"


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


def _is_server_uri(uri: str) -> bool:
    return re.match(r"^(https?|tcp|grpc|grpcs|unix)://", uri) is not None


def _record_uri(uri: str | None, index_path: str | Path | None) -> str:
    """Server URIs as given. A Milvus Lite path given by the user is resolved against the
    working directory and recorded relative to the index when inside it (so the index folder
    can move), absolute otherwise; the default is ``milvus.db`` inside the index."""
    if uri is None:
        return "milvus.db"
    if _is_server_uri(uri):
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


def make_store(name: str, folder: Path, dim: int, *, index_type: str = "flat",
               storage: str | None = None, uri: str | None = None,
               params: dict[str, Any] | None = None, writable: bool = False) -> VectorStore:
    try:
        cls = STORES[name]
    except KeyError:
        raise IndexStateError(f"unknown store {name!r}") from None
    if name == "faiss":
        return cls(folder, dim, index_type=index_type, storage=storage, params=params,
                   writable=writable)
    return cls(folder, dim, index_type=index_type, storage=storage, uri=uri, params=params,
               writable=writable)


# -- helpers ---------------------------------------------------------------------------------
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


def _write_file_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _empty_result(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)


def pq_subquantizers(dim: int, limit: int = 100) -> int:
    """Largest divisor of ``dim`` that is at most ``limit`` (bytes per code with 8-bit PQ)."""
    return max(m for m in range(1, min(dim, limit) + 1) if dim % m == 0)


def auto_nlist(rows: int) -> int:
    """About 4 sqrt(n) lists (a power of two), and at least 39 training points per list."""
    target = 4 * math.sqrt(max(rows, 1))
    nlist = 2 ** max(0, round(math.log2(target)))
    while nlist > 1 and rows < 39 * nlist:
        nlist //= 2
    return max(1, min(nlist, 65536))


def span_transform(sample: np.ndarray, tolerance: float = 1e-6) -> faiss.LinearTransform | None:
    """An orthonormal map onto the linear span of ``sample`` (all but ``tolerance`` of its
    energy), or None when that span is nearly the whole space.

    Inner products between vectors inside the span are unchanged, so an index built there is
    as exact as in the full space on fewer dimensions, and every byte of a code budget goes
    to dimensions that carry signal. Mention vectors are the image of a low-dimensional model
    space: the shipped head maps 192-d value vectors to 500-d, so its outputs span 192."""
    dim = sample.shape[1]
    gram = np.zeros((dim, dim))  # float64, accumulated in chunks: no float64 copy of the sample
    for start in range(0, len(sample), 16384):
        chunk = np.asarray(sample[start:start + 16384], dtype=np.float64)
        gram += chunk.T @ chunk
    eigval, eigvec = np.linalg.eigh(gram)  # ascending
    eigval, eigvec = eigval[::-1].clip(min=0), eigvec[:, ::-1]
    total = eigval.sum()
    if total <= 0:
        return None
    d = int(np.searchsorted(np.cumsum(eigval) / total, 1.0 - tolerance) + 1)
    d = min(dim, -(-d // 4) * 4)  # a multiple of 4: PQ sub-quantisers and SIMD kernels
    if d > 0.9 * dim:
        return None
    transform = faiss.LinearTransform(dim, d, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(eigvec[:, :d].T, dtype=np.float32).ravel(),
                               transform.A)
    transform.is_trained = True
    return transform


def faiss_factory(dim: int, index_type: str, storage: str, params: dict[str, Any]) -> str:
    """The ``faiss.index_factory`` string of an index type over ``dim``-d vectors (for ivfpq:
    the index inside the optional span transform and id map, ``params["nlist"]`` resolved)."""
    p = {**DEFAULT_PARAMS, **params}
    if index_type == "flat":
        return "IDMap,Flat" if storage == "fp32" else "IDMap,SQfp16"
    if index_type == "hnsw":
        return f"IDMap,HNSW{int(p['hnsw_m'])},{'Flat' if storage == 'fp32' else 'SQfp16'}"
    if index_type == "ivfpq":
        nlist = int(p["nlist"])
        m = int(p["pq_m"] or pq_subquantizers(dim))
        if storage == "sq8":
            return f"IVF{nlist},SQ8"
        ivfpq = f"IVF{nlist},PQ{m}x{int(p['pq_nbits'])}"
        return f"{ivfpq},Refine(SQfp16)" if storage == "fp16" else ivfpq
    raise ValueError(f"unknown index type {index_type!r}")


def build_faiss_index(dim: int, index_type: str, storage: str, params: dict[str, Any],
                      train: np.ndarray | None = None, rows: int | None = None) -> faiss.Index:
    """An empty FAISS index (inner product) whose ``add_with_ids`` takes global row ids.

    IVF is trained on ``train`` (required); an automatic nlist follows ``rows`` (the rows
    the index will hold, default ``len(train)``), capped so every list gets 39 training rows.
    With ``subspace`` (default) IVF indexes work in the span of the training sample
    (:func:`span_transform`). Plain IVF keeps the ids in its lists; the re-ranked one needs
    an id map."""
    p = {**DEFAULT_PARAMS, **params}
    if index_type != "ivfpq":
        index = faiss.index_factory(dim, faiss_factory(dim, index_type, storage, params),
                                    faiss.METRIC_INNER_PRODUCT)
        if index_type == "hnsw":
            inner = faiss.downcast_index(index.index)
            inner.hnsw.efConstruction = int(p["ef_construction"])
            inner.hnsw.efSearch = int(p["ef_search"])
        return index
    if train is None:
        raise ValueError("ivfpq needs training vectors")
    if p["nlist"] is None:
        nlist = auto_nlist(max(rows or 0, len(train)))
        while nlist > 1 and len(train) < 39 * nlist:
            nlist //= 2
        params = {**params, "nlist": nlist}
    train = np.ascontiguousarray(train, dtype=np.float32)
    transform = span_transform(train) if p["subspace"] else None
    d = dim if transform is None else transform.d_out
    index = inner = faiss.index_factory(d, faiss_factory(d, index_type, storage, params),
                                        faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(inner))
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # the factory's default; slow and not used here
    if storage == "fp16":
        refine_of(inner).k_factor = float(p["refine_factor"])
    if transform is not None:
        index = faiss.IndexPreTransform(transform, index)
    if storage == "fp16":
        index = faiss.IndexIDMap(index)
    index.train(train)
    ivf.nprobe = min(int(p["nprobe"]), ivf.nlist)
    return index


def exact_rerank(queries: np.ndarray, rows: np.ndarray, vectors_of, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Re-score approximate candidates ``rows`` (padded with -1) by the exact inner product
    with their stored vectors and keep the top ``k`` per query. ``vectors_of(sorted_rows)``
    reads the vectors; every distinct row is read once, in row order (disk locality)."""
    queries = np.asarray(queries, dtype=np.float32)
    wanted = np.unique(rows[rows >= 0])
    stored = vectors_of(wanted) if len(wanted) else np.zeros((0, queries.shape[1]), np.float32)
    out_s = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)  # as FAISS pads
    out_r = np.full((len(queries), k), -1, np.int64)
    for i, (query, cand) in enumerate(zip(queries, rows)):
        cand = cand[cand >= 0]
        scores = stored[np.searchsorted(wanted, cand)] @ query
        top = np.argsort(-scores, kind="stable")[:k]
        out_s[i, :len(top)], out_r[i, :len(top)] = scores[top], cand[top]
    return out_s, out_r


def for_scattered_reads(mapped: np.ndarray) -> np.ndarray:
    """Set a memory-mapped ``.npy`` matrix up for scattered row reads (:func:`prefetch_rows`): no
    read-ahead, which would read ~32 pages for every row touched (0.7 s for 400 cold rows)."""
    if isinstance(mapped, np.memmap) and hasattr(mmap, "MADV_RANDOM"):
        mapped._mmap.madvise(mmap.MADV_RANDOM)
    return mapped


def prefetch_rows(mapped: np.ndarray, rows: np.ndarray) -> None:
    """Ask the kernel for the pages of these rows of a memory-mapped matrix, all at once and
    without waiting, so that the disk serves them in parallel when they are read: 400 rows of
    1 KB from a cold 1 GB file took 5 ms instead of 25 ms one fault after another."""
    if isinstance(mapped, np.memmap) and hasattr(mmap, "MADV_WILLNEED") and len(rows):
        width = mapped.strides[0]
        base = mapped.offset % mmap.ALLOCATIONGRANULARITY  # where row 0 sits in the mapping
        starts = base + np.asarray(rows, dtype=np.int64) * width
        pages = starts - starts % mmap.PAGESIZE
        advise, need = mapped._mmap.madvise, mmap.MADV_WILLNEED
        for page, length in zip(pages.tolist(), (starts + width - pages).tolist()):
            advise(need, page, length)


def refine_of(index: faiss.Index) -> faiss.IndexRefine:
    """The re-ranking layer of an ``ivfpq`` + ``fp16`` index, under its id map and transform."""
    index = faiss.downcast_index(index)
    while not isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.index)
    return index


def _ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def index_bytes(index: faiss.Index) -> int:
    """Serialised size of a FAISS index (what it holds in memory, give or take), counted as
    it streams: no second copy, so a 10 GB index can be measured in 24 GiB."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


# -- FAISS -----------------------------------------------------------------------------------
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
    def write_segment(self, first_row: int, vectors: np.ndarray) -> Segment:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        vectors = np.ascontiguousarray(vectors, dtype=self._dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"seg-{first_row:012d}-{len(vectors)}.npy"
        _write_file_atomic(self.folder / name, lambda fh: np.save(fh, vectors))
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

    def load(self, segments: Sequence[Segment]) -> None:
        new = sorted((s for s in segments if s.name not in self._loaded),
                     key=lambda s: s.first_row)
        if not new:
            return
        if self._persistent and not self._tried_file:
            self._tried_file = True
            new = self._load_file(new)
        for seg in new:
            self._add(self._index, seg, self._read_segment(seg))
            self._loaded.add(seg.name)
            self._segments.append(seg)
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
        _fsync_dir(self.folder)
        last = self._segments[-1]
        manifest = {"spec": self._spec(), "sha256": digest,
                    "rows_end": last.first_row + last.rows, "segments": len(self._segments),
                    "last": last.name, "ntotal": self.ntotal, "trained_rows": self._trained_rows}
        text = json.dumps(manifest, indent=1).encode()
        _write_file_atomic(self.folder / ANN_MANIFEST, lambda fh: fh.write(text))
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

    # -- search --------------------------------------------------------------------------------
    def _set_search_params(self, k: int = 0, exhaustive: bool = False) -> None:
        p = self.params
        ivf = _ivf_of(self._index) if self.index_type == "ivfpq" and self.trained else None
        if ivf is not None:
            ivf.nprobe = ivf.nlist if exhaustive else min(int(p["nprobe"]), ivf.nlist)
        if self.index_type == "hnsw":
            inner = faiss.downcast_index(self._index.index)
            inner.hnsw.efSearch = max(int(p["ef_search"]), k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ntotal == 0:
            return _empty_result(len(queries))
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


# -- Milvus ----------------------------------------------------------------------------------
MILVUS_MAX_TOPK = 16384
_MILVUS_INDEX = {"flat": "FLAT", "hnsw": "HNSW", "ivfpq": "IVF_PQ"}


class MilvusStore:
    """Mention vectors in a Milvus collection (Milvus Lite for a local path, or a server).

    Visibility comes from the catalog: only rows below the last committed row are searched."""

    INSERT_BATCH = 5000

    def __init__(self, folder: str | Path, dim: int, *, index_type: str = "flat",
                 storage: str | None = None, uri: str | None = None,
                 params: dict[str, Any] | None = None, writable: bool = False):
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no fork() notes when Ray starts
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise ConfigError("the milvus store needs pymilvus (and milvus-lite for a local "
                              "file): pip install pymilvus milvus-lite") from None
        self.folder = Path(folder)
        self.dim = dim
        self.index_type = index_type
        self.storage = storage or DEFAULT_STORAGE[index_type]
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.collection = str(self.params.get("collection") or "ner_retriever_mentions")
        self.writable = writable
        uri = uri or "milvus.db"
        if not _is_server_uri(uri) and not Path(uri).is_absolute():
            uri = str(self.folder.parent / uri)  # relative to the index folder
        self.uri = uri
        try:
            self._client = MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
        except Exception as exc:  # noqa: BLE001 - lock errors, connection errors, ...
            raise IndexStateError(f"cannot open Milvus at {uri}: {exc} (a Milvus Lite file "
                                  f"can be opened by one process at a time)") from exc
        self._fp16 = self.storage == "fp16"
        self._end = 0          # rows below this are committed (visible)
        self._rows = 0
        self._written_end = 0  # rows this process inserted but may not have committed
        self._checked = False
        if not self._client.has_collection(self.collection):
            self._create(DataType)
        else:
            self._check_schema()
        self._client.load_collection(self.collection)

    def _create(self, DataType) -> None:
        p = self.params
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT16_VECTOR if self._fp16 else
                         DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        if self.index_type == "hnsw":
            extra = {"M": int(p["hnsw_m"]), "efConstruction": int(p["ef_construction"])}
        elif self.index_type == "ivfpq":
            extra = {"nlist": int(p["nlist"] or 1024),
                     "m": int(p["pq_m"] or pq_subquantizers(self.dim)),
                     "nbits": int(p["pq_nbits"])}
        else:
            extra = {}
        index_params.add_index(field_name="vector", index_type=_MILVUS_INDEX[self.index_type],
                               metric_type="IP", params=extra)
        try:
            self._client.create_collection(self.collection, schema=schema,
                                           index_params=index_params)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"Milvus at {self.uri} refused collection {self.collection} "
                              f"({self.index_type}, {self.storage}): {exc}") from exc

    def _check_schema(self) -> None:
        desc = self._client.describe_collection(self.collection)
        for field in desc.get("fields", []):
            if field.get("name") == "vector":
                dim = int(field.get("params", {}).get("dim", self.dim))
                if dim != self.dim:
                    raise IndexStateError(f"Milvus collection {self.collection} holds {dim}-d "
                                          f"vectors, the index expects {self.dim}-d")

    def write_segment(self, first_row: int, vectors: np.ndarray) -> Segment:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        if first_row < self._written_end:  # an earlier write of ours was never committed
            self._client.delete(self.collection, filter=f"row >= {first_row}")
        data = vectors.astype(np.float16) if self._fp16 else vectors
        for start in range(0, len(data), self.INSERT_BATCH):
            chunk = data[start:start + self.INSERT_BATCH]
            self._client.insert(self.collection, [
                {"row": first_row + start + i, "vector": v} for i, v in enumerate(chunk)])
        self._client.flush(self.collection)
        self._written_end = first_row + len(vectors)
        digest = hashlib.sha256(vectors.tobytes()).hexdigest()
        return Segment(f"milvus-{first_row:012d}-{len(vectors)}", first_row, len(vectors), digest)

    def _count(self, end: int) -> int:
        res = self._client.query(self.collection, filter=f"row < {end}",
                                 output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def load(self, segments: Sequence[Segment]) -> None:
        if not segments:
            return
        end = max(s.first_row + s.rows for s in segments)
        if end <= self._end:
            return
        added = sum(s.rows for s in segments if s.first_row >= self._end)
        if not self._checked:  # on open: the collection must hold every committed row
            expected = sum(s.rows for s in segments)
            found = self._count(end)
            if found != expected:
                raise IndexStateError(f"Milvus collection {self.collection} at {self.uri} holds "
                                      f"{found} of the {expected} committed mention rows")
            self._checked = True
            self._rows = expected
        else:
            self._rows += added
        self._end = end

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        end = max((s.first_row + s.rows for s in committed), default=0)
        self._client.delete(self.collection, filter=f"row >= {end}")
        self._client.flush(self.collection)

    def _search_params(self, k: int) -> dict[str, Any]:
        p = self.params
        if self.index_type == "hnsw":
            return {"metric_type": "IP", "params": {"ef": max(int(p["ef_search"]), k)}}
        if self.index_type == "ivfpq":
            return {"metric_type": "IP", "params": {"nprobe": int(p["nprobe"])}}
        return {"metric_type": "IP", "params": {}}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ntotal == 0:
            return _empty_result(len(queries))
        k = max(1, min(k, self.ntotal))
        data = [q.astype(np.float16) if self._fp16 else q for q in queries]
        if k <= MILVUS_MAX_TOPK:
            hits = self._client.search(self.collection, data=data, limit=k,
                                       filter=f"row < {self._end}", output_fields=["row"],
                                       search_params=self._search_params(k))
        else:  # past Milvus' top-k limit: page through with a search iterator
            hits = [self._iterate(q, k) for q in data]
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, found in enumerate(hits):
            found = list(found)[:k]
            if found:
                rows[i, :len(found)] = [h["row"] if "row" in h else h["id"] for h in found]
                scores[i, :len(found)] = [h["distance"] for h in found]
        return scores, rows

    def _iterate(self, query, k: int) -> list[dict]:
        it = self._client.search_iterator(self.collection, data=[query], limit=k,
                                          batch_size=min(MILVUS_MAX_TOPK, k),
                                          filter=f"row < {self._end}", output_fields=["row"],
                                          search_params=self._search_params(MILVUS_MAX_TOPK))
        out: list[dict] = []
        try:
            while len(out) < k:
                batch = it.next()
                if not batch:
                    break
                out.extend(batch)
        finally:
            it.close()
        return out

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = [int(r) for r in np.asarray(rows).ravel()]
        out = np.zeros((len(rows), self.dim), np.float32)
        if not rows:
            return out
        found = {}
        for start in range(0, len(rows), self.INSERT_BATCH):
            for hit in self._client.get(self.collection, ids=rows[start:start + self.INSERT_BATCH],
                                        output_fields=["row", "vector"]):
                vector = hit["vector"]
                if isinstance(vector, (bytes, bytearray)):  # float16 vectors come back as bytes
                    vector = np.frombuffer(vector, dtype=np.float16)
                elif isinstance(vector, list) and vector and isinstance(vector[0], bytes):
                    vector = np.frombuffer(vector[0], dtype=np.float16)
                found[int(hit["row"])] = np.asarray(vector, dtype=np.float32)
        for i, row in enumerate(rows):
            if row not in found or row >= self._end:
                raise IndexStateError(f"Milvus collection {self.collection} at {self.uri} holds "
                                      f"no committed vector for row {row}")
            out[i] = found[row]
        return out

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing twice or a dropped connection
            pass

    @property
    def ntotal(self) -> int:
        return self._rows


STORES = {"faiss": FaissStore, "milvus": MilvusStore}
