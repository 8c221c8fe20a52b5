"""Indexing throughput and query latency of the default pipeline on this machine.

Usage: python benchmarks/index_throughput.py [--docs 500] [--queries 50]
Corpus: the first N sentences of Few-NERD INTER test (../shared/data), one document each.
Prints documents/s, mentions/s (detector + encoder + commit) and query latency p50/p95 for a
mentions-only index, a hybrid one without mention names and the default hybrid one (one dense
vector per document and one per mention name as well; queries with and without feedback),
plus the encoder alone on gold spans as a reference measured in the same run, with windows cut
after their last span (the default for causal models) and whole (as before that cut)."""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ner_retriever.io.corpus import read_conll
from ner_retriever.models.encoder import TransformerEncoder
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.config import FEEDBACK_DOCS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUERIES = ["politician", "river", "car model", "sports team", "award", "disease", "software",
           "athlete", "city", "newspaper"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--corpus", type=Path,
                        default=DATA / "fewnerd" / "inter_bio_structshot" / "big_test.txt")
    args = parser.parse_args()
    docs = list(itertools.islice(read_conll(args.corpus), args.docs))
    print(f"corpus: {args.corpus.name}, {len(docs)} documents, torch threads "
          f"{torch.get_num_threads()}")

    encoder = TransformerEncoder()
    texts = [d.text for d in docs]
    gold_spans = [[(s.start, s.end) for s in d.spans] for d in docs]
    n_gold = sum(len(g) for g in gold_spans)
    causal = encoder.causal
    for cut in (False, True) if causal else (False,):  # windows cut after their last span
        encoder.causal = cut
        start = time.perf_counter()
        encoder.encode_spans(texts, gold_spans)
        enc_s = time.perf_counter() - start
        print(f"encoder only (gold spans), {'cut' if cut else 'whole'} windows: "
              f"{len(docs) / enc_s:.1f} docs/s, {n_gold / enc_s:.1f} mentions/s")
    encoder.causal = causal

    with tempfile.TemporaryDirectory() as tmp:
        for hybrid, names in ((False, False), (True, False), (True, True)):
            label = ("hybrid (default)" if names else "hybrid --no-names") if hybrid \
                else "mentions only (--no-hybrid)"
            with Retriever.create(Path(tmp) / f"idx-{hybrid}-{names}", encoder=encoder,
                                  hybrid=hybrid, names=names) as r:
                stats = r.add(docs, commit_every=256)
                print(f"index, {label}: {r.detector.config()['name']} detector + encoder"
                      f"{' + document encoder' if hybrid else ''}"
                      f"{' + mention names' if names else ''} + commit: "
                      f"{stats.documents / stats.seconds:.1f} docs/s, "
                      f"{stats.mentions / stats.seconds:.1f} mentions/s "
                      f"({stats.mentions} mentions, {stats.seconds:.1f} s)")
                r.search("warm up", k=10)
                for feedback in ((FEEDBACK_DOCS, 0) if hybrid else (0,)):
                    latencies = []
                    for i in range(args.queries):
                        t = time.perf_counter()
                        r.search(QUERIES[i % len(QUERIES)], k=10, feedback=feedback)
                        latencies.append((time.perf_counter() - t) * 1000)
                    lat = sorted(latencies)
                    what = "" if not hybrid else \
                        f", feedback {'off' if not feedback else f'{feedback} documents'}"
                    print(f"query latency, {label}{what}, over {len(lat)} queries (k=10, "
                          f"{r.index.ntotal} mentions): p50 {statistics.median(lat):.1f} ms, "
                          f"p95 {lat[int(0.95 * len(lat)) - 1]:.1f} ms")

if __name__ == "__main__":
    main()
