"""Rerun the tables of docs/RESULTS.md: choices on TRAINING types, then zero-shot test tables.

    NER_RETRIEVER_CACHE=/tmp/nrcache PYTHONPATH=src python benchmarks/results_table.py \
        --data ../shared/data --json benchmarks/results.json > /tmp/results.md

Part 1 (Few-NERD INTER *train* types, ``inter_bio_structshot/dev.txt``, 2,000 sentences,
seed 0): query-template / description-casing ablation for the raw default encoder, and the
hybrid weight grid. The chosen template and weight are the ones shipped as defaults.
Part 2 (types never used for any choice): Few-NERD INTER test (``big_test.txt``, 5,000
sentences, seed 0), MultiCoNER 2 en-dev and WNUT-17 test, methods ner-retriever (raw vectors,
or ``--head``), bm25, dense and hybrid, with gold mentions (and detected mentions with
``--detected``).

Mention vectors are cached under ``$NER_RETRIEVER_CACHE/eval``: a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.models.head import normalize
from ner_retriever.config import HYBRID_WEIGHT
from ner_retriever.io.cache import default_cache_root
from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.evaluate import EvalOptions, build_encoder, evaluate
from ner_retriever.evaluation.metrics import evaluate_scores
from ner_retriever.evaluation.scoring import (dense_queries, embed_queries, hybrid_rank,
                                              mention_document_scores)
from ner_retriever.evaluation.vectors import dense_document_vectors, mention_vectors_for
from ner_retriever.models.dense import DenseEncoder
from ner_retriever.retrieve.sources import ArraySource

# The vector is read at the description's last token, so with a causal model only the text
# BEFORE "{}" can matter ("Examples of {} include" == "Examples of {}").
TEMPLATES = ["{}", "Examples of {}", "a {}", "the {}", "Named entity type: {}", "Names of {}",
             "a famous {}"]
WEIGHTS = [round(w, 2) for w in np.linspace(0.0, 1.0, 11)]


def datasets(root: Path, fewnerd_sample: int = 5000
             ) -> list[tuple[str, list[Path], str, int | None]]:
    return [
        (f"Few-NERD INTER test ({fewnerd_sample:,} sent.)",
         [root / "fewnerd/inter_bio_structshot/big_test.txt"], "fewnerd", fewnerd_sample),
        ("MultiCoNER 2 en-dev", [root / "multiconer2_en/en-dev.conll"], "multiconer2", None),
        ("WNUT-17 test", [root / "wnut17/emerging.test.annotated"], "wnut17", None),
    ]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_type_choices(root: Path, opts: EvalOptions, encoder, sample: int) -> dict:
    """Template/casing ablation and hybrid-weight grid on Few-NERD INTER train types."""
    path = root / "fewnerd/inter_bio_structshot/dev.txt"
    cache = default_cache_root()
    out: dict = {"data": f"{path.name} (INTER train types), {sample} sentences, seed 0"}
    es = load_eval_set([path], load_descriptions("fewnerd"), sample=sample, seed=0)
    out["documents"], out["types"] = len(es.docs), len(es.types)
    vectors, doc_index = mention_vectors_for(es, encoder, es.gold_spans, cache, "gold")
    raw = vectors[(encoder.config.block, encoder.config.component)]
    mentions = normalize(raw)
    n = len(es.docs)
    rows, variants = [], {}
    for lower in (False, True):
        descs = {t: [d.lower() if lower else title(d) for d in v]
                 for t, v in es.descriptions.items()}
        variants[lower] = dataclasses.replace(es, descriptions=descs)
        for template in TEMPLATES:
            enc = encoder_with_template(encoder, template)
            scores = mention_document_scores(embed_queries(enc, variants[lower]), mentions,
                                             doc_index, n)
            rp = evaluate_scores(es, scores)["r_precision"]
            rows.append({"template": template, "lowercase": lower, "r_precision": rp})
            log(f"train types: template {template!r} lower={lower}: {rp:.3f}")
    out["templates"] = rows
    best = max(rows, key=lambda r: r["r_precision"])
    out["best_template"] = best
    # Hybrid weight on train types, with the best query side found above.
    enc = encoder_with_template(encoder, best["template"])
    queries = embed_queries(enc, variants[best["lowercase"]])
    dense_model = DenseEncoder()
    documents = dense_document_vectors(es, cache, dense_model)
    queries_d = dense_queries(es, dense_model)
    out["dense"] = evaluate_scores(es, queries_d @ documents.T)["r_precision"]
    source = ArraySource(mentions, doc_index, documents)  # no names, no feedback: the weight alone
    out["bm25"] = evaluate(es, EvalOptions(methods=["bm25"]))["results"]["bm25"]["r_precision"]
    grid = []
    for w in WEIGHTS:
        scores = hybrid_rank(es, source, queries, queries_d,
                             FusionConfig(weight=w, feedback_docs=0))
        rp = evaluate_scores(es, scores)["r_precision"]
        grid.append({"weight": w, "r_precision": rp})
        log(f"train types: hybrid w={w}: {rp:.3f}")
    out["hybrid"] = grid
    out["best_weight"] = max(grid, key=lambda r: r["r_precision"])
    return out


def title(text: str) -> str:
    """"bodies of water" -> "Bodies of Water" (the casing of the paper's type names)."""
    return " ".join(w if w in ("of", "or", "and") else w[:1].upper() + w[1:]
                    for w in text.split())


def encoder_with_template(encoder, template: str):
    """The same loaded model with another query template (no reload)."""
    import copy

    clone = copy.copy(encoder)
    clone.config = encoder.config.model_copy(update={"query_template": template})
    return clone


def markdown_test_table(reports: list[tuple[str, dict]]) -> str:
    methods = list(reports[0][1]["results"])
    lines = ["| dataset | documents | types | mentions | " + " | ".join(methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for name, rep in reports:
        cells = [f"{rep['results'][m]['r_precision']:.3f}" for m in methods]
        lines.append(f"| {name} | {rep['documents']:,} | {rep['types']} | {rep['mentions']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared" / "data")
    parser.add_argument("--model", default=None)
    parser.add_argument("--block", type=int, default=None)
    parser.add_argument("--component", default="value")
    parser.add_argument("--head", default=None)
    parser.add_argument("--query-template", default=None,
                        help="default: the best on train types (or '{}' with --skip-train)")
    parser.add_argument("--lowercase", action="store_true",
                        help="lower-case descriptions (default: as chosen on train types)")
    parser.add_argument("--hybrid-weight", type=float, default=None,
                        help="default: the best on train types (or HYBRID_WEIGHT)")
    parser.add_argument("--train-sample", type=int, default=2000)
    parser.add_argument("--skip-train", action="store_true", help="only the test tables")
    parser.add_argument("--detected", action="store_true", help="also --mentions detected")
    parser.add_argument("--detected-on", default=None,
                        help="comma-separated dataset prefixes for --detected (default: all)")
    parser.add_argument("--fewnerd-sample", type=int, default=5000,
                        help="sentences sampled (seed 0) from Few-NERD INTER big_test.txt")
    parser.add_argument("--only", default=None, help="comma-separated dataset prefixes")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()

    opts = EvalOptions(model=args.model, block=args.block, component=args.component,
                       head=args.head, query_template=args.query_template or "{}")
    encoder = build_encoder(opts)
    log(f"encoder {encoder.config.model} block {encoder.config.block} "
        f"{encoder.config.component}")
    md = []
    template, weight, lowercase = args.query_template, args.hybrid_weight, args.lowercase
    everything: dict = {}
    if not args.skip_train:
        choices = train_type_choices(args.data, opts, encoder, args.train_sample)
        everything["train_types"] = choices
        if template is None:
            template = choices["best_template"]["template"]
            lowercase = lowercase or choices["best_template"]["lowercase"]
        if weight is None:
            weight = choices["best_weight"]["weight"]
        md.append("### Choices on Few-NERD INTER train types\n")
        md.append("| query template | descriptions | macro R-Precision |\n|---|---|---|")
        for r in choices["templates"]:
            md.append(f"| `{r['template']}` | {'lower case' if r['lowercase'] else 'Title Case'}"
                      f" | {r['r_precision']:.3f} |")
        md.append("\n| hybrid weight w | macro R-Precision |\n|---|---|")
        for r in choices["hybrid"]:
            md.append(f"| {r['weight']} | {r['r_precision']:.3f} |")
        md.append(f"\nbm25 {choices['bm25']:.3f}, dense {choices['dense']:.3f} on the same "
                  "train-type documents.\n")
    template = "{}" if template is None else template
    weight = HYBRID_WEIGHT if weight is None else weight
    opts = dataclasses.replace(opts, query_template=template, hybrid_weight=weight)
    encoder = encoder_with_template(encoder, template)
    everything["settings"] = {"model": encoder.config.model, "block": encoder.config.block,
                              "component": encoder.config.component, "head": args.head,
                              "query_template": template, "lowercase": lowercase,
                              "hybrid_weight": weight}
    log(f"test settings: {everything['settings']}")
    reports = []
    wanted = [p.strip().lower() for p in args.only.split(",")] if args.only else None
    detected_on = [p.strip().lower() for p in args.detected_on.split(",")] \
        if args.detected_on else None
    for name, files, desc, sample in reversed(datasets(args.data, args.fewnerd_sample)):
        if wanted and not any(name.lower().startswith(w) for w in wanted):
            continue
        es = load_eval_set(files, load_descriptions(desc), sample=sample, seed=0)
        if lowercase:
            es = dataclasses.replace(es, descriptions={t: [d.lower() for d in v]
                                                       for t, v in es.descriptions.items()})
        detected = args.detected and (detected_on is None or any(
            name.lower().startswith(w) for w in detected_on))
        for mentions in (["gold", "detected"] if detected else ["gold"]):
            t0 = time.time()
            methods = ("ner-retriever", "bm25", "dense", "hybrid")
            rep = evaluate(es, dataclasses.replace(opts, methods=methods, mentions=mentions),
                           encoder=encoder)
            log(f"{name} ({mentions}): " + ", ".join(
                f"{m} {r['r_precision']:.3f}" for m, r in rep["results"].items())
                + f" [{time.time() - t0:.0f} s]")
            reports.append((name, rep))
    order = [d[0] for d in datasets(args.data, args.fewnerd_sample)]
    reports.sort(key=lambda r: (order.index(r[0]), r[1]["mentions"] != "gold"))
    everything["test"] = [{"name": n, **r} for n, r in reports]
    md.append(f"### Zero-shot test tables (macro R-Precision)\n\nsettings: "
              f"{json.dumps(everything['settings'])}\n")
    md.append(markdown_test_table(reports))
    for name, rep in reports:
        if rep["detection_recall"]:
            rec = rep["detection_recall"]
            md.append(f"\n{name}: detection recall {rec['exact']:.3f} exact / "
                      f"{rec['overlap']:.3f} overlap ({rec['detected']:,} detected spans, "
                      f"{rec['gold']:,} gold)")
    print("\n".join(md))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(everything, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
