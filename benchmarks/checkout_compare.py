"""Indexing docs/s, query p50/p95 and peak RSS of the default pipeline, for this checkout and
another one (e.g. 61117af), each in its own process, alternating, in the same run.

    git worktree add /tmp/base 61117af
    python benchmarks/checkout_compare.py --other /tmp/base/src [--docs 300] [--rounds 2]

Uses only the public API both versions share (Retriever.create / add / search), so any two
checkouts compare. The corpus: the first N sentences of Few-NERD INTER test (../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DATA = HERE.parent / "shared" / "data" / "fewnerd" / "inter_bio_structshot" / "big_test.txt"
QUERIES = ["politician", "river", "car model", "sports team", "award", "disease", "software",
           "athlete", "city", "newspaper", "actor", "airport", "bridge", "ship", "weapon"]

CHILD = r'''
import itertools, json, resource, sys, tempfile, time
from pathlib import Path
from ner_retriever import Retriever
from ner_retriever.{corpus} import read_conll
docs = list(itertools.islice(read_conll(Path(sys.argv[1])), int(sys.argv[2])))
docs = [type(d)(d.id, d.text) for d in docs]
with tempfile.TemporaryDirectory() as tmp:
    with Retriever.create(Path(tmp) / "idx") as r:
        r.add(docs[:8])  # warm-up: models loaded, first pass paid
        start = time.perf_counter()
        r.add(docs[8:])
        seconds = time.perf_counter() - start
        r.search("warm up", k=10)
        times = []
        for q in json.loads(sys.argv[3]):
            t = time.perf_counter()
            r.search(q, k=10)
            times.append(time.perf_counter() - t)
print(json.dumps({{"docs_per_s": (len(docs) - 8) / seconds, "query_ms": [x * 1000 for x in times],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
'''


def run(src: Path, docs: int) -> dict:
    corpus = "io.corpus" if (src / "ner_retriever" / "io" / "corpus.py").exists() else "corpus"
    env = {**os.environ, "PYTHONPATH": str(src), "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(corpus=corpus), str(DATA),
                          str(docs), json.dumps(QUERIES)], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:  # say which checkout failed, and why
        sys.exit(f"run with {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(  # the docstring's first paragraph, whole
        description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--other", type=Path, required=True, help="the other checkout's src/")
    parser.add_argument("--docs", type=int, default=300,
                        help="sentences indexed per run (the first 8 are a warm-up)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per checkout, alternating; the best docs/s is kept")
    args = parser.parse_args()
    sides = {"this": HERE / "src", "other": args.other}
    results: dict[str, list[dict]] = {k: [] for k in sides}
    load_before = os.getloadavg()[0]  # other work on the machine skews both sides
    for _ in range(args.rounds):
        for name, src in sides.items():
            results[name].append(run(src, args.docs))
    summary = {}
    for name, runs in results.items():
        ms = sorted(x for r in runs for x in r["query_ms"])
        summary[name] = {"docs_per_s": max(r["docs_per_s"] for r in runs),
                         "query_p50_ms": statistics.median(ms),
                         "query_p95_ms": ms[int(0.95 * (len(ms) - 1))],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    for key in summary["this"]:
        a, b = summary["this"][key], summary["other"][key]
        print(f"{key:>14}: this {a:9.2f}  other {b:9.2f}  ratio {a / b:.3f}")
    for name, runs in results.items():
        print(f"{name:>5} docs/s per round: "
              + ", ".join(f"{r['docs_per_s']:.2f}" for r in runs))
    print(f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
