"""Hybrid weight chosen WITH the shipped head, by cross-validation over training types only.

    NER_RETRIEVER_CACHE=/tmp/nrcache PYTHONPATH=src python benchmarks/hybrid_cv.py \
        --json benchmarks/hybrid_cv.json

Data: the head's own training sample, Few-NERD INTER ``dev.txt`` (4,000 sentences) +
``test.txt`` (2,000 sentences), seed 0; both files hold only the 33 (+3 catch-all) INTER
*train* types. No test split of any dataset is read.

Folds: exactly ``train.train_head``'s cross-validation (usable types sorted,
``random.Random(0).shuffle``, fold ``i`` = ``order[i::5]``). For each fold a head is trained on
the other four folds' types with the shipped settings (``TrainConfig`` defaults, 5 epochs =
the count the shipped head's CV chose, ``cv_folds=0``, ``val_fraction=0``, descriptions
``benchmarks/fewnerd_train_descriptions.json``); the held-out fold's types are then ranked
over ALL 6,000 sample sentences with the query a user would type (the shipped ``fewnerd`` map's
readable name): mentions only, dense (all-MiniLM-L6-v2, ``evaluate.dense_document_scores``)
and hybrid (``evaluate.hybrid_scores``, the code ``Retriever.search`` runs) per weight ``w``.
Each of the 33 types is held out exactly once; the headline is the macro over all 33.

Variants (same folds, same scores): reciprocal-rank fusion (k = 60) over the same candidate
documents, the dense side queried with the template ``a {}``, and (at w = 0.6) the mention side
pooled as a soft maximum over each document's mentions at several temperatures
(``search.document_softmax``; t = 0.05 ships as ``search.MENTION_TEMPERATURE``), and a third
signal, the *names* (each mention's text alone, e.g. "Toyota Corolla") embedded with the dense
model, scored against the query, best name per document, added to the soft-max hybrid score
as ``lam * z(name score)`` (standardised on the same calibration sample; lam = 0.2 ships as
``search.NAME_WEIGHT``), or mixed into the mention vectors themselves (``concat``: mention and
query vectors ``[sqrt(1 - b) * head output, sqrt(b) * name vector]``, so one inner product
is ``(1 - b) cos_head + b cos_name``). Last, pseudo-relevance feedback on the full shipped
ranking (``evaluate.hybrid_rank``, what ``Retriever.search`` runs): the top ``m`` documents of
a first ranking move each side's query by ``beta`` toward their best-matching vectors, on all
three sides or some (m = 20, beta = 1.0 ship as ``search.FEEDBACK_DOCS`` / ``FEEDBACK_WEIGHT``).
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

ROOT = Path(__file__).resolve().parents[1]
FEWNERD = ROOT.parent / "shared" / "data" / "fewnerd" / "inter_bio_structshot"
TRAIN_FILES = [(FEWNERD / "dev.txt", 4000), (FEWNERD / "test.txt", 2000)]
PARAPHRASES = ROOT / "benchmarks" / "fewnerd_train_descriptions.json"
WEIGHTS = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7]
RRF_K = 60
TEMPERATURES = [0.03, 0.05, 0.1, 0.2]
NAME_WEIGHTS = [0.1, 0.2, 0.3, 0.5]
CONCAT_BETAS = [0.2, 0.4]
# Pseudo-relevance feedback: (feedback documents, beta, sides fed back).
FEEDBACK = [(m, b, "mdn") for m in (3, 5, 10, 20) for b in (0.3, 0.7, 1.0, 1.5)] + \
    [(10, 0.7, "m"), (10, 0.7, "dn"), (10, 1.0, "m"), (10, 1.0, "dn")]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cv_folds(types: list[str], folds: int, seed: int) -> list[list[str]]:
    """The folds of ``train.train_head`` (same code, same order)."""
    order = sorted(types)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::folds]) for i in range(folds)]


def rrf_scores(eval_set, mention_scores: np.ndarray, dense_scores: np.ndarray,
               k: int = RRF_K) -> np.ndarray:
    """Reciprocal-rank fusion over the same candidates as ``hybrid_scores`` (ranks within the
    whole corpus on each side; a document without mentions ranks last on the mention side)."""
    from ner_retriever.retrieve.fusion import candidate_count, top_positions

    out = np.full(mention_scores.shape, -np.inf, dtype=np.float64)
    for i, t in enumerate(eval_set.types):
        n = candidate_count(len(eval_set.relevant[t]))
        mention = np.where(np.isfinite(mention_scores[i]), mention_scores[i], -1e9)
        dense = dense_scores[i]
        rank_m = np.empty(len(mention), np.int64)
        rank_m[np.argsort(-mention, kind="stable")] = np.arange(len(mention))
        rank_d = np.empty(len(dense), np.int64)
        rank_d[np.argsort(-dense, kind="stable")] = np.arange(len(dense))
        with_mentions = np.flatnonzero(np.isfinite(mention_scores[i]))
        picked = with_mentions[top_positions(mention[with_mentions], n)]
        cand = np.union1d(picked, top_positions(dense, n))
        out[i, cand] = 1.0 / (k + 1 + rank_m[cand]) + 1.0 / (k + 1 + rank_d[cand])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()

    import torch

    from ner_retriever.io.corpus import file_digest
    from ner_retriever.models.dense import DenseEncoder
    from ner_retriever.evaluation.descriptions import is_other_tag
    from ner_retriever.evaluation.descriptions import load_descriptions as load_map
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.evaluation.evaluate import (EvalSet, HybridSides, default_cache_root,
                                        dense_document_scores, dense_document_vectors,
                                        embed_queries, hybrid_rank, hybrid_scores, macro,
                                        mention_document_scores, pooled_document_scores,
                                        r_precision)
    from ner_retriever.retrieve.fusion import (MENTION_TEMPERATURE, calibration_sample, score_stats,
                                      standardise)
    from ner_retriever.models.head import to_index_space
    from ner_retriever.training.train import (MentionSet, TrainConfig, encode_descriptions,
                                     extract_mentions, load_descriptions, sample_documents,
                                     train_head)

    torch.set_num_threads(2)
    t0 = time.time()
    encoder = TransformerEncoder(EncoderConfig(block=22, component="value",
                                               query_template="mentions of {}"))
    sets, docs = [], []
    for p, n in TRAIN_FILES:
        part = sample_documents(p, n, args.seed)
        sets.append(extract_mentions(p, encoder, n, args.seed))  # cached after the first run
        docs += part
    ms = MentionSet.concat(sets)
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
                "samples": [n for _, n in TRAIN_FILES], "seed": args.seed, "set": "hybrid_cv"}
    cache_root = default_cache_root()
    dense_encoder = DenseEncoder()
    head_meta = {"model": encoder.config.model, "block": encoder.config.block,
                 "component": encoder.config.component,
                 "query_template": encoder.config.query_template}

    methods = ["mentions", "dense"] + [f"hybrid w={w}" for w in WEIGHTS] + \
        ["rrf k=60", "hybrid w=0.5, dense query 'a {}'"] + \
        [f"hybrid w=0.6, soft max t={t}" for t in TEMPERATURES] + ["names only"] + \
        [f"shipped hybrid + names lam={lam}" for lam in NAME_WEIGHTS] + \
        [f"concat b={b}, hybrid w=0.6 soft max" for b in CONCAT_BETAS] + \
        ["shipped (hybrid_scores with names)"] + \
        [f"feedback m={m} beta={b} sides={sides}" for m, b, sides in FEEDBACK]
    log(f"embedding {len(ms)} mention names with {dense_encoder.name}")
    names = dense_encoder.encode([str(x) for x in ms.texts.tolist()])
    names = names.astype(np.float16).astype(np.float32)  # as the index stores them
    sample = calibration_sample(ms.n_docs)
    per_type: dict[str, dict[str, float]] = {m: {} for m in methods}
    per_fold: dict[str, list[float]] = {m: [] for m in methods}
    for k, fold in enumerate(folds):
        rest = [t for t in usable if t not in fold]
        train = ms.subset(np.isin(ms.labels, rest))  # held-out types' mentions never train
        result = train_head(train, {t: desc_vectors[t] for t in rest}, cfg,
                            head_meta=head_meta, progress=False)
        assert sorted(result.train_types) == sorted(rest), result.train_types
        head = result.head
        es = EvalSet(name=f"fold{k + 1}", docs=docs, types=fold, skipped=[],
                     relevant={t: relevant_all[t] for t in fold},
                     descriptions={t: [queries[t]] for t in fold}, identity=identity)
        mentions = to_index_space(head, ms.vectors)
        query = embed_queries(encoder, es, head)
        mention = mention_document_scores(query, mentions, ms.docs, ms.n_docs)
        dense = dense_document_scores(es, cache_root, dense_encoder)
        doc_vectors = dense_document_vectors(es, cache_root, dense_encoder)
        es_a = dataclasses.replace(es, descriptions={t: [f"a {queries[t]}"] for t in fold})
        dense_a = dense_document_scores(es_a, cache_root, dense_encoder)
        scores = {"mentions": mention, "dense": dense}
        for w in WEIGHTS:
            scores[f"hybrid w={w}"] = hybrid_scores(es, mention, dense, w)
        scores["rrf k=60"] = rrf_scores(es, mention, dense)
        scores["hybrid w=0.5, dense query 'a {}'"] = hybrid_scores(es, mention, dense_a, 0.5)
        for t in TEMPERATURES:  # mention side = soft maximum over a document's mentions
            pooled = mention_document_scores(query, mentions, ms.docs, ms.n_docs, temperature=t)
            scores[f"hybrid w=0.6, soft max t={t}"] = hybrid_scores(es, mention, dense, 0.6,
                                                                     pooled)
        shipped_hybrid = scores[f"hybrid w=0.6, soft max t={MENTION_TEMPERATURE}"]
        query_names = dense_encoder.encode([queries[t] for t in fold])
        name = mention_document_scores(query_names, names, ms.docs, ms.n_docs)
        scores["names only"] = name
        for lam in NAME_WEIGHTS:
            scores[f"shipped hybrid + names lam={lam}"] = shipped_hybrid + lam * np.stack(
                [standardise(row, score_stats(row[sample])) for row in name])
        for b in CONCAT_BETAS:
            both_m = np.concatenate([np.sqrt(1 - b) * mentions, np.sqrt(b) * names], axis=1)
            both_q = np.concatenate([np.sqrt(1 - b) * query, np.sqrt(b) * query_names], axis=1)
            best, soft = pooled_document_scores(both_q, both_m, ms.docs, ms.n_docs,
                                                (None, MENTION_TEMPERATURE))
            scores[f"concat b={b}, hybrid w=0.6 soft max"] = hybrid_scores(es, best, dense, 0.6,
                                                                           soft)
        sides = HybridSides(mentions, ms.docs, doc_vectors, names, ms.docs)
        scores["shipped (hybrid_scores with names)"] = hybrid_rank(es, sides, query, query_names,
                                                                   0.6, feedback=0)
        for m_docs, beta, fed in FEEDBACK:
            scores[f"feedback m={m_docs} beta={beta} sides={fed}"] = hybrid_rank(
                es, sides, query, query_names, 0.6, m_docs, beta, fed)
        for m in methods:
            vals = {t: r_precision(scores[m][i], es.relevant[t]) for i, t in enumerate(fold)}
            per_type[m].update(vals)
            per_fold[m].append(macro(vals))
        log(f"fold {k + 1}/{args.folds} {fold}: " + ", ".join(
            f"{m} {per_fold[m][-1]:.3f}" for m in methods) + f" [{time.time() - t0:.0f} s]")

    summary = {m: {"macro_33": macro(per_type[m]),
                   "per_fold": [round(v, 4) for v in per_fold[m]],
                   "fold_sd": float(np.std(per_fold[m], ddof=1))} for m in methods}
    base = np.array(per_fold["hybrid w=0.5"])
    for m in methods:  # paired against the shipped weight, fold by fold
        diff = np.array(per_fold[m]) - base
        summary[m]["vs_w0.5_per_fold"] = [round(float(d), 4) for d in diff]
        summary[m]["vs_w0.5_mean"] = float(diff.mean())
        summary[m]["vs_w0.5_sd"] = float(diff.std(ddof=1))
        diff = np.array(per_fold[m]) - np.array(per_fold[f"hybrid w=0.6, soft max t="
                                                         f"{MENTION_TEMPERATURE}"])
        summary[m]["vs_shipped_per_fold"] = [round(float(d), 4) for d in diff]
        summary[m]["vs_shipped_mean"] = float(diff.mean())
    grid = {w: summary[f"hybrid w={w}"]["macro_33"] for w in WEIGHTS}
    best_w = max(WEIGHTS, key=lambda w: (grid[w], -abs(w - 0.5)))  # ties keep the nearer to 0.5
    out = {
        "data": [f"{p.name} ({n} sentences, seed {args.seed})" for p, n in TRAIN_FILES],
        "sentences": ms.n_docs, "mentions": len(ms), "types": len(usable),
        "folds": folds, "queries": queries,
        "train": {"epochs": args.epochs, "descriptions": str(PARAPHRASES.relative_to(ROOT)),
                  "config": dataclasses.asdict(cfg)},
        "methods": summary, "best_weight": best_w,
        "per_type": {m: {t: round(v, 4) for t, v in per_type[m].items()} for m in methods},
        "seconds": round(time.time() - t0, 1),
    }
    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    log("macro over 33 held-out types: " + ", ".join(
        f"{m} {summary[m]['macro_33']:.4f}" for m in methods) + f"; best w = {best_w}")


if __name__ == "__main__":
    main()
