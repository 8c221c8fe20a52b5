"""Indexing docs/s and query latency of the default pipeline with two packaged models, in the
same run (alternating rounds): what switching the encoder model costs on this machine.

    .venv/bin/python benchmarks/model_compare.py [--models smollm2-135m,gemma3-270m]
        [--docs 300] [--rounds 2] [--queries 20]

A model may name its blocks, ``gemma3-270m@15`` (``--layer 15``): then the shipped head runs
only where it was trained for those blocks (raw vectors otherwise; the head is ~1% of
indexing).

Each model runs with its shipped head and learned detector (``learned+spacy``), hybrid with
names; corpus: the first ``--docs`` sentences of Few-NERD INTER ``dev.txt`` of 12+ tokens.
Queries: distinct descriptions, in-process ``Retriever.search``, k=10, default feedback."""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KINDS = ["river", "politician", "company", "singer", "disease", "city", "novel", "band",
         "airport", "award"]
ADJECTIVES = ["famous", "small", "old", "northern", "modern", "rich"]


def corpus(n: int):
    from ner_retriever.io.corpus import read_conll
    from ner_retriever.types import Document

    docs = (d for d in read_conll(DATA / "fewnerd" / "inter_bio_structshot" / "dev.txt")
            if len(d.text.split()) >= 12)
    return [Document(f"d{i}", d.text) for i, d in enumerate(itertools.islice(docs, n))]


def one_round(model: str, docs, queries: list[str], folder: Path) -> dict:
    from ner_retriever import Retriever
    from ner_retriever.models.encoder import EncoderConfig

    name, _, blocks = model.partition("@")
    path = folder / f"{name}-{time.perf_counter_ns()}"
    start = time.perf_counter()
    with Retriever.create(path, encoder=EncoderConfig(model=name, block=blocks or None)) as r:
        r.add(docs)
    index_s = time.perf_counter() - start
    with Retriever.open(path) as r:
        r.search("warm up entity")
        times = []
        for q in queries:
            t = time.perf_counter()
            r.search(q, k=10)
            times.append(1e3 * (time.perf_counter() - t))
    return {"docs_s": len(docs) / index_s, "p50_ms": statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    models = args.models.split(",")
    docs = corpus(args.docs)
    fresh = (f"{a} {k} {i}" for i in itertools.count() for a in ADJECTIVES for k in KINDS)
    rows: dict[str, list[dict]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for m in models:
                rows[m].append(one_round(m, docs, [next(fresh) for _ in range(args.queries)],
                                         Path(tmp)))
                print(m, {k: round(v, 2) for k, v in rows[m][-1].items()}, flush=True)
    base = models[0]
    best = {m: max(r["docs_s"] for r in rows[m]) for m in models}
    p50 = {m: statistics.median(r["p50_ms"] for r in rows[m]) for m in models}
    print("| model | docs/s (best round) | x first | query p50 ms | x first |\n|---|--:|--:|--:|--:|")
    for m in models:
        print(f"| {m} | {best[m]:.2f} | {best[m] / best[base]:.2f}x | {p50[m]:.1f} | "
              f"{p50[m] / p50[base]:.2f}x |")


if __name__ == "__main__":
    main()
