"""Search at scale: FAISS index types on N 500-d mention vectors (the store's own builder).

Usage (figures in docs/SCALE.md):
    NER_RETRIEVER_CACHE=/tmp/nrcache PYTHONPATH=src python benchmarks/scale_search.py \\
        --n 1000000 --out /tmp/scale [--types flat-fp32,flat-fp16,hnsw-fp16,ivfpq-pq,ivfpq-fp16]
    # R-Precision per index type on Few-NERD INTER test gold mentions (raw 192-d vectors):
    ... python benchmarks/scale_search.py --rprecision

Vectors. Real mention vectors are the gold mentions of the Few-NERD INTER test sample (5,000
sentences, seed 0, 10,038 mentions) as the shipped default index stores them: SmolLM2-135M
block 22 value vectors (192-d, from the training cache) through the shipped head (500-d).
Two generators extend them to N rows (``--generator``):

* ``model`` (default): perturb in the encoder's space, then apply the head, as real vectors
  are made. Row i is ``head(a * v[p] + (1 - a) * v[q] + 0.2 * s * g)`` with p, q random real
  mentions, a ~ U(0.5, 1), g standard normal (192-d) and s the mean per-dimension scale of
  the real vectors; cosine to the main parent ~0.88, no duplicates. Like real vectors, the
  rows span the head's 192-d image inside the 500-d output space.
* ``output`` (the first 1M/10M runs in docs/SCALE.md, which used block 10 and a seeded random
  head): ``normalize(a * h[p] + (1 - a) * h[q] + 0.5 * g / sqrt(500))`` on the 500-d outputs.
  The isotropic 500-d noise makes the set full rank, which no head output can be.

Queries: the 16 test-type descriptions through the same encoder and head, plus 184 rows
generated the same way (not in the set).

Each index type runs in its own process (peak RSS per type) on the memory-mapped vectors:
build time (training + adding), serialized index bytes per mention, single-query latency
p50/p95 at k=100 (2 threads), batch queries/s, recall@100 against exact inner product.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BIG_TEST = DATA / "fewnerd" / "inter_bio_structshot" / "big_test.txt"
DIM = 500
K = 100
N_QUERIES = 200
CHUNK = 65536
SETTINGS = {  # name -> (index_type, storage, params, search sweeps)
    "flat-fp32": ("flat", "fp32", {}, [{}]),
    "flat-fp16": ("flat", "fp16", {}, [{}]),
    "hnsw-fp16": ("hnsw", "fp16", {"hnsw_m": 32, "ef_construction": 80},
                  [{"ef_search": 128}, {"ef_search": 256}, {"ef_search": 512}]),
    "hnsw-fp32": ("hnsw", "fp32", {"hnsw_m": 32, "ef_construction": 80},
                  [{"ef_search": 128}, {"ef_search": 256}]),
    # nlist 1024 and a 100k training sample keep k-means within minutes on 2 shared cores;
    # the store's default (nlist = 4 sqrt(n), 200k sample) would pick 4096 lists at 1M.
    # The store's default subspace=True: on head outputs IVF works in their 192-d span.
    "ivfpq-pq": ("ivfpq", "pq", {"nlist": 1024, "train_size": 100_000},
                 [{"nprobe": 16}, {"nprobe": 64}]),
    "ivfpq-sq8": ("ivfpq", "sq8", {"nlist": 1024, "train_size": 100_000},
                  [{"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}]),
    "ivfpq-fp16": ("ivfpq", "fp16", {"nlist": 1024, "train_size": 100_000},
                   [{"nprobe": 8, "refine_factor": 4}, {"nprobe": 12, "refine_factor": 4},
                    {"nprobe": 16, "refine_factor": 4}, {"nprobe": 64, "refine_factor": 8}]),
    # PQ codes in memory, candidates re-ranked on the fp16 vectors on disk (the store's
    # segments; here one fp16 copy of the set): latency with the file in the page cache, and
    # "cold", with the file's pages dropped from the cache before every query.
    "ivfpq-pq-disk": ("ivfpq", "pq-disk", {"nlist": 1024, "train_size": 100_000},
                      [{"nprobe": 8, "refine_factor": 4}, {"nprobe": 12, "refine_factor": 4},
                       {"nprobe": 16, "refine_factor": 4}]),
    # The same IVF-PQ in the full 500 dimensions (what the store did before `subspace`).
    "ivfpq-pq-full": ("ivfpq", "pq", {"nlist": 1024, "train_size": 100_000,
                                      "subspace": False}, [{"nprobe": 16}, {"nprobe": 64}]),
    # PQ with 10-bit codes: 96 x 10 bits = 120 bytes, the most that fits 128 with the row id.
    "ivfpq-pq10": ("ivfpq", "pq", {"nlist": 1024, "train_size": 100_000, "pq_nbits": 10},
                   [{"nprobe": 16}, {"nprobe": 64}]),
}


def normalize(x: np.ndarray) -> np.ndarray:
    # Not ner_retriever.models.head.normalize: importing it loads torch into a process whose peak
    # memory is one of the measured figures.
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def real_mentions(block: int | None = None):
    """Few-NERD INTER test gold mentions (cached by ner_retriever.training.mentions) and the encoder
    (the shipped default settings unless ``block`` is given)."""
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.training.mentions import extract_mentions

    encoder = TransformerEncoder(EncoderConfig() if block is None else EncoderConfig(block=block))
    return encoder, extract_mentions(BIG_TEST, encoder, max_sentences=5000, seed=0,
                                     progress=False)


def type_queries(encoder, ms) -> tuple[list[str], np.ndarray]:
    """Raw query vectors (mean over a type's descriptions), the 'other' types left out."""
    from ner_retriever.evaluation.descriptions import is_other_tag
    from ner_retriever.training.validation import encode_descriptions, load_descriptions

    types = sorted(t for t in set(ms.labels.tolist()) if not is_other_tag(t))
    raw = encode_descriptions(encoder, load_descriptions("fewnerd", types))
    return types, raw


def random_head(input_dim: int):
    """The ``output`` generator's head: the architecture with a seeded random init."""
    import torch

    from ner_retriever.models.head import HeadConfig, ProjectionHead

    torch.manual_seed(0)
    return ProjectionHead(HeadConfig(input_dim=input_dim)).eval()


class Generator:
    """Seeded synthetic mention vectors around the real ones (see the module docstring)."""

    def __init__(self, kind: str):
        from ner_retriever.models.shipped import packaged_head

        self.kind = kind
        self.encoder, self.ms = real_mentions(None if kind == "model" else 10)
        ms = self.ms
        self.raw = ms.vectors
        self.head = (packaged_head(self.encoder.config) if kind == "model"
                     else random_head(ms.vectors.shape[1]))
        self.base = self.head.project(self.raw)
        self.scale = float(np.linalg.norm(self.raw, axis=1).mean() / math.sqrt(self.raw.shape[1]))
        self.types, self.raw_queries = type_queries(self.encoder, ms)
        self.type_queries = normalize(np.stack(
            [self.head.project_queries(self.raw_queries[t]).mean(0) for t in self.types]))

    def rows(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        p, q = rng.integers(0, len(self.raw), n), rng.integers(0, len(self.raw), n)
        a = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
        if self.kind == "model":
            g = rng.standard_normal((n, self.raw.shape[1]), dtype=np.float32)
            return normalize(self.head.project(a * self.raw[p] + (1 - a) * self.raw[q]
                                               + 0.2 * self.scale * g))
        noise = rng.standard_normal((n, DIM), dtype=np.float32) * (0.5 / math.sqrt(DIM))
        return normalize(a * self.base[p] + (1 - a) * self.base[q] + noise)


def prepare(n: int, out: Path, generator: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "meta.json").is_file():
        meta = json.loads((out / "meta.json").read_text())
        if meta["n"] == n and meta.get("generator", "output") == generator:
            return
    gen = Generator(generator)
    queries = np.concatenate([gen.type_queries,
                              gen.rows(N_QUERIES - len(gen.types), seed=10 ** 6)])
    vectors = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float32,
                                        shape=(n, DIM))
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        vectors[start:stop] = gen.rows(stop - start, seed=start)
    vectors.flush()
    gen_s = time.perf_counter() - t0
    check = gen.rows(5000, seed=2 ** 31)
    # Exact top-K (inner product over float32) as ground truth, chunk by chunk.
    import faiss

    t0 = time.perf_counter()
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.full((len(queries), K), -1, np.int64)
    for start in range(0, n, 262144):
        block = np.ascontiguousarray(vectors[start:start + 262144])
        flat = faiss.IndexFlatIP(DIM)
        flat.add(block)
        s, i = flat.search(queries, K)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, i + start], axis=1)
        order = np.argsort(-s_all, axis=1, kind="stable")[:, :K]
        best_s = np.take_along_axis(s_all, order, 1)
        best_i = np.take_along_axis(i_all, order, 1)
    np.save(out / "queries.npy", queries)
    np.save(out / "truth.npy", best_i)
    singular = np.linalg.svd(check, compute_uv=False) ** 2
    (out / "meta.json").write_text(json.dumps({
        "n": n, "dim": DIM, "generator": generator, "real_mentions": int(len(gen.raw)),
        "type_queries": len(gen.types),
        "rank_99.9999%": int(np.searchsorted(np.cumsum(singular) / singular.sum(), 1 - 1e-6) + 1),
        "generate_s": round(gen_s, 1), "exact_truth_s": round(time.perf_counter() - t0, 1)}))


def fp16_copy(out: Path, vectors: np.ndarray) -> Path:
    """The vectors as the store's segments hold them for compressed storage (float16)."""
    path = out / f"vectors-fp16-{len(vectors)}.npy"
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        copy = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=vectors.shape)
        for start in range(0, len(vectors), CHUNK):
            copy[start:start + CHUNK] = vectors[start:start + CHUNK]
        copy.flush()
        del copy
        os.replace(tmp, path)
    return path


def warm_page_cache(path: Path) -> None:
    buffer = bytearray(1 << 24)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buffer):
            pass


def evict(mapped: np.memmap) -> None:
    """Drop a memory-mapped file's pages from this process and from the page cache."""
    mapped._mmap.madvise(mmap.MADV_DONTNEED)  # mapped pages are exempt from fadvise
    fd = os.open(mapped.filename, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def latencies(search, queries: np.ndarray, cold: np.memmap | None = None) -> list[float]:
    """Single-query latencies in ms; with ``cold``, that file's pages are evicted before
    every query (each query then reads its rows from disk)."""
    lat = []
    for q in queries:
        if cold is not None:
            evict(cold)
        t = time.perf_counter()
        search(q[None], K)
        lat.append((time.perf_counter() - t) * 1000)
    return lat


def percentiles(lat: list[float]) -> dict:
    lat = sorted(lat)
    return {"p50_ms": round(statistics.median(lat), 2),
            "p95_ms": round(lat[max(0, math.ceil(0.95 * len(lat)) - 1)], 2)}


def run_one(name: str, out: Path, limit: int | None = None) -> dict:
    """One index type on all rows, or on the first ``limit`` rows (exact truth recomputed)."""
    import faiss

    from ner_retriever.indexes.faiss_build import (build_faiss_index, exact_rerank, for_scattered_reads,
                                                   index_bytes, prefetch_rows, refine_of)

    index_type, storage, params, sweeps = SETTINGS[name]
    vectors = np.load(out / "vectors.npy", mmap_mode="r")
    queries = np.load(out / "queries.npy")
    truth = np.load(out / "truth.npy")
    if limit is not None and limit < len(vectors):
        vectors = vectors[:limit]
        flat = faiss.IndexFlatIP(DIM)
        for start in range(0, limit, CHUNK):
            flat.add(np.ascontiguousarray(vectors[start:start + CHUNK]))
        truth = flat.search(queries, K)[1]
        del flat
    n = len(vectors)
    t0 = time.perf_counter()
    train = None
    if index_type == "ivfpq":  # the store's training sample: seeded, up to train_size rows
        size = params.get("train_size", 200_000)
        picks = np.sort(np.random.default_rng(0).choice(n, size=min(size, n), replace=False))
        train = np.ascontiguousarray(vectors[picks])
    index = build_faiss_index(DIM, index_type, storage, params, train)
    train_s = time.perf_counter() - t0
    del train
    for start in range(0, n, CHUNK):
        index.add_with_ids(np.ascontiguousarray(vectors[start:start + CHUNK]),
                           np.arange(start, min(n, start + CHUNK), dtype=np.int64))
    build_s = time.perf_counter() - t0
    search, disk = index.search, None
    if storage == "pq-disk":
        disk = fp16_copy(out, vectors)
        reads = for_scattered_reads(np.load(disk, mmap_mode="r"))

        def read(rows):  # what FaissStore.vectors does, on one file
            prefetch_rows(reads, rows)
            return np.asarray(reads[rows], dtype=np.float32)

        def search(q, k):  # what FaissStore.search does for pq-disk
            rows = index.search(q, k * factor)[1]
            return exact_rerank(q, rows, read, k)
    results = []
    for sweep in sweeps:
        p = {**params, **sweep}
        if index_type == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = max(p["ef_search"], K)
        if index_type == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = p["nprobe"]
            factor = int(p.get("refine_factor", 4))
            if storage == "fp16":
                refine_of(index).k_factor = float(p["refine_factor"])
        if disk is not None:
            warm_page_cache(disk)  # "warm" figures: the whole file in the page cache
        search(queries[:5], K)  # warm up
        # An exhaustive scan takes seconds per query at 10M: time a few, batch the first 20.
        n_lat = min(10 if n > 2_000_000 else 30, len(queries)) if index_type == "flat" \
            else len(queries)
        n_batch = 20 if index_type == "flat" and n > 2_000_000 else len(queries)
        lat = latencies(search, queries[:n_lat])
        t = time.perf_counter()
        _, rows = search(queries[:n_batch], K)
        qps = n_batch / (time.perf_counter() - t)
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth)]))
        results.append({"search": sweep, **percentiles(lat),
                        "qps": round(qps, 1), "recall@100": round(recall, 4)})
        if disk is not None:
            # 50 queries: before read-ahead was turned off, a cold query took 0.6-0.7 s.
            cold = percentiles(latencies(search, queries[:50], cold=reads))
            results[-1].update({f"cold_{k}": v for k, v in cold.items()})
    # Peak RSS before serialising (which copies the index); it includes the memory-mapped
    # input vectors that were read (up to 2 GB at 1M).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = index_bytes(index)
    ivf = faiss.extract_index_ivf(index) if index_type == "ivfpq" else None
    return {"name": name, "n": n, "index_type": index_type, "storage": storage,
            "indexed_dim": DIM if ivf is None else ivf.d,
            "params": params, "train_s": round(train_s, 1), "build_s": round(build_s, 1),
            "bytes_per_mention": round(size / n, 1), "index_mb": round(size / 2 ** 20, 1),
            "disk_bytes_per_mention_read": 2 * DIM if disk else 0,
            "peak_rss_mb": round(peak), "load_avg_1m": round(os.getloadavg()[0], 1),
            "threads": faiss.omp_get_max_threads(), "results": results}


def run_store(out: Path, segment_rows: int, maps_open: int | None = None) -> dict:
    """``pq-disk`` through ``FaissStore`` itself, on segments of ``segment_rows`` rows (an index
    commits one segment per batch: the CLI's default 256 documents make ~600 rows), so the
    re-rank reads candidates from as many files as a real index has; ``maps_open`` overrides
    how many segment maps the store keeps open (the default follows the open-file limit)."""
    from ner_retriever.indexes.faiss import FaissStore

    vectors = np.load(out / "vectors.npy", mmap_mode="r")
    queries, truth = np.load(out / "queries.npy"), np.load(out / "truth.npy")
    folder = out / f"store-{segment_rows}"
    params = {"nlist": 1024, "train_size": 100_000, "nprobe": 8, "refine_factor": 4}
    store = FaissStore(folder, DIM, index_type="ivfpq", storage="pq-disk", params=params,
                       verify=False)
    if maps_open is not None:
        store.MAPS_OPEN = maps_open
    t0 = time.perf_counter()
    segments = [store.write_segment(a, vectors[a:a + segment_rows])
                for a in range(0, len(vectors), segment_rows)]
    write_s = time.perf_counter() - t0
    store.load(segments)  # adds every segment, then trains on a seeded sample and rebuilds
    build_s = time.perf_counter() - t0 - write_s

    def search(q, k):
        return store.search(q, k)

    files = [folder / seg.name for seg in segments]
    for path in files:  # "cached": every segment in the page cache
        warm_page_cache(path)
    search(queries[:5], K)
    lat = latencies(search, queries)
    rows = store.search(queries, K)[1]
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth)]))
    cold = []
    for q in queries[:50]:  # every segment evicted before each query
        for mapped in store._maps.values():
            mapped._mmap.madvise(mmap.MADV_DONTNEED)
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        cold += latencies(search, q[None])
    return {"name": f"store pq-disk, {len(segments)} segments of {segment_rows} rows",
            "maps_open": store.MAPS_OPEN, "n": len(vectors), "write_s": round(write_s, 1),
            "build_s": round(build_s, 1), "search": {"nprobe": 8, "refine_factor": 4},
            **percentiles(lat), "recall@100": round(recall, 4),
            **{f"cold_{k}": v for k, v in percentiles(cold).items()},
            "load_avg_1m": round(os.getloadavg()[0], 1)}


def rprecision() -> dict:
    """Macro R-Precision on Few-NERD INTER test gold mentions (the shipped default: block 22
    value through the shipped head, 500-d) for each index type, via the store's builder and
    the search widening loop."""
    import faiss

    from ner_retriever.retrieve.pooling import top_documents
    from ner_retriever.indexes.faiss_build import build_faiss_index, exact_rerank, index_bytes
    from ner_retriever.training.validation import evaluate_vectors, relevant_docs

    gen = Generator("model")
    ms, types, queries = gen.ms, gen.types, gen.type_queries
    vectors = gen.base
    relevant = relevant_docs(ms, types)
    exact_numpy = evaluate_vectors(ms, gen.raw_queries, gen.head.project, types=types,
                                   project_queries=gen.head.project_queries)["r_precision"]
    out = {"mentions": len(vectors), "documents": ms.n_docs, "types": len(types),
           "dim": vectors.shape[1], "numpy_exact": round(exact_numpy, 4), "index": {}}
    combos = [("flat", "fp32", [{}]), ("flat", "fp16", [{}]), ("hnsw", "fp32", [{}]),
              ("hnsw", "fp16", [{}]),
              ("ivfpq", "pq", [{"nprobe": 32}, {"nprobe": 128}, {"nprobe": 65536}]),
              ("ivfpq", "sq8", [{"nprobe": 32}, {"nprobe": 128}]),
              ("ivfpq", "fp16", [{"nprobe": 32}, {"nprobe": 128}]),
              ("ivfpq", "pq-disk", [{"nprobe": 32}, {"nprobe": 128}])]
    stored16 = vectors.astype(np.float16).astype(np.float32)  # pq-disk re-ranks on fp16 rows
    doc_of = ms.docs
    for index_type, storage, sweeps in combos:
        train = vectors if index_type == "ivfpq" else None
        index = build_faiss_index(vectors.shape[1], index_type, storage, {}, train)
        index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
        for sweep in sweeps:
            label = f"{index_type}-{storage}"
            if "nprobe" in sweep:
                ivf = faiss.extract_index_ivf(index)
                ivf.nprobe = min(sweep["nprobe"], ivf.nlist)
                label += f" nprobe {ivf.nprobe}/{ivf.nlist}"
            def search(q, k):
                if index_type == "hnsw":  # as the store does: efSearch at least k
                    faiss.downcast_index(index.index).hnsw.efSearch = max(128, k)
                if storage == "pq-disk":  # as the store does: 4 k candidates re-ranked
                    rows = index.search(q[None], min(len(vectors), 4 * k))[1]
                    found = exact_rerank(q[None], rows, stored16.__getitem__, k)
                    return tuple(a[0] for a in found)
                return tuple(a[0] for a in index.search(q[None], k))

            scores = []
            for q, rel in zip(queries, relevant):
                r = len(rel)
                got = top_documents(lambda k: search(q, k),
                                    lambda rows: np.where(rows >= 0, doc_of[np.maximum(rows, 0)],
                                                          -1), r, len(vectors), per_doc=1)
                scores.append(np.isin([g.doc_key for g in got], rel).sum() / r)
            out["index"][label] = {"r_precision": round(float(np.mean(scores)), 4),
                                   "bytes_per_mention": round(index_bytes(index) / len(vectors),
                                                              1)}
            print(label, out["index"][label], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--types", default="flat-fp32,flat-fp16,ivfpq-pq,ivfpq-fp16,hnsw-fp16")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help="index only the first N rows (exact truth "
                        "recomputed on them): for index types too slow to build at --n")
    parser.add_argument("--generator", choices=("model", "output"), default="model",
                        help="how the real vectors are extended to --n rows (docstring)")
    parser.add_argument("--rprecision", action="store_true")
    parser.add_argument("--store-segments", type=int, metavar="ROWS",
                        help="pq-disk through FaissStore on segments of ROWS rows (run_store)")
    parser.add_argument("--maps-open", type=int, help="with --store-segments: maps kept open")
    args = parser.parse_args()
    if args.store_segments:
        prepare(args.n, args.out, args.generator)
        print(json.dumps(run_store(args.out, args.store_segments, args.maps_open)))
        return
    if args.rprecision:
        result = rprecision()
        print(json.dumps(result, indent=1))
        (args.out).mkdir(parents=True, exist_ok=True)
        (args.out / "rprecision.json").write_text(json.dumps(result, indent=1))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.out, args.limit)))
        return
    prepare(args.n, args.out, args.generator)
    print(json.dumps(json.loads((args.out / "meta.json").read_text())), flush=True)
    for name in args.types.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--out", str(args.out)],
                              capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        line = proc.stdout.strip().splitlines()[-1]
        (args.out / f"result-{name}.json").write_text(line)
        print(line, flush=True)


if __name__ == "__main__":
    main()
