"""Where the end-to-end gap between detected and gold mentions comes from.

``evaluate --mentions detected`` scores a detector's spans; ``--mentions gold`` the annotated
ones.  The gap between the two mixes three things, which this script pulls apart by scoring
span sets built from both (relevance always from the gold labels, the default hybrid ranking
and confidence weighting, as ``evaluate`` runs them):

* ``gold``: the annotated spans (the reference);
* ``detected``: the default detector's spans (the product);
* ``detected on gold``: only the detected spans that overlap an annotated one. Against
  ``gold`` this is what missed mentions and wrong boundaries cost;
* ``detected in annotated docs``: every detected span, but only in documents with at least one
  annotated mention. Against ``detected`` this is what the other documents' spans cost: the
  "has an entity" filter that gold mentions give for free;
* ``gold + detected``: the annotated spans (certain) plus every detected span that overlaps
  none. Against ``gold`` this is what the spans the annotation does not have cost.

With ``--audit N`` it also prints, for the ``detected`` ranking, up to N top-ranked documents
(within each type's R) that are *not* relevant, with the mention that ranked them and its
confidence, so one can read whether they name an entity of the type that the annotation left
out.

    PYTHONPATH=src python benchmarks/detection_gap.py ../shared/data/wnut17/emerging.dev.conll \\
        --descriptions wnut17 --audit 40
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.detect.registry import DEFAULT_DETECTOR
from ner_retriever.io.cache import default_cache_root
from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.evaluation.evaluate import EvalOptions, build_encoder
from ner_retriever.evaluation.metrics import evaluate_scores
from ner_retriever.evaluation.scoring import dense_queries, embed_queries, hybrid_rank
from ner_retriever.evaluation.vectors import (dense_document_vectors, detect_spans, encoder_vectors,
                                              index_vectors,
                                              mention_vectors_for, name_vectors)
from ner_retriever.retrieve.sources import ArraySource
from ner_retriever.models.shipped import resolve_head
from ner_retriever.config import CONFIDENCE_WEIGHT


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < b and a < span[1] for a, b in others)


def variants(gold: list[list[tuple[int, int]]], found: list[list[tuple[int, int]]],
             conf: list[list[float | None]]) -> dict[str, tuple[list, list]]:
    """``name -> (spans per document, confidences per document)``; None confidence = certain."""
    out = {"gold": (gold, [[None] * len(g) for g in gold]), "detected": (found, conf)}
    on_gold = [[(s, c) for s, c in zip(f, cs) if _overlaps(s, g)]
               for f, cs, g in zip(found, conf, gold)]
    out["detected on gold"] = ([[s for s, _ in d] for d in on_gold],
                               [[c for _, c in d] for d in on_gold])
    out["detected in annotated docs"] = ([f if g else [] for f, g in zip(found, gold)],
                                         [cs if g else [] for cs, g in zip(conf, gold)])
    both = [sorted([(s, None) for s in g] + [(s, c) for s, c in zip(f, cs) if not _overlaps(s, g)],
                   key=lambda sc: sc[0]) for f, cs, g in zip(found, conf, gold)]
    out["gold + detected"] = ([[s for s, _ in d] for d in both], [[c for _, c in d] for d in both])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--descriptions", required=True, help="descriptions name or JSON file")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--sample", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--audit", type=int, default=0, help="print N false positives of 'detected'")
    args = ap.parse_args()

    eval_set = load_eval_set(args.files, load_descriptions(args.descriptions), args.sample,
                             args.seed)
    opts = EvalOptions()
    cache = default_cache_root()
    encoder = build_encoder(opts)
    head = resolve_head(opts.head, encoder.config)
    found, conf, recall = detect_spans(eval_set, args.detector, cache)
    queries = embed_queries(encoder, eval_set, head)

    from ner_retriever.models.dense import DenseEncoder

    dense = DenseEncoder()
    documents = dense_document_vectors(eval_set, cache, dense)
    queries_d = dense_queries(eval_set, dense)
    rows, detected = {}, None
    for name, (spans, confidences) in variants(eval_set.gold_spans, found, conf).items():
        source = {"variant": name, "detector": recall["detector"]}
        vectors, doc_index = mention_vectors_for(eval_set, encoder, spans, cache, source)
        raw = encoder_vectors(vectors, encoder.config)
        mentions = index_vectors(head, raw, confidences, CONFIDENCE_WEIGHT)
        names, name_docs = name_vectors(eval_set, spans, cache, dense)
        sides = ArraySource(mentions, doc_index, documents, names, name_docs)
        scores = hybrid_rank(eval_set, sides, queries, queries_d, opts.fusion())
        result = evaluate_scores(eval_set, scores)
        rows[name] = {"spans": len(mentions),
                      "macro_r_precision": round(result["r_precision"], 4)}
        print(json.dumps({name: rows[name]}), flush=True)
        if name == "detected":
            detected = (scores, spans, confidences, mentions, doc_index)
    print("\n| span set | spans | hybrid R-Precision |\n|---|--:|--:|")
    for name, row in rows.items():
        print(f"| {name} | {row['spans']} | {row['macro_r_precision']:.3f} |")
    if args.audit:
        audit(eval_set, *detected, queries, args.audit, args.seed)


def audit(eval_set, scores, spans, confidences, mentions, doc_index, queries, n: int,
          seed: int) -> None:
    """Print sampled non-relevant documents ranked within R, with their best mention and the
    tagger's confidence in it."""
    picks = []
    for t, tag in enumerate(eval_set.types):
        relevant = set(eval_set.relevant[tag].tolist())
        top = np.argsort(-scores[t])[: len(relevant)]
        picks += [(tag, t, int(d)) for d in top if int(d) not in relevant]
    random.Random(seed).shuffle(picks)
    print(f"\n{len(picks)} non-relevant documents within R over {len(eval_set.types)} types; "
          f"{min(n, len(picks))} of them:")
    first = np.searchsorted(doc_index, np.arange(len(eval_set.docs)))
    for tag, t, d in picks[:n]:
        doc = eval_set.docs[d]
        if spans[d]:
            sims = mentions[first[d]: first[d] + len(spans[d])] @ queries[t]
            k = int(np.argmax(sims))
            a, b = spans[d][k]
            c = confidences[d][k]
            best = f"[{doc.text[a:b]}] ({'-' if c is None else f'{c:.2f}'})"
        else:
            best = "(no mention)"
        gold = [f"{doc.text[s.start:s.end]}/{s.label}" for s in doc.spans or ()]
        print(f"- {tag}: best {best} gold {gold or '-'} :: {doc.text[:200]}")


if __name__ == "__main__":
    main()
