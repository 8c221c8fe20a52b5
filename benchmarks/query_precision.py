"""Quality effect of fp16 / int8 query weights: end-to-end R-Precision (detected mentions,
default hybrid + names + feedback, as a search ranks) with the query pass in fp32, fp16 and
int8, on the same documents, vectors and detector; only the type descriptions' LM pass differs.

Usage (figures in docs/PERFORMANCE.md):
    .venv/bin/python benchmarks/query_precision.py \\
        /work/shared/data/wnut17/emerging.dev.conll:wnut17 \\
        /work/shared/data/multiconer2_en/en-train10.conll:multiconer2 [--sample N]

Each argument is FILE:DESCRIPTIONS (a shipped description map). Document-side vectors come
from the evaluation cache after the first run.
"""

from __future__ import annotations

import argparse
import json

from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.evaluation.evaluate import EvalOptions, build_encoder, evaluate

METHODS = ("ner-retriever", "hybrid")
PRECISIONS = ("fp32", "fp16", "int8")


def mean_r_precision(report: dict, method: str) -> float:
    """The report's macro R-Precision of ``method`` (the mean over types)."""
    return float(report["results"][method]["r_precision"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="FILE:DESCRIPTIONS")
    parser.add_argument("--sample", type=int, default=None)
    args = parser.parse_args()
    opts = EvalOptions(methods=METHODS, mentions="detected")
    encoder = build_encoder(opts)
    rows = []
    for spec in args.files:
        path, _, names = spec.rpartition(":")
        eval_set = load_eval_set([path], load_descriptions(names), sample=args.sample)
        got = {}
        for precision in PRECISIONS:
            encoder.set_query_precision(precision)
            report = evaluate(eval_set, opts, encoder)
            got[precision] = {m: mean_r_precision(report, m) for m in METHODS}
        rows.append({"file": path, **{f"{p}_{m}": round(v, 4) for p, r in got.items()
                                      for m, v in r.items()},
                     **{f"loss_{p}_{m}": round(got["fp32"][m] - got[p][m], 4)
                        for p in PRECISIONS[1:] for m in METHODS}})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
