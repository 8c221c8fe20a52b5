"""End-to-end R-Precision on the VALIDATION splits: the one number every choice is made on.

    NER_RETRIEVER_CACHE=/tmp/nrcache python benchmarks/validation.py --json val.json

What a user gets (issue 19): the default detector's spans, the default hybrid ranking
(``evaluation.evaluate``, i.e. ``retrieve/fusion.hybrid_rank`` over an ``ArraySource``),
relevance from the gold labels; next to it the same ranking over the gold spans (the oracle
ceiling), bm25 and dense MiniLM, and the detector's recall and precision against the gold spans.
No test split is read. The splits (fixed by issue 19):

* ``fewnerd``: Few-NERD INTER ``dev.txt`` + ``test.txt`` (they hold only the 33 INTER *train*
  types, + 3 catch-alls not scored), a seeded sample (``--fewnerd-sample``, 2,000). Types fall
  into 5 folds (``evaluation.data.type_folds``: sorted, ``random.Random(0)`` shuffle, fold ``i``
  = ``order[i::5]``); with ``--fold-heads PATTERN`` (``{}`` = fold number 1-5) each fold's types
  are ranked with the head trained without them, the macro is over all 33. With one ``--head``
  (``auto``: the shipped head) every type is ranked with it; a head trained on all train types
  has SEEN them, which the output says (``head saw``, from the head's ``training.json``).
* ``multiconer``: MultiCoNER 2 ``en-train10.conll`` (train heads/detectors on train90 only).
* ``wnut``: WNUT-17 ``emerging.dev.conll`` (train on ``wnut17train.conll`` only).

Sentences a learned detector was trained on are left out before sampling
(``--detector-samples``: train-detector's per-file ``--max-sentences``; 1000 = the shipped
detector; ``none``: keep all). ``--group N`` scores documents of N sentences
(``evaluation.data.group_sentences``). Vectors, spans and dense vectors are cached under
``$NER_RETRIEVER_CACHE/eval``, so a rerun with other fusion weights only re-ranks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ner_retriever.config import (CONFIDENCE_WEIGHT, FEEDBACK_DOCS, FEEDBACK_WEIGHT,
                                  HYBRID_WEIGHT, MENTION_TEMPERATURE, NAME_WEIGHT)
from ner_retriever.detect.registry import DEFAULT_DETECTOR
from ner_retriever.evaluation.data import (EvalSet, group_sentences, load_eval_set,
                                           type_folds)
from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.evaluation.evaluate import EvalOptions, build_encoder, evaluate
from ner_retriever.evaluation.metrics import macro

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FEWNERD_SAMPLE = 2000
FOLDS = 5
SEED = 0
SHIPPED_DETECTOR_SAMPLE = 1000  # train-detector --max-sentences of the shipped detector
# The files the shipped detector's training sampled (src/ner_retriever/data/detectors).
DETECTOR_FILES = ["fewnerd/inter_bio_structshot/dev.txt", "fewnerd/inter_bio_structshot/test.txt",
                  "multiconer2_en/en-train10.conll", "multiconer2_en/en-train90.conll",
                  "wnut17/wnut17train.conll"]


@dataclasses.dataclass(frozen=True)
class Split:
    name: str
    files: tuple[str, ...]
    descriptions: str
    folds: bool = False  # type folds with one head each (--fold-heads)


SPLITS = {
    "fewnerd": Split("Few-NERD INTER train types (dev+test)",
                     ("fewnerd/inter_bio_structshot/dev.txt",
                      "fewnerd/inter_bio_structshot/test.txt"), "fewnerd", folds=True),
    "multiconer": Split("MultiCoNER 2 en-train10", ("multiconer2_en/en-train10.conll",),
                        "multiconer2"),
    "wnut": Split("WNUT-17 dev", ("wnut17/emerging.dev.conll",), "wnut17"),
}
BASELINES = ("bm25", "dense")
MENTION_METHODS = ("ner-retriever", "hybrid")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _norm(tag: str) -> str:
    return tag.lower().replace("-", "_")


def head_training_types(head: str) -> set[str] | None:
    """The types a head folder's ``training.json`` says it was trained on (None: unknown)."""
    if head == "none":
        return set()
    if head == "auto":
        folder = resources.files("ner_retriever") / "data" / "heads" / "smollm2-135m"
        path = Path(str(folder)) / "training.json"
    else:
        path = Path(head) / "training.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    trained = summary.get("train_types", []) + summary.get("val_types", [])
    multi = summary.get("multi_dataset")
    if not multi:
        return {_norm(t) for t in trained}
    from ner_retriever.training.type_mapping import TypeMapping  # dataset:tag labels

    mapping = TypeMapping.load(None if multi["mapping"] == "shipped" else multi["mapping"])
    members = set(trained) | {k for k, c in mapping.canonical.items() if c in set(trained)}
    return {_norm(m.split(":", 1)[1]) for m in members}


def seen_count(head: str, types: list[str]) -> int | None:
    """How many of ``types`` the head was trained on (None: the head does not say)."""
    trained = head_training_types(head)
    return None if trained is None else sum(_norm(t) in trained for t in types)


def detector_texts(data: Path, sample: int | None) -> set[str]:
    """Sentences train-detector samples at ``--max-sentences sample`` from DETECTOR_FILES."""
    from ner_retriever.training.detector import training_sentences

    return training_sentences([data / f for f in DETECTOR_FILES], sample)


def subset(es: EvalSet, types: list[str]) -> EvalSet:
    """The same documents (same cache keys), only ``types`` scored."""
    return dataclasses.replace(es, types=types, relevant={t: es.relevant[t] for t in types},
                               descriptions={t: es.descriptions[t] for t in types})


def merge(reports: list[dict]) -> dict:
    """Fold reports -> one: per-type results united, macro over all types."""
    out = dict(reports[0])
    results = {}
    for method in reports[0]["results"]:
        per_type = {t: v for r in reports for t, v in r["results"][method]["per_type"].items()}
        results[method] = {"r_precision": macro(per_type), "per_type": per_type}
    out["results"], out["types"] = results, len(results[next(iter(results))]["per_type"])
    out["fold_heads"] = [r["settings"].get("head") is not None for r in reports]
    return out


def run_split(es: EvalSet, heads: list[tuple[list[str], str]], opts: EvalOptions, encoder,
              baselines: tuple[str, ...] = BASELINES) -> dict:
    """Gold and detected runs of one split; ``heads``: (types, head) per fold."""
    runs = {}
    for mentions, methods in (("gold", baselines + MENTION_METHODS),
                              ("detected", MENTION_METHODS)):
        t0 = time.time()
        reports = [evaluate(subset(es, types), dataclasses.replace(
            opts, head=head, mentions=mentions, methods=methods), encoder=encoder)
            for types, head in heads]
        runs[mentions] = merge(reports)
        log(f"{es.name} ({mentions}): " + ", ".join(
            f"{m} {r['r_precision']:.3f}" for m, r in runs[mentions]["results"].items())
            + f" [{time.time() - t0:.0f} s]")
    return runs


def split_heads(split: Split, es: EvalSet, args) -> list[tuple[list[str], str]]:
    """One (types, head) pair, or one per type fold with ``--fold-heads``."""
    if not (split.folds and args.fold_heads):
        return [(es.types, args.head)]
    # folds over every type of the files, so a sample never shifts them
    every = load_eval_set([args.data / f for f in split.files]).types
    folds = [[t for t in fold if t in es.relevant] for fold in type_folds(every, FOLDS, SEED)]
    log(f"type folds: {folds}")
    return [(fold, args.fold_heads.replace("{}", str(k + 1))) for k, fold in enumerate(folds)]


def row(split: Split, es: EvalSet, runs: dict, heads) -> dict:
    """The figures of one split, flat."""
    gold, det = runs["gold"]["results"], runs["detected"]["results"]
    seen = [seen_count(h, types) for types, h in heads]
    quality = runs["detected"]["detection_recall"]
    return {"split": split.name, "documents": len(es.docs), "types": len(es.types),
            "head": [h for _, h in heads] if len(heads) > 1 else heads[0][1],
            "head_saw_types": None if None in seen else sum(seen),
            "baselines": {m: gold[m]["r_precision"] for m in gold if m not in MENTION_METHODS},
            "gold_mentions": gold["ner-retriever"]["r_precision"],
            "gold_hybrid": gold["hybrid"]["r_precision"],
            "detected_mentions": det["ner-retriever"]["r_precision"],
            "detected_hybrid": det["hybrid"]["r_precision"],
            "gap": gold["hybrid"]["r_precision"] - det["hybrid"]["r_precision"],
            "detection": {k: v for k, v in quality.items() if k != "detector"},
            "per_type": {m: {"gold": gold[m]["per_type"], "detected": det[m]["per_type"]}
                         for m in MENTION_METHODS}}


def markdown(rows: list[dict], label: str = "split") -> str:
    """One line per split: baselines, gold (oracle) and detected figures, detection quality."""
    names = list(rows[0]["baselines"])
    lines = [f"| {label} | docs | types | head saw | " + " | ".join(names)
             + " | gold mentions | gold hybrid | detected mentions | **detected hybrid** | "
             "x best baseline | gap | recall exact / overlap | precision exact / overlap | "
             "spans / gold |", "|---|" + "--:|" * (len(names) + 12)]
    for r in rows:
        d = r["detection"]
        saw = "?" if r["head_saw_types"] is None else f"{r['head_saw_types']}/{r['types']}"
        best = max(r["baselines"].values())
        lines.append(
            f"| {r['split']} | {r['documents']:,} | {r['types']} | {saw} | "
            + " | ".join(f"{r['baselines'][m]:.3f}" for m in names)
            + f" | {r['gold_mentions']:.3f} | {r['gold_hybrid']:.3f} | "
            f"{r['detected_mentions']:.3f} | **{r['detected_hybrid']:.3f}** | "
            f"{r['detected_hybrid'] / best:.2f}x | {r['gap']:.3f} | "
            f"{d['exact']:.3f} / {d['overlap']:.3f} | {d['precision_exact']:.3f} / "
            f"{d['precision_overlap']:.3f} | {d['detected']:,} / {d['gold']:,} |")
    mean = float(np.mean([r["detected_hybrid"] for r in rows]))
    lines.append(f"\nmean detected hybrid over {len(rows)} {label}s: **{mean:.4f}**")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--splits", default=",".join(SPLITS), help="comma-separated: "
                    + ", ".join(SPLITS))
    ap.add_argument("--head", default="auto", help="auto (shipped), none, or a head folder")
    ap.add_argument("--fold-heads", default=None, help="Few-NERD: head folder per type fold, "
                    "'{}' = fold number 1-5 (e.g. heads/fold{})")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--detector-samples", default=str(SHIPPED_DETECTOR_SAMPLE),
                    help="leave out the sentences train-detector samples at this "
                         "--max-sentences ('none': keep all)")
    ap.add_argument("--confidence-weight", type=float, default=CONFIDENCE_WEIGHT)
    ap.add_argument("--hybrid-weight", type=float, default=HYBRID_WEIGHT)
    ap.add_argument("--name-weight", type=float, default=NAME_WEIGHT)
    ap.add_argument("--no-names", action="store_true", help="hybrid without the name side")
    ap.add_argument("--mention-temperature", type=float, default=MENTION_TEMPERATURE)
    ap.add_argument("--feedback", type=int, default=FEEDBACK_DOCS)
    ap.add_argument("--feedback-weight", type=float, default=FEEDBACK_WEIGHT)
    ap.add_argument("--query-template", default=None, help="default: the encoder's")
    ap.add_argument("--model", default=None)
    ap.add_argument("--block", default=None, help="block, or blocks joined by + (15+7)")
    ap.add_argument("--component", default="value")
    ap.add_argument("--fewnerd-sample", type=int, default=FEWNERD_SAMPLE)
    ap.add_argument("--sample", type=int, default=None,
                    help="sentences sampled from the other splits (default: all)")
    ap.add_argument("--group", type=int, default=1, help="documents of N sentences")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    return ap.parse_args(argv)


def options(args) -> EvalOptions:
    return EvalOptions(detector=args.detector, model=args.model, block=args.block,
                       component=args.component, head=args.head,
                       query_template=args.query_template, hybrid_weight=args.hybrid_weight,
                       names=not args.no_names, name_weight=args.name_weight,
                       mention_temperature=args.mention_temperature, feedback=args.feedback,
                       feedback_weight=args.feedback_weight,
                       confidence_weight=args.confidence_weight)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise SystemExit(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    opts = options(args)
    encoder = build_encoder(opts)
    size = None if args.detector_samples == "none" else int(args.detector_samples)
    excluded = detector_texts(args.data, size) if args.detector_samples != "none" else set()
    rows, settings = [], None
    for key in wanted:
        split = SPLITS[key]
        sample = args.fewnerd_sample if key == "fewnerd" else args.sample
        es = group_sentences(load_eval_set([args.data / f for f in split.files],
                                           load_descriptions(split.descriptions),
                                           sample=sample, seed=SEED, exclude_texts=excluded),
                             args.group)
        heads = split_heads(split, es, args)
        runs = run_split(dataclasses.replace(es, name=split.name), heads, opts, encoder)
        rows.append(row(split, es, runs, heads))
        settings = settings or runs["detected"]["settings"]
    print(markdown(rows))
    if args.json:
        keep = {k: v for k, v in (settings or {}).items() if k != "descriptions"}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "settings": keep, "splits": rows},
                                        indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
