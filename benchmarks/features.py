"""Issue 21's feature figures: exhaustive mode, type pairs, entity inventory, query by example.

    NER_RETRIEVER_CACHE=/tmp/nrcache_eval python benchmarks/features.py --json features.json

On the VALIDATION splits of ``benchmarks/validation.py`` (same files, sample, seed and
left-out detector sentences, so its cached vectors are reused), with what a user gets: the
default detector's spans, the default hybrid ranking, the shipped head. Each measurement is
``ner_retriever.evaluation.features`` (the product's ranking, pair and inventory code over the
vectors in memory). The exhaustive cut-off is chosen on Few-NERD INTER (train types) as the
macro-F1 maximum over ``features.THRESHOLDS`` and applied unchanged to every other split.

``--test`` also measures the shared TEST splits of ``benchmarks/results_table.py`` (Few-NERD
``big_test.txt`` sample, MultiCoNER 2 en-dev, WNUT-17 test) with that same cut-off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ner_retriever.config import EXHAUSTIVE_THRESHOLD, FusionConfig
from ner_retriever.evaluation import features as F
from ner_retriever.evaluation.data import EvalSet, load_eval_set
from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.evaluation.evaluate import (EvalOptions, build_encoder, hybrid_inputs,
                                               mention_side)
from ner_retriever.evaluation.metrics import evaluate_scores, macro
from ner_retriever.evaluation.scoring import hybrid_rank
from ner_retriever.io.cache import default_cache_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_table  # noqa: E402  (sibling scripts: their split definitions)
import validation  # noqa: E402

CHOICE_SPLIT = "fewnerd"  # the cut-off is chosen here (INTER train types), used everywhere


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_split(args, key: str, test: bool, excluded: set[str]) -> EvalSet:
    """A validation split as ``validation.py`` loads it, or a test split as
    ``results_table.py`` does (no sentences left out: the detector never saw them)."""
    split = (results_table.TEST_SETS if test else validation.SPLITS)[key]
    sample = (args.test_fewnerd_sample if test else args.fewnerd_sample) \
        if key == "fewnerd" else None
    es = load_eval_set([args.data / f for f in split.files],
                       load_descriptions(split.descriptions), sample=sample,
                       seed=validation.SEED, exclude_texts=() if test else excluded)
    name = split.name if not (test and key == "fewnerd") else \
        f"Few-NERD INTER test ({sample:,} sent.)"
    return dataclasses.replace(es, name=name)


def rank_split(es: EvalSet, opts: EvalOptions, encoder, dense) -> dict:
    """Everything a split's measurements need: detected-mention hybrid inputs, the gold side
    (example vectors), each type's full ranking and the description R-Precision."""
    t0 = time.time()
    inputs = hybrid_inputs(es, opts, encoder, dense=dense)
    gold = mention_side(es, dataclasses.replace(opts, mentions="gold"), encoder,
                        default_cache_root(), None)
    cfg = opts.fusion()
    ranked = F.full_rankings(es, inputs, cfg)
    described = evaluate_scores(es, hybrid_rank(es, inputs.source, inputs.side.queries,
                                                inputs.dense_queries, cfg))
    log(f"{es.name}: ranked {len(es.types)} types over {len(es.docs):,} documents "
        f"[{time.time() - t0:.0f} s]")
    return {"es": es, "inputs": inputs, "gold": gold, "ranked": ranked, "cfg": cfg,
            "scores": F.fused_matrix(ranked, len(es.docs)), "described": described}


def measure(run: dict, threshold: float) -> dict:
    """The four features of one split at the cut-off ``threshold``."""
    es, ranked = run["es"], run["ranked"]
    texts = F.mention_texts(es, run["inputs"].side.spans)
    qbe = F.query_by_example(es, run["inputs"], run["gold"], run["cfg"])
    described = macro({t: run["described"]["per_type"][t] for t in qbe["per_type"]})
    return {"split": es.name, "documents": len(es.docs), "types": len(es.types),
            "threshold": threshold,
            "exhaustive": F.exhaustive_at(es, run["scores"], threshold),
            "grid": F.exhaustive_grid(es, run["scores"]),
            "pairs": F.pair_precision(es, ranked, threshold, F.type_pairs(es)),
            "inventory": F.inventory_precision(es, ranked, texts, threshold),
            "by_example": {**qbe, "description": described}}


def tables(rows: list[dict], label: str) -> str:
    """One markdown table per feature, one line per split."""
    out = [f"### Exhaustive mode ({label}): documents with fused score >= T\n",
           "| split | docs | types | T | precision | recall | **F1** | returned / type | "
           "relevant / type |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    out += [f"| {r['split']} | {r['documents']:,} | {r['types']} | {r['threshold']:.2f} | "
            f"{e['precision']:.3f} | {e['recall']:.3f} | **{e['f1']:.3f}** | "
            f"{e['returned']:.1f} | {e['relevant']:.1f} |"
            for r in rows for e in [r["exhaustive"]]]
    out += [f"\n### Two types per document ({label}): R-Precision, relevant = documents "
            "with both\n", "| split | pairs | T | **R-Precision** | no cut-off | returned / pair | "
            "relevant / pair |", "|---|--:|--:|--:|--:|--:|--:|"]
    out += [f"| {r['split']} | {p['pairs']} | {r['threshold']:.2f} | **{p['r_precision']:.3f}**"
            f" | {p['uncut']:.3f} | {p['returned']:.1f} | {p['relevant']:.1f} |"
            for r in rows for p in [r["pairs"]]]
    out += [f"\n### Entity inventory ({label}): precision of the top {F.TOP_ENTITIES} "
            "entities against the type's gold mention texts\n",
            "| split | types | T | **precision** | entities listed / type | types listing none |",
            "|---|--:|--:|--:|--:|--:|"]
    out += [f"| {r['split']} | {r['types']} | {r['threshold']:.2f} | **{i['precision']:.3f}** | "
            f"{i['listed']:.1f} | {i['empty_types']} |" for r in rows for i in [r["inventory"]]]
    out += [f"\n### Query by example ({label}): R-Precision, {F.EXAMPLES} gold mentions per "
            "type, the example's document left out\n",
            "| split | types | examples | **example (hybrid)** | dense MiniLM, example sentence "
            "| **x dense** | description (hybrid) |", "|---|--:|--:|--:|--:|--:|--:|"]
    out += [f"| {r['split']} | {q['types']} | {q['examples']} | **{q['example']:.3f}** | "
            f"{q['dense_sentence']:.3f} | **{q['ratio']:.2f}x** | {q['description']:.3f} |"
            for r in rows for q in [r["by_example"]]]
    return "\n".join(out)


def grid_line(row: dict, step: int = 10) -> str:
    """Macro F1 every ``step`` grid points on the choice split (how flat the maximum is)."""
    return f"macro F1 by T on {row['split']}: " + ", ".join(
        f"{g['threshold']:.1f}: {g['f1']:.3f}" for g in row["grid"][::step])


def run_splits(args, keys: list[str], test: bool, opts, encoder, excluded) -> list[dict]:
    from ner_retriever.models.dense import DenseEncoder

    dense = DenseEncoder()  # MiniLM, loaded once for every split
    return [rank_split(load_split(args, k, test, excluded), opts, encoder, dense) for k in keys]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=validation.DATA)
    ap.add_argument("--splits", default=",".join(validation.SPLITS))
    ap.add_argument("--fewnerd-sample", type=int, default=validation.FEWNERD_SAMPLE)
    ap.add_argument("--threshold", type=float, default=None, help="use this cut-off instead "
                    "of choosing one (default: chosen on fewnerd; without it, the config's)")
    ap.add_argument("--test", action="store_true", help="also the test splits, same cut-off")
    ap.add_argument("--test-fewnerd-sample", type=int, default=results_table.FEWNERD_SAMPLE)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = [s.strip() for s in args.splits.split(",") if s.strip()]
    opts = EvalOptions(mentions="detected")  # default detector, fusion and shipped head
    encoder = build_encoder(opts)
    excluded = validation.detector_texts(args.data, validation.SHIPPED_DETECTOR_SAMPLE)
    runs = run_splits(args, keys, False, opts, encoder, excluded)
    threshold, rule = args.threshold, "given (--threshold)"
    if threshold is None and CHOICE_SPLIT in keys:
        run = runs[keys.index(CHOICE_SPLIT)]
        threshold = F.choose_threshold(F.exhaustive_grid(run["es"], run["scores"]))
        rule = f"macro-F1 maximum on {run['es'].name}"
    elif threshold is None:
        threshold, rule = EXHAUSTIVE_THRESHOLD, "config.EXHAUSTIVE_THRESHOLD"
    log(f"threshold {threshold:.2f} ({rule})")
    report = {"threshold": threshold, "rule": rule, "fusion": dataclasses.asdict(FusionConfig()),
              "validation": [measure(r, threshold) for r in runs]}
    md = [f"Cut-off T = {threshold:.2f} ({rule})", tables(report["validation"], "validation")]
    if CHOICE_SPLIT in keys:
        md.append(grid_line(report["validation"][keys.index(CHOICE_SPLIT)]))
    if args.test:
        del runs
        report["test"] = [measure(r, threshold) for r in run_splits(
            args, list(results_table.TEST_SETS), True, opts, encoder, excluded)]
        md.append(tables(report["test"], "test"))
    print("\n\n".join(md))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
