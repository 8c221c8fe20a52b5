"""Speed on this machine, all in one run: default indexing (docs/s, LM tokens/s) of this
checkout against another one (``--other``, e.g. 61117af) and against dense MiniLM indexing,
this checkout's per-stage indexing breakdown, and query latency at 1k / 10k / 100k documents.

    git worktree add /tmp/base 61117af
    .venv/bin/python benchmarks/speed.py --other /tmp/base/src [--docs 2000] [--out /tmp/speed]

Corpus: the first ``--docs`` distinct sentences (20 characters or more) of MultiCoNER II
en-train90 then WNUT-17 train (../shared/data), ids ``d0..``; every cache off (each side
indexes in its own fresh process and index). LM tokens = SmolLM2 tokens of the texts.

Latency: in-process ``Retriever.search`` (k=10, default hybrid + names + feedback 20, no
result cache) with descriptions the process has not embedded before. The 10k / 100k indexes
are built from the vectors of the indexed corpus (documents, mentions, vectors and names
copied with new ids: repeated texts, distinct documents), which is faster than encoding and
gives the same search work. The CLI's wall time (a fresh process: imports, model loads) is
reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DATA = HERE.parent / "shared" / "data"
CORPORA = (DATA / "multiconer2_en" / "en-train90.conll", DATA / "wnut17" / "wnut17train.conll")
MIN_CHARS = 20
SIZES = (1_000, 10_000, 100_000)
WARM_UP_DOCS = 8
REPLICATE_BATCH = 10_000  # documents per committed batch when copying vectors
QUERIES_PER_RUN = 40
ADJECTIVES = ["famous", "small", "old", "modern", "local", "foreign", "ancient", "young"]
# Descriptions for latency: each used once per index and precision (never seen before).
KINDS = ["politician", "river", "car model", "sports team", "award", "disease", "software",
         "athlete", "city", "newspaper", "actor", "airport", "bridge", "ship", "weapon",
         "painter", "mountain", "rock band", "university", "video game", "chemical element",
         "film director", "island", "king", "novel", "opera", "planet", "religion", "saint",
         "tennis player", "volcano", "war", "website", "language", "lake", "museum", "musician",
         "poet", "president", "railway station", "scientist", "singer", "stadium", "street",
         "television series", "theatre", "village", "writer", "festival", "football club"]

CHILD = r'''
import json, sys, time
from pathlib import Path
texts, path, stages = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
from ner_retriever import Document, Retriever
timers = {}
if stages == "1":
    sys.path.insert(0, sys.argv[4]); import speed; timers = speed.instrument()
docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
with Retriever.create(path) as r:
    r.add(docs[:WARM]); timers.clear() if timers else None  # models loaded, first pass paid
    start = time.perf_counter(); r.add(docs[WARM:]); seconds = time.perf_counter() - start
print(json.dumps({"docs_per_s": (len(docs) - WARM) / seconds, "seconds": seconds,
                  "stages_s": {k: sum(v) / 1e3 for k, v in timers.items()}}))
'''.replace("WARM", str(WARM_UP_DOCS))


def corpus(n: int) -> list[str]:
    from ner_retriever.io.corpus import read_conll
    seen: dict[str, None] = {}
    for path in CORPORA:
        for doc in read_conll(path):
            if len(doc.text) >= MIN_CHARS:
                seen.setdefault(doc.text)
            if len(seen) >= n:
                return list(seen)
    return list(seen)


def instrument() -> dict[str, list[float]]:
    """Wrap each indexing stage with a timer (this checkout only): milliseconds per call."""
    from ner_retriever import pipeline
    from ner_retriever.detect.learned import LearnedDetector
    from ner_retriever.detect.spacy import SpacyDetector
    from ner_retriever.models.dense import DenseEncoder
    timers: dict[str, list[float]] = {}
    timed(SpacyDetector, "detect", "detect (spaCy)", timers)
    timed(LearnedDetector, "detect_and_encode", "LM + learned tagger (joint pass)", timers)
    timed(pipeline.BatchEmbedder, "_names", "MiniLM names", timers)
    timed(DenseEncoder, "encode", "MiniLM (documents + names)", timers)
    timed(pipeline, "per_document", "head", timers)
    timed(pipeline, "commit", "commit", timers)
    return timers


def index_side(src: Path, texts_file: Path, out: Path, stages: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error"}
    shutil.rmtree(out, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", CHILD, str(texts_file), str(out),
                          "1" if stages else "0", str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"indexing with {src} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def dense_rate(texts: list[str]) -> float:
    from ner_retriever.models.dense import DenseEncoder
    dense = DenseEncoder()
    dense.encode(texts[:32])
    start = time.perf_counter()
    dense.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def lm_tokens(texts: list[str]) -> int:
    from ner_retriever.models.loading import load_model
    _, tokenizer = load_model("smollm2-135m")
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def replicate(source: Path, target: Path, n_docs: int, metadata=None) -> None:
    """An index of ``n_docs`` documents made of copies of ``source``'s (vectors reused);
    ``metadata(i)``, when given, is copy ``i``'s metadata."""
    import numpy as np
    from ner_retriever import Document
    from ner_retriever.indexes.index import Index
    from ner_retriever.types import Mention
    shutil.rmtree(target, ignore_errors=True)
    with Index.open(source) as src:
        keys, live, documents = src.doc_vectors
        keys, dense = keys[live].tolist(), documents[live]
        docs = src.documents_by_key(keys)
        _, doc_index, vectors = src.document_mentions(keys)
        _, names = src.document_names(keys)
        mentions = [src.mentions_of(docs[k].id) for k in keys]
        config = src.config
    cut = np.searchsorted(doc_index, np.arange(len(keys) + 1))
    if (source / "head").is_dir():
        shutil.copytree(source / "head", target / "head")
    with Index.create(target, config) as index:
        for start in range(0, n_docs, REPLICATE_BATCH):
            picks = [i % len(keys) for i in range(start, min(n_docs, start + REPLICATE_BATCH))]
            ids = [f"c{start + j}" for j in range(len(picks))]
            meta = [metadata(start + j) if metadata else {} for j in range(len(picks))]
            index.add([Document(d, docs[keys[i]].text, m) for d, i, m in zip(ids, picks, meta)],
                      [[Mention(d, m.start, m.end, m.text, m.label) for m in mentions[i]]
                       for d, i in zip(ids, picks)],
                      [vectors[cut[i]:cut[i + 1]] for i in picks], doc_vectors=dense[picks],
                      name_vectors=[names[cut[i]:cut[i + 1]] for i in picks])


def latency(path: Path, queries: list[str], precision: str) -> dict:
    """p50 / p95 (ms) of in-process searches, each with a description new to the process."""
    from ner_retriever import Retriever
    from ner_retriever.retrieve import retriever as facade
    with Retriever.open(path, precision=precision) as r:
        r.search("warm up entity", k=10)  # models loaded, the int8 probe paid
        stages: dict[str, list[float]] = {}
        timed(r, "embed_queries", "LM query + head", stages)
        timed(r.dense, "encode", "MiniLM query", stages)
        timed(facade, "hybrid_rank", "ranking (2 passes)", stages)
        timed(r, "_results", "catalog reads", stages)
        times = []
        for q in queries:
            start = time.perf_counter()
            r.search(q, k=10)
            times.append(1e3 * (time.perf_counter() - start))
        chosen = r.encoder.query_pass.precision
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1), "precision": chosen,
            "stage_p50_ms": {k: round(statistics.median(v), 1) for k, v in stages.items()}}


def timed(owner, name: str, stage: str, into: dict[str, list[float]]) -> None:
    """Replace ``owner.name`` by a wrapper that appends each call's milliseconds to
    ``into[stage]``."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into.setdefault(stage, []).append(1e3 * (time.perf_counter() - start))
    setattr(owner, name, wrapper)


def cli_wall(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "ner-retriever"), "search", str(path),
                    "harbour city", "--json"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--other", type=Path, help="the other checkout's src/ (e.g. 61117af)")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--out", type=Path, default=Path("/tmp/ner-retriever-speed"))
    parser.add_argument("--latency-only", action="store_true",
                        help="skip indexing: reuse the index an earlier run left in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.latency_only:
        indexing(args)
    latencies(args)


def indexing(args: argparse.Namespace) -> None:
    texts = corpus(args.docs)
    texts_file = args.out / "texts.json"
    texts_file.write_text(json.dumps(texts))
    tokens = lm_tokens(texts[WARM_UP_DOCS:])
    report: dict = {"docs": len(texts), "load_before": os.getloadavg()[0]}
    this = index_side(HERE / "src", texts_file, args.out / "this", stages=True)
    report["this"] = {**this, "lm_tokens_per_s": tokens / this["seconds"]}
    if args.other:
        other = index_side(args.other, texts_file, args.out / "other", stages=False)
        report["other"] = {**other, "lm_tokens_per_s": tokens / other["seconds"]}
        report["speed-up"] = this["docs_per_s"] / other["docs_per_s"]
    report["dense_minilm_docs_per_s"] = dense_rate(texts)
    print(json.dumps(report, indent=1), flush=True)


def latencies(args: argparse.Namespace) -> None:
    queries = iter(f"{adjective} {kind}" for adjective in ADJECTIVES for kind in KINDS)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        path = args.out / f"idx-{size}"
        start = time.perf_counter()
        replicate(args.out / "this", path, size)
        built = time.perf_counter() - start
        for precision in ("auto", "fp32"):
            batch = [next(queries) for _ in range(QUERIES_PER_RUN)]
            print(json.dumps({"documents": size, "built_s": round(built, 1),
                              **latency(path, batch, precision)}), flush=True)
    print(json.dumps({"cli_wall_s": round(cli_wall(args.out / f"idx-{sizes[0]}"), 2),
                      "load_after": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
