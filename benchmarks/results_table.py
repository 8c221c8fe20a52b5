"""The tables of docs/RESULTS.md: the shared TEST splits, measured once after every choice.

    NER_RETRIEVER_CACHE=/tmp/nrcache_eval python benchmarks/results_table.py --json results.json

Per shared set (Few-NERD INTER test ``big_test.txt``, 5,000 sentences seed 0; MultiCoNER 2
en-dev; WNUT-17 test), single sentences and documents of ``--group`` (8) sentences
(``evaluation.data.group_sentences``): bm25, dense MiniLM, dense all-mpnet-base-v2 (the
``mpnet`` extra), the hybrid ranking over gold spans (the oracle ceiling) and over the default
detector's spans (what users get, ``end to end``), the gap, and the detector's recall and
precision. Every figure comes from ``evaluation.evaluate`` through ``benchmarks/validation.py``'s
runner (one table format for validation and test). Choices are made on validation splits only
(``benchmarks/validation.py``); this script never feeds one back.

``--heads fewnerd=DIR,multiconer=DIR,wnut=DIR``: the leave-one-dataset-out head per set (issue
19 item 4; default: ``--head``, ``auto`` = the shipped head). ``--train-choices`` also reruns
the query-template ablation and the hybrid-weight grid on Few-NERD INTER train types
(``dev.txt``, raw vectors), the figures of the RESULTS.md "Query template" section.

Vectors, spans and dense vectors are cached under ``$NER_RETRIEVER_CACHE/eval``: a rerun only
re-scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.data import group_sentences, load_eval_set
from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.evaluation.evaluate import EvalOptions, build_encoder, evaluate
from ner_retriever.evaluation.metrics import evaluate_scores
from ner_retriever.evaluation.scoring import (dense_queries, embed_queries, hybrid_rank,
                                              mention_document_scores)
from ner_retriever.evaluation.vectors import (dense_document_vectors, encoder_vectors,
                                              mention_vectors_for)
from ner_retriever.io.cache import default_cache_root
from ner_retriever.models.dense import DenseEncoder
from ner_retriever.models.head import normalize
from ner_retriever.retrieve.sources import ArraySource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validation import Split, log, markdown, row, run_split  # noqa: E402  (sibling script)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FEWNERD_SAMPLE = 5000
GROUP = 8
SEED = 0
BASELINES = ("bm25", "dense", "dense-mpnet")
# The vector is read at the description's last token, so with a causal model only the text
# BEFORE "{}" can matter ("Examples of {} include" == "Examples of {}").
TEMPLATES = ["{}", "Examples of {}", "a {}", "the {}", "Named entity type: {}", "Names of {}",
             "a famous {}"]
WEIGHTS = [round(w, 2) for w in np.linspace(0.0, 1.0, 11)]
TEST_SETS = {
    "fewnerd": Split(f"Few-NERD INTER test ({FEWNERD_SAMPLE:,} sent.)",
                     ("fewnerd/inter_bio_structshot/big_test.txt",), "fewnerd"),
    "multiconer": Split("MultiCoNER 2 en-dev", ("multiconer2_en/en-dev.conll",), "multiconer2"),
    "wnut": Split("WNUT-17 test", ("wnut17/emerging.test.annotated",), "wnut17"),
}


def train_type_choices(root: Path, opts: EvalOptions, encoder, sample: int) -> dict:
    """Template/casing ablation and hybrid-weight grid on Few-NERD INTER train types."""
    path = root / "fewnerd/inter_bio_structshot/dev.txt"
    cache = default_cache_root()
    out: dict = {"data": f"{path.name} (INTER train types), {sample} sentences, seed 0"}
    es = load_eval_set([path], load_descriptions("fewnerd"), sample=sample, seed=0)
    out["documents"], out["types"] = len(es.docs), len(es.types)
    vectors, doc_index = mention_vectors_for(es, encoder, es.gold_spans, cache, "gold")
    raw = encoder_vectors(vectors, encoder.config)
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




def train_choices_markdown(choices: dict) -> str:
    lines = ["### Choices on Few-NERD INTER train types (raw vectors)\n",
             "| query template | descriptions | macro R-Precision |\n|---|---|---|"]
    for r in choices["templates"]:
        lines.append(f"| `{r['template']}` | {'lower case' if r['lowercase'] else 'Title Case'}"
                     f" | {r['r_precision']:.3f} |")
    lines.append("\n| hybrid weight w | macro R-Precision |\n|---|---|")
    lines += [f"| {r['weight']} | {r['r_precision']:.3f} |" for r in choices["hybrid"]]
    lines.append(f"\nbm25 {choices['bm25']:.3f}, dense {choices['dense']:.3f} on the same "
                 "train-type documents.\n")
    return "\n".join(lines)


def parse_heads(text: str | None, default: str) -> dict[str, str]:
    """``fewnerd=DIR,wnut=DIR`` -> a head per test set (``default`` for the others)."""
    heads = {key: default for key in TEST_SETS}
    for part in filter(None, (text or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in TEST_SETS:
            raise SystemExit(f"--heads takes SET=DIR with SET in {', '.join(TEST_SETS)}, "
                             f"not {part!r}")
        heads[key.strip()] = value.strip()
    return heads


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", default=",".join(TEST_SETS), help="comma-separated: "
                    + ", ".join(TEST_SETS))
    ap.add_argument("--head", default="auto", help="auto (shipped), none, or a head folder")
    ap.add_argument("--heads", default=None, help="per set: fewnerd=DIR,multiconer=DIR,wnut=DIR")
    ap.add_argument("--detector", default=None, help="default: the index default")
    ap.add_argument("--fewnerd-sample", type=int, default=FEWNERD_SAMPLE)
    ap.add_argument("--group", type=int, default=GROUP, help="also documents of N sentences "
                    "(1: single sentences only)")
    ap.add_argument("--no-mpnet", action="store_true", help="leave out dense-mpnet")
    ap.add_argument("--train-choices", action="store_true",
                    help="also the template ablation and weight grid on train types")
    ap.add_argument("--train-sample", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    opts = EvalOptions() if args.detector is None else EvalOptions(detector=args.detector)
    encoder = build_encoder(opts)
    heads = parse_heads(args.heads, args.head)
    baselines = BASELINES[:2] if args.no_mpnet else BASELINES
    everything: dict = {"heads": heads, "group": args.group}
    md = []
    if args.train_choices:
        raw = dataclasses.replace(opts, head="none", query_template="{}")
        everything["train_types"] = train_type_choices(args.data, raw, build_encoder(raw),
                                                       args.train_sample)
        md.append(train_choices_markdown(everything["train_types"]))
    sizes = [1] + ([args.group] if args.group > 1 else [])
    rows: dict[int, list[dict]] = {n: [] for n in sizes}
    for key in [k.strip() for k in args.only.split(",") if k.strip()]:
        split = TEST_SETS[key]
        sample = args.fewnerd_sample if key == "fewnerd" else None
        if sample is not None:
            split = dataclasses.replace(split, name=f"Few-NERD INTER test ({sample:,} sent.)")
        base = load_eval_set([args.data / f for f in split.files],
                             load_descriptions(split.descriptions), sample=sample, seed=SEED)
        for n in sizes:
            es = dataclasses.replace(group_sentences(base, n), name=split.name)
            t0 = time.time()
            runs = run_split(es, [(es.types, heads[key])], opts, encoder, baselines)
            rows[n].append(row(split, es, runs, [(es.types, heads[key])]))
            everything.setdefault("settings", runs["detected"]["settings"])
            log(f"{split.name}, {n}-sentence documents: {time.time() - t0:.0f} s")
    for n in sizes:
        title_ = "single sentences" if n == 1 else f"documents of {n} sentences (seed {SEED})"
        md.append(f"### Test splits, {title_} (macro R-Precision)\n")
        md.append(markdown(rows[n], "dataset"))
    everything["test"] = {str(n): r for n, r in rows.items()}
    print("\n\n".join(md))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(everything, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
