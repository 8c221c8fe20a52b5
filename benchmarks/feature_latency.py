"""Latency of the search features against a plain query, in the same run (issue 21: filtered,
several-type and example queries keep p50 within 1.5x of a plain one).

    .venv/bin/python benchmarks/feature_latency.py [--docs 1000] [--sizes 1000,10000]

Index: the first ``--docs`` distinct sentences of benchmarks/speed.py's corpus, indexed with the
default settings, then copied (vectors reused, benchmarks/speed.py ``replicate``) to each size
with a ``year`` field (2000-2019, one per copy in turn). Each variant runs QUERIES
descriptions the process has not embedded before (in-process ``Retriever.search``, k=10,
default hybrid + names + feedback, no result cache); examples for ``like`` are mentions of
the corpus in their sentence. Printed: p50 / p95 ms and p50 / plain p50 per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402

QUERIES = 24
YEARS = 20


def variants(examples: list[str]) -> dict:
    """Each variant: a function of a fresh description (and a running number) -> kwargs."""
    return {
        "plain": lambda q, i: dict(query=q),
        "where year>=2010": lambda q, i: dict(query=q, where="year>=2010"),
        "must 'the'": lambda q, i: dict(query=q, must="the"),
        "two types": lambda q, i: dict(query=[q, f"{speed.KINDS[i % len(speed.KINDS)]} "
                                              f"{speed.ADJECTIVES[i % 8]} place"]),
        "like (example)": lambda q, i: dict(like=examples[i % len(examples)]),
        "exhaustive (--all)": lambda q, i: dict(query=q, exhaustive=True),
    }


def marked_examples(path: Path, n: int) -> list[str]:
    """``n`` indexed mentions in their sentence, the mention in [[ ]]."""
    from ner_retriever.indexes.index import Index
    out = []
    with Index.open(path) as index:
        for doc_id in list(index.document_ids())[:4 * n]:
            doc = index.get_document(doc_id)
            for m in index.mentions_of(doc_id)[:1]:
                out.append(f"{doc.text[:m.start]}[[{doc.text[m.start:m.end]}]]"
                           f"{doc.text[m.end:]}")
            if len(out) >= n:
                break
    return out


def measure(path: Path, examples: list[str]) -> dict:
    from ner_retriever import Retriever
    fresh = iter(f"{a} {b} {kind}" for a in speed.ADJECTIVES for b in ("big", "new", "rare")
                 for kind in speed.KINDS)
    report = {}
    with Retriever.open(path) as r:
        r.search("warm up entity", k=10)
        r.search("warm up", k=10, must="the", where="year>=2010")  # keyword table built
        for name, make in variants(examples).items():
            times = []
            for i in range(QUERIES):
                kwargs = make(next(fresh), i)
                start = time.perf_counter()
                results = r.search(k=10, **kwargs)
                times.append(1e3 * (time.perf_counter() - start))
            times.sort()
            report[name] = {"p50_ms": round(statistics.median(times), 1),
                            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
                            "last_results": len(results)}
    plain = report["plain"]["p50_ms"]
    for row in report.values():
        row["x_plain"] = round(row["p50_ms"] / plain, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ner-retriever-features"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = speed.corpus(args.docs)
    (args.out / "texts.json").write_text(json.dumps(texts))
    base = args.out / "base"
    if not (base / "config.json").exists():
        speed.index_side(speed.HERE / "src", args.out / "texts.json", base, stages=False)
    examples = marked_examples(base, QUERIES)
    for size in [int(s) for s in args.sizes.split(",")]:
        path = args.out / f"idx-{size}"
        speed.replicate(base, path, size, metadata=lambda i: {"year": 2000 + i % YEARS})
        report = measure(path, examples)
        print(f"\n{size:,} documents")
        print("| variant | p50 ms | p95 ms | p50 / plain |\n|---|--:|--:|--:|")
        for name, row in report.items():
            print(f"| {name} | {row['p50_ms']} | {row['p95_ms']} | {row['x_plain']:.2f}x |")
        print(json.dumps({"documents": size, **report}), flush=True)


if __name__ == "__main__":
    main()
