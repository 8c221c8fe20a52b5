"""Building FAISS indexes: factory strings, PQ/IVF sizing, the span transform, exact re-ranking
and the page-cache helpers used when re-ranking reads segments from disk."""
from __future__ import annotations

import math
import mmap
from typing import Any

import faiss
import numpy as np

from ner_retriever.indexes.base import DEFAULT_PARAMS

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
        starts = base + np.unique(np.asarray(rows, dtype=np.int64)) * width
        pages = starts - starts % mmap.PAGESIZE
        ends = np.maximum.accumulate(starts + width)
        # one call per run of touching pages (a document's mentions are consecutive rows)
        first = np.flatnonzero(np.r_[True, pages[1:] > ends[:-1]])
        last = np.r_[first[1:] - 1, len(pages) - 1]
        advise, need = mapped._mmap.madvise, mmap.MADV_WILLNEED
        for page, end in zip(pages[first].tolist(), ends[last].tolist()):
            advise(need, page, end - page)


def refine_of(index: faiss.Index) -> faiss.IndexRefine:
    """The re-ranking layer of an ``ivfpq`` + ``fp16`` index, under its id map and transform."""
    index = faiss.downcast_index(index)
    while not isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.index)
    return index


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
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
