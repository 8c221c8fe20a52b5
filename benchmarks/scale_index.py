"""Indexing throughput: single process vs Ray Data with 1 and 2 workers, same corpus.

Usage (figures in docs/SCALE.md):
    NER_RETRIEVER_CACHE=/tmp/nrcache PYTHONPATH=src python benchmarks/scale_index.py \\
        [--docs 400] [--batch-size 64] [--engines local,ray1,ray2]

Corpus: the first N sentences of Few-NERD INTER test as JSONL (one document each), spaCy
detector, SmolLM2-135M block 10 value vectors, flat FAISS store. Each engine indexes the same
file into a fresh index. Reported: wall seconds of the whole ``add`` (Ray: including actor start
and model loading in the actors), documents/s, and the seconds until the first shard was
committed (start-up cost). Ray runs on a local ``ray.init(num_cpus)``. Ray Data hands shards
to the driver in bursts, so a rate between commits says nothing; only wall time counts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ner_retriever.io.corpus import read_conll
from ner_retriever.models.encoder import TransformerEncoder
from ner_retriever.retrieve.retriever import Retriever

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--engines", default="local,ray1,ray2")
    parser.add_argument("--corpus", type=Path,
                        default=DATA / "fewnerd" / "inter_bio_structshot" / "big_test.txt")
    args = parser.parse_args()
    docs = list(itertools.islice(read_conll(args.corpus), args.docs))
    encoder = TransformerEncoder()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "docs.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                  for d in docs))
        for engine in args.engines.split(","):
            stamps: list[tuple[float, int]] = []

            def tick(n_docs, n_mentions, stamps=stamps):
                stamps.append((time.perf_counter(), n_docs))

            path = Path(tmp) / engine
            with Retriever.create(path, encoder=encoder, detector="spacy") as r:
                start = time.perf_counter()
                if engine == "local":
                    from ner_retriever.io.corpus import read_corpus

                    stats = r.add(read_corpus(corpus), commit_every=args.batch_size,
                                  progress=tick)
                else:
                    import ray

                    from ner_retriever.scale.ray import add_with_ray, start_ray

                    start_ray(num_cpus=torch.get_num_threads())
                    try:
                        stats = add_with_ray(r, corpus, batch_size=args.batch_size,
                                             workers=int(engine[3:]), progress=tick)
                    finally:
                        ray.shutdown()
                wall = time.perf_counter() - start
                row = {"engine": engine, "documents": stats.documents,
                       "mentions": stats.mentions, "wall_s": round(wall, 1),
                       "docs_per_s": round(stats.documents / wall, 2),
                       "first_commit_s": round(stamps[0][0] - start, 1),
                       "load_avg_1m": round(os.getloadavg()[0], 1),
                       "torch_threads": torch.get_num_threads()}
                results.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
