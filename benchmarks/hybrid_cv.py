"""Hybrid ranking settings chosen WITH the shipped head, by cross-validation over training types.

    NER_RETRIEVER_CACHE=/tmp/nrcache PYTHONPATH=src python benchmarks/hybrid_cv.py \
        --json benchmarks/hybrid_cv.json

Data: the head's own training sample, Few-NERD INTER ``dev.txt`` (4,000 sentences) +
``test.txt`` (2,000 sentences), seed 0; both files hold only the 33 (+3 catch-all) INTER
*train* types. No test split of any dataset is read. ``--sentences N`` samples at most N
sentences per file instead (a smoke test: fewer types, numbers not comparable).

Folds: exactly ``train.train_head``'s cross-validation (usable types sorted,
``random.Random(0).shuffle``, fold ``i`` = ``order[i::5]``). For each fold a head is trained on
the other four folds' types with the shipped settings (``TrainConfig`` defaults, 5 epochs =
the count the shipped head's CV chose, ``cv_folds=0``, ``val_fraction=0``, descriptions
``benchmarks/fewnerd_train_descriptions.json``); the held-out fold's types are then ranked
over ALL sample sentences with the query a user would type (the shipped ``fewnerd`` map's
readable name): mentions only (best mention), dense (all-MiniLM-L6-v2), names only (best
mention name, MiniLM) and the hybrid ranking, always ``evaluation.scoring.hybrid_rank`` over
an ``ArraySource`` (the function ``Retriever.search`` runs), one ``config.FusionConfig`` per
variant. Each of the 33 types is held out exactly once; the headline is the macro over all 33.

Variants (same folds, same heads, same queries; the mention side is always the soft maximum
over a document's mentions):

* ``hybrid w=W``: the weight grid, mention + dense sides, no names, no feedback
  (``t = config.MENTION_TEMPERATURE``);
* ``hybrid w=0.6, soft max t=T``: the temperature grid (``mention_temperature``) at the
  shipped weight, no names, no feedback; the one at the shipped temperature is "shipped" in
  ``vs_shipped_*``;
* ``shipped hybrid + names lam=L``: the names side on (``name_weight = L``), no feedback;
* ``feedback m=M beta=B``: the full ranking, names on, pseudo-relevance feedback from the top
  ``M`` documents with weight ``B`` on all three sides (``feedback_docs`` x ``feedback_weight``).

Dropped, as the one shared ranking cannot express them (numbers in docs/history.md): RRF,
the dense query ``a {}``, ``concat``-mixed names, feedback on only some sides.
The weight grid in docs/RESULTS.md was measured with the best mention; a rerun pools softly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from ner_retriever.config import HYBRID_WEIGHT, MENTION_TEMPERATURE, FusionConfig

ROOT = Path(__file__).resolve().parents[1]
FEWNERD = ROOT.parent / "shared" / "data" / "fewnerd" / "inter_bio_structshot"
TRAIN_FILES = [(FEWNERD / "dev.txt", 4000), (FEWNERD / "test.txt", 2000)]
PARAPHRASES = ROOT / "benchmarks" / "fewnerd_train_descriptions.json"
WEIGHTS = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7]
BASE_WEIGHT = 0.5  # the weight chosen with raw vectors, before the head: the paired baseline
TEMPERATURES = [0.03, 0.05, 0.1, 0.2]
NAME_WEIGHTS = [0.1, 0.2, 0.3, 0.5]
# Pseudo-relevance feedback: (feedback documents, beta), always on all three sides.
FEEDBACK = [(m, b) for m in (3, 5, 10, 20) for b in (0.3, 0.7, 1.0, 1.5)]
SHIPPED = f"hybrid w={HYBRID_WEIGHT}, soft max t={MENTION_TEMPERATURE}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cv_folds(types: list[str], folds: int, seed: int) -> list[list[str]]:
    """The folds of ``train.train_head`` (same code, same order)."""
    order = sorted(types)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::folds]) for i in range(folds)]


def hybrid_variants() -> dict[str, tuple[FusionConfig, bool]]:
    """``method -> (fusion settings, names side on)`` for every hybrid variant."""
    out = {f"hybrid w={w}": (FusionConfig(weight=w, feedback_docs=0), False) for w in WEIGHTS}
    for t in TEMPERATURES:
        out[f"hybrid w={HYBRID_WEIGHT}, soft max t={t}"] = (
            FusionConfig(mention_temperature=t, feedback_docs=0), False)
    for lam in NAME_WEIGHTS:
        out[f"shipped hybrid + names lam={lam}"] = (
            FusionConfig(name_weight=lam, feedback_docs=0), True)
    for m, b in FEEDBACK:
        out[f"feedback m={m} beta={b}"] = (
            FusionConfig(feedback_docs=m, feedback_weight=b), True)
    return out


def fold_scores(es, head, encoder, ms, names: np.ndarray, doc_vectors: np.ndarray,
                dense_encoder, variants: dict[str, tuple[FusionConfig, bool]]
                ) -> dict[str, np.ndarray]:
    """``method -> (n_types, n_docs)`` scores of one held-out fold."""
    from ner_retriever.evaluation.scoring import (dense_queries, embed_queries, hybrid_rank,
                                                  mention_document_scores)
    from ner_retriever.models.head import to_index_space
    from ner_retriever.retrieve.sources import ArraySource

    mentions = to_index_space(head, ms.vectors)
    query = embed_queries(encoder, es, head)
    query_d = dense_queries(es, dense_encoder)  # also the names side's query
    scores = {"mentions": mention_document_scores(query, mentions, ms.docs, ms.n_docs),
              "dense": query_d @ doc_vectors.T,
              "names only": mention_document_scores(query_d, names, ms.docs, ms.n_docs)}
    sources = {False: ArraySource(mentions, ms.docs, doc_vectors),
               True: ArraySource(mentions, ms.docs, doc_vectors, names, ms.docs)}
    done: dict[tuple[FusionConfig, bool], np.ndarray] = {}  # a variant listed twice runs once
    for method, key in variants.items():
        if key not in done:
            done[key] = hybrid_rank(es, sources[key[1]], query, query_d, key[0])
        scores[method] = done[key]
    return scores


def paired(summary: dict, per_fold: dict[str, list[float]], methods: list[str]) -> None:
    """Each method's per-fold difference to the baseline weight and to the shipped pooling."""
    base = np.array(per_fold[f"hybrid w={BASE_WEIGHT}"])
    shipped = np.array(per_fold[SHIPPED])
    for m in methods:  # paired, fold by fold
        diff = np.array(per_fold[m]) - base
        summary[m]["vs_w0.5_per_fold"] = [round(float(d), 4) for d in diff]
        summary[m]["vs_w0.5_mean"] = float(diff.mean())
        summary[m]["vs_w0.5_sd"] = float(diff.std(ddof=1))
        diff = np.array(per_fold[m]) - shipped
        summary[m]["vs_shipped_per_fold"] = [round(float(d), 4) for d in diff]
        summary[m]["vs_shipped_mean"] = float(diff.mean())


def load_sample(encoder, seed: int, sentences: int | None):
    """The training files' mentions (cached after the first run), their sentences and the
    sample size taken from each file."""
    from ner_retriever.training.mentions import MentionSet, extract_mentions, sample_documents

    sets, docs, samples = [], [], []
    for p, n in TRAIN_FILES:
        n = n if sentences is None else min(n, sentences)
        docs += sample_documents(p, n, seed)
        sets.append(extract_mentions(p, encoder, n, seed))
        samples.append(n)
    return MentionSet.concat(sets), docs, samples


def report(args, ms, usable, folds, queries, cfg, samples, per_type, per_fold, t0) -> dict:
    """The JSON summary: macro, per fold, paired differences, per type."""
    from ner_retriever.evaluation.metrics import macro

    methods = list(per_type)
    summary = {m: {"macro_33": macro(per_type[m]),
                   "per_fold": [round(v, 4) for v in per_fold[m]],
                   "fold_sd": float(np.std(per_fold[m], ddof=1))} for m in methods}
    paired(summary, per_fold, methods)
    grid = {w: summary[f"hybrid w={w}"]["macro_33"] for w in WEIGHTS}
    best_w = max(WEIGHTS, key=lambda w: (grid[w], -abs(w - BASE_WEIGHT)))  # ties: nearer 0.5
    return {
        "data": [f"{p.name} ({n} sentences, seed {args.seed})"
                 for (p, _), n in zip(TRAIN_FILES, samples)],
        "sentences": ms.n_docs, "mentions": len(ms), "types": len(usable),
        "folds": folds, "queries": queries,
        "train": {"epochs": args.epochs, "descriptions": str(PARAPHRASES.relative_to(ROOT)),
                  "config": dataclasses.asdict(cfg)},
        "methods": summary, "best_weight": best_w,
        "per_type": {m: {t: round(v, 4) for t, v in per_type[m].items()} for m in methods},
        "seconds": round(time.time() - t0, 1),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sentences", type=int, default=None,
                        help="at most this many sentences per file (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    import torch

    from ner_retriever.io.cache import default_cache_root
    from ner_retriever.evaluation.data import EvalSet
    from ner_retriever.evaluation.descriptions import is_other_tag
    from ner_retriever.evaluation.descriptions import load_descriptions as load_map
    from ner_retriever.evaluation.metrics import macro, r_precision
    from ner_retriever.evaluation.vectors import dense_document_vectors
    from ner_retriever.io.corpus import file_digest
    from ner_retriever.models.dense import DenseEncoder
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.training.train import TrainConfig, train_head
    from ner_retriever.training.validation import encode_descriptions, load_descriptions

    torch.set_num_threads(2)
    t0 = time.time()
    encoder = TransformerEncoder(EncoderConfig(block=22, component="value",
                                               query_template="mentions of {}"))
    ms, docs, samples = load_sample(encoder, args.seed, args.sentences)
    log(f"{len(ms)} mentions in {ms.n_docs} sentences, {len(ms.types)} tags")

    desc = load_descriptions(PARAPHRASES, ms.types)  # what trains the heads (as shipped)
    desc_vectors = encode_descriptions(encoder, desc)
    cfg = TrainConfig(epochs=args.epochs, cv_folds=0, val_fraction=0, seed=args.seed)
    counts = {t: int((ms.labels == t).sum()) for t in ms.types}
    usable = sorted(t for t, c in counts.items() if c >= cfg.min_mentions
                    and t in desc_vectors and not (cfg.exclude_other and is_other_tag(t)))
    folds = cv_folds(usable, args.folds, args.seed)
    shipped = load_map("fewnerd")
    queries = {t: shipped.get_all(t)[0] for t in usable}  # what a user would type
    log(f"{len(usable)} types in {args.folds} folds; queries differ from the paraphrase file's "
        f"first entry for: {[t for t in usable if queries[t] != desc[t][0]]}")

    relevant_all = {t: np.unique(ms.docs[ms.labels == t]) for t in usable}
    identity = {"files": [[p.name, file_digest(p)] for p, _ in TRAIN_FILES],
                "samples": samples, "seed": args.seed, "set": "hybrid_cv"}
    cache_root = default_cache_root()
    dense_encoder = DenseEncoder()
    head_meta = {"model": encoder.config.model, "block": encoder.config.block,
                 "component": encoder.config.component,
                 "query_template": encoder.config.query_template}

    variants = hybrid_variants()
    methods = ["mentions", "dense"] + [m for m, (_, on) in variants.items() if not on] + \
        ["names only"] + [m for m, (_, on) in variants.items() if on]
    log(f"embedding {len(ms)} mention names with {dense_encoder.name}")
    names = dense_encoder.encode([str(x) for x in ms.texts.tolist()])
    names = names.astype(np.float16).astype(np.float32)  # as the index stores them
    per_type: dict[str, dict[str, float]] = {m: {} for m in methods}
    per_fold: dict[str, list[float]] = {m: [] for m in methods}
    doc_vectors = None
    for k, fold in enumerate(folds):
        rest = [t for t in usable if t not in fold]
        train = ms.subset(np.isin(ms.labels, rest))  # held-out types' mentions never train
        result = train_head(train, {t: desc_vectors[t] for t in rest}, cfg,
                            head_meta=head_meta, progress=False)
        assert sorted(result.train_types) == sorted(rest), result.train_types
        es = EvalSet(name=f"fold{k + 1}", docs=docs, types=fold, skipped=[],
                     relevant={t: relevant_all[t] for t in fold},
                     descriptions={t: [queries[t]] for t in fold}, identity=identity)
        if doc_vectors is None:  # the same documents in every fold
            doc_vectors = dense_document_vectors(es, cache_root, dense_encoder)
        scores = fold_scores(es, result.head, encoder, ms, names, doc_vectors, dense_encoder,
                             variants)
        for m in methods:
            vals = {t: r_precision(scores[m][i], es.relevant[t]) for i, t in enumerate(fold)}
            per_type[m].update(vals)
            per_fold[m].append(macro(vals))
        log(f"fold {k + 1}/{args.folds} {fold}: " + ", ".join(
            f"{m} {per_fold[m][-1]:.3f}" for m in methods) + f" [{time.time() - t0:.0f} s]")

    out = report(args, ms, usable, folds, queries, cfg, samples, per_type, per_fold, t0)
    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    log("macro over 33 held-out types: " + ", ".join(
        f"{m} {out['methods'][m]['macro_33']:.4f}" for m in methods)
        + f"; best w = {out['best_weight']}")


if __name__ == "__main__":
    main()
