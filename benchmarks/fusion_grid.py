"""The fusion constants re-checked end to end: mean detected-hybrid R-Precision over the
validation splits of benchmarks/validation.py, one constant moved at a time from the default
(coordinate search), everything else as shipped.

    NER_RETRIEVER_CACHE=/tmp/nrcache_eval python benchmarks/fusion_grid.py [--json grid.json]

Only validation data is read (benchmarks/validation.py: Few-NERD INTER train types, MultiCoNER
2 en-train10, WNUT-17 dev); vectors come from the evaluation cache, so each setting only
re-ranks. A constant is worth changing only where the mean moves by more than the noise of
one type flipping (about 0.005) and no split loses much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validation as v  # noqa: E402

from ner_retriever.evaluation.data import load_eval_set  # noqa: E402
from ner_retriever.evaluation.descriptions import load_descriptions  # noqa: E402
from ner_retriever.evaluation.evaluate import build_encoder, evaluate  # noqa: E402

GRID = {"hybrid_weight": (0.5, 0.7), "name_weight": (0.1, 0.3), "mention_temperature":
        (0.03, 0.1), "confidence_weight": (0.0, 1.0, 2.0), "feedback_weight": (0.5, 1.5),
        "feedback": (10, 40)}


def load_splits(args) -> list:
    excluded = v.detector_texts(args.data, v.SHIPPED_DETECTOR_SAMPLE)
    sets = []
    for key, split in v.SPLITS.items():
        sample = args.fewnerd_sample if key == "fewnerd" else None
        sets.append(load_eval_set([args.data / f for f in split.files],
                                  load_descriptions(split.descriptions), sample=sample,
                                  seed=v.SEED, exclude_texts=excluded))
    return sets


def score(sets, opts, encoder) -> dict:
    out = {}
    for es in sets:
        report = evaluate(es, dataclasses.replace(opts, mentions="detected",
                                                  methods=("hybrid",)), encoder=encoder)
        out[es.name] = report["results"]["hybrid"]["r_precision"]
    out["mean"] = sum(out.values()) / len(sets)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=v.DATA)
    ap.add_argument("--fewnerd-sample", type=int, default=v.FEWNERD_SAMPLE)
    ap.add_argument("--head", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    base = v.options(v.parse_args(["--head", args.head]))
    encoder = build_encoder(base)
    sets = load_splits(args)
    rows = []
    t0 = time.time()
    rows.append({"setting": "default", **score(sets, base, encoder)})
    v.log(f"default: {rows[-1]} [{time.time() - t0:.0f} s]")
    for name, values in GRID.items():
        for value in values:
            rows.append({"setting": f"{name}={value}",
                         **score(sets, dataclasses.replace(base, **{name: value}), encoder)})
            v.log(f"{rows[-1]}")
    names = [es.name for es in sets]
    print("| setting | " + " | ".join(names) + " | mean |\n|---|" + "--:|" * (len(names) + 1))
    for r in rows:
        print(f"| {r['setting']} | " + " | ".join(f"{r[n]:.4f}" for n in names)
              + f" | {r['mean']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
