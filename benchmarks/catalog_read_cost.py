"""Cost of reading results from the catalog: search latency and document views on a synthetic
index (no model), to measure what verifying per-row checksums adds (docs/RELIABILITY.md).

Usage:
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/catalog_read_cost.py --docs 2000
    # the same on another checkout (e.g. the commit before row checksums):
    PYTHONPATH=/tmp/base/src OMP_NUM_THREADS=1 python benchmarks/catalog_read_cost.py --docs 2000

Documents hold ~600 characters and 5 mentions; vectors are random unit 256-d rows. Search is
``Retriever.search_vector`` (k=10, 3 mentions per document: vector search, grouping, document
and mention rows read for the results, snippets); a view is ``get_document`` + ``mentions_of``
(what ``GET /documents/{id}`` reads). Build: adding the documents in batches of 500. Median
and p95 over ``--queries`` of each, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 256


def build(path: Path, n_docs: int) -> None:
    from ner_retriever.indexes.index import Index, IndexConfig
    from ner_retriever.types import Document, Mention

    config = IndexConfig(encoder={"model": "synthetic"}, raw_dim=DIM, dim=DIM, head=None,
                         detector={"name": "gold"})
    rng = np.random.default_rng(0)
    filler = "The delegation met officials to discuss trade, energy and security. " * 8
    with Index.create(path, config) as index:
        for start in range(0, n_docs, 500):
            docs, mentions, vectors = [], [], []
            for i in range(start, min(start + 500, n_docs)):
                text = f"Paris Rome Berlin Madrid Lisbon report {i}. {filler}"
                docs.append(Document(f"doc-{i}", text))
                mentions.append([Mention(f"doc-{i}", s, e, text[s:e])
                                 for s, e in ((0, 5), (6, 10), (11, 17), (18, 24), (25, 31))])
                v = rng.standard_normal((5, DIM)).astype(np.float32)
                vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
            index.add(docs, mentions, vectors)


def timed(fn, n: int) -> tuple[float, float]:
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.95 * (n - 1))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    from ner_retriever.detect.registry import build_detector
    from ner_retriever.indexes.index import Index
    from ner_retriever.retrieve.retriever import Retriever

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "idx"
        start = time.perf_counter()
        build(path, args.docs)
        build_s = time.perf_counter() - start
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        retriever = Retriever(Index.open(path), encoder=None, detector=build_detector("gold"))
        it = iter(range(10**9))
        search = timed(lambda: retriever.search_vector(queries[next(it) % len(queries)], 10, 3),
                       args.queries)
        index = retriever.index

        def view() -> None:
            doc_id = f"doc-{next(it) % args.docs}"
            index.get_document(doc_id)
            index.mentions_of(doc_id)

        views = timed(view, args.queries)
        retriever.close()
    print(json.dumps({"docs": args.docs, "build_s": round(build_s, 3),
                      "search_ms_p50": round(search[0], 3), "search_ms_p95": round(search[1], 3),
                      "view_ms_p50": round(views[0], 3), "view_ms_p95": round(views[1], 3)}))


if __name__ == "__main__":
    main()
