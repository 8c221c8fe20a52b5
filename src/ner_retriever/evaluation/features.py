"""Measurements of the search features beyond one type's top k (issue 21): exhaustive mode,
several types per document, the entity inventory and query by example.

Every figure ranks through the product's own code (:mod:`ner_retriever.retrieve.fusion`,
``combine.all_types``, ``inventory.inventory``) over the vectors an evaluation holds in memory
(:func:`ner_retriever.evaluation.evaluate.hybrid_inputs`), so it is what ``Retriever.search``
and ``Retriever.entities`` return on an index of the same vectors. Relevance comes from the
gold labels, as in :mod:`ner_retriever.evaluation.evaluate`.

One full ranking per type (``k`` = every document, :func:`full_rankings`) serves exhaustive
mode, type pairs and the inventory: a document's fused score does not depend on ``k`` (the
calibration sample is fixed), so cutting it at ``T`` is exactly ``fusion.rank_all(T)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.evaluation.evaluate import HybridInputs, MentionSide
from ner_retriever.evaluation.metrics import macro, r_precision
from ner_retriever.retrieve.combine import all_types
from ner_retriever.retrieve.fusion import Candidates, Queries, hybrid_rank
from ner_retriever.retrieve.inventory import inventory, normalise_name

# Cut-offs tried for exhaustive mode, in standard units of the fused score.
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.0, 6.0001, 0.05))
PAIR_MIN_DOCS = 5  # a type pair needs this many documents with gold mentions of both
MAX_PAIRS = 30  # pairs measured per set (a seeded sample when more qualify)
TOP_ENTITIES = 50  # inventory entities judged per type (the "top 50")
EXAMPLES = 5  # gold mentions per type used as query-by-example queries
SEED = 0


# ---- the rankings ---------------------------------------------------------------------------

def type_queries(inputs: HybridInputs, i: int) -> Queries:
    """Type ``i``'s description queries, as ``Retriever.search`` builds them (names side = the
    dense query)."""
    dense = inputs.dense_queries[i]
    return Queries(inputs.side.queries[i], dense, dense)


def full_rankings(eval_set: EvalSet, inputs: HybridInputs, cfg: FusionConfig | None = None
                  ) -> list[Candidates]:
    """Each type's hybrid ranking over every document, with each mention's own fused score:
    the one pass from which every cut-off below is read."""
    cfg = cfg or FusionConfig()
    n = inputs.source.n_docs
    return [hybrid_rank(inputs.source, type_queries(inputs, i), n, cfg)
            for i in range(len(eval_set.types))]


def fused_matrix(ranked: Sequence[Candidates], n_docs: int) -> np.ndarray:
    """``(n_types, n_docs)`` fused scores; ``-inf`` where a ranking never considered a
    document."""
    out = np.full((len(ranked), n_docs), -np.inf)
    for i, r in enumerate(ranked):
        out[i, r.keys] = r.fused
    return out


# ---- a. exhaustive mode ---------------------------------------------------------------------

def set_scores(returned: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of a returned set (bool mask) against relevant indices; an empty
    answer scores 0 precision, so a cut-off above every score cannot look precise."""
    hits = int(returned[relevant].sum())
    n = int(returned.sum())
    p = hits / n if n else 0.0
    r = hits / len(relevant)
    return p, r, (2 * p * r / (p + r) if hits else 0.0)


def exhaustive_at(eval_set: EvalSet, scores: np.ndarray, threshold: float) -> dict:
    """Per type and macro P/R/F1 of the documents whose fused score passes ``threshold``."""
    per_type = {t: set_scores(scores[i] >= threshold, eval_set.relevant[t])
                for i, t in enumerate(eval_set.types)}
    returned = [int((scores[i] >= threshold).sum()) for i in range(len(eval_set.types))]
    return {"threshold": threshold,
            **{m: macro({t: v[j] for t, v in per_type.items()})
               for j, m in enumerate(("precision", "recall", "f1"))},
            "returned": float(np.mean(returned)),
            "relevant": float(np.mean([len(eval_set.relevant[t]) for t in eval_set.types])),
            "per_type": {t: dict(zip(("precision", "recall", "f1"), v))
                         for t, v in per_type.items()}}


def exhaustive_grid(eval_set: EvalSet, scores: np.ndarray,
                    thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Macro P/R/F1 at every cut-off of the grid (no per-type detail)."""
    return [{k: v for k, v in exhaustive_at(eval_set, scores, t).items() if k != "per_type"}
            for t in thresholds]


def choose_threshold(grid: Sequence[dict]) -> float:
    """The rule: the cut-off with the highest macro F1, the lowest such one on a tie (more
    recall for the same F1)."""
    best = max(g["f1"] for g in grid)
    return min(g["threshold"] for g in grid if g["f1"] == best)


# ---- b. several types per document ----------------------------------------------------------

def type_pairs(eval_set: EvalSet, min_docs: int = PAIR_MIN_DOCS, cap: int = MAX_PAIRS,
               seed: int = SEED) -> list[tuple[str, str]]:
    """Pairs of evaluated types with at least ``min_docs`` documents holding both; a seeded
    sample of ``cap`` when more qualify, so a set with many types costs the same."""
    rel = eval_set.relevant
    pairs = [(a, b) for a, b in combinations(eval_set.types, 2)
             if len(np.intersect1d(rel[a], rel[b])) >= min_docs]
    return sorted(random.Random(seed).sample(pairs, cap)) if len(pairs) > cap else pairs


def strict_r_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """R-Precision of a ranking that returns only its finite-scored documents: the others can
    not fill the top R (:func:`metrics.r_precision` would give them a random tail's share)."""
    mask = np.zeros(len(scores), bool)
    mask[relevant] = True
    finite = np.isfinite(scores)
    if finite.sum() <= len(relevant):
        return float(mask[finite].sum() / len(relevant))
    return r_precision(scores, mask)  # the R-th best is finite: no -inf document reaches it


def pair_scores(a: Candidates, b: Candidates, threshold: float, n_docs: int) -> np.ndarray:
    """``search([a, b], exhaustive)`` as scores: ``combine.all_types`` over the two types'
    passing documents (the lower fused score); ``-inf`` for documents not returned."""
    out = np.full(n_docs, -np.inf)
    passing = [r.select(r.fused >= threshold) for r in (a, b)]
    for hit in all_types(passing, None, 1):
        out[hit.doc_key] = hit.score
    return out


def pair_precision(eval_set: EvalSet, ranked: Sequence[Candidates], threshold: float,
                   pairs: Sequence[tuple[str, str]]) -> dict:
    """R-Precision of each pair's combined ranking against the documents with both types;
    macro over pairs (NaN without any pair). ``uncut``: the same lower-score ranking over
    every document, no cut-off, to tell the cut-off's loss from the ranking's."""
    at = {t: i for i, t in enumerate(eval_set.types)}
    n = len(eval_set.docs)
    full = fused_matrix(ranked, n)
    per_pair, uncut, returned, relevant = {}, {}, [], []
    for a, b in pairs:
        both = np.intersect1d(eval_set.relevant[a], eval_set.relevant[b])
        scores = pair_scores(ranked[at[a]], ranked[at[b]], threshold, n)
        per_pair[f"{a} & {b}"] = strict_r_precision(scores, both)
        uncut[f"{a} & {b}"] = r_precision(np.minimum(full[at[a]], full[at[b]]), both)
        returned.append(int(np.isfinite(scores).sum()))
        relevant.append(len(both))
    return {"threshold": threshold, "pairs": len(pairs), "r_precision": macro(per_pair),
            "uncut": macro(uncut), "returned": float(np.mean(returned)) if pairs else 0.0,
            "relevant": float(np.mean(relevant)) if pairs else 0.0, "per_pair": per_pair,
            "per_pair_uncut": uncut}


# ---- c. entity inventory --------------------------------------------------------------------

def mention_texts(eval_set: EvalSet, spans: Sequence[Sequence[tuple[int, int]]]) -> list[str]:
    """The text of every mention row (rows in document order, as the mention side stacks
    them)."""
    return [doc.text[a:b] for doc, doc_spans in zip(eval_set.docs, spans) for a, b in doc_spans]


def gold_names(eval_set: EvalSet) -> dict[str, set[str]]:
    """Each evaluated type's normalised gold mention texts in the set: what counts as a
    correct inventory entry."""
    out: dict[str, set[str]] = {t: set() for t in eval_set.types}
    for doc in eval_set.docs:
        for s in doc.spans or ():
            if s.label in out:
                out[s.label].add(normalise_name(doc.text[s.start:s.end]))
    return out


def inventory_precision(eval_set: EvalSet, ranked: Sequence[Candidates], texts: Sequence[str],
                        threshold: float, top: int = TOP_ENTITIES) -> dict:
    """Share of each type's top ``top`` inventory entities that are gold names of the type;
    macro over the types that list any (how many list none is reported)."""
    gold = gold_names(eval_set)
    per_type: dict[str, float] = {}
    listed = []
    for t, r in zip(eval_set.types, ranked):
        entities = inventory(r, texts, threshold, top, lambda keys: {k: str(k) for k in keys})
        listed.append(len(entities))
        if entities:
            per_type[t] = float(np.mean([normalise_name(e.text) in gold[t] for e in entities]))
    return {"threshold": threshold, "precision": macro(per_type),
            "empty_types": len(eval_set.types) - len(per_type),
            "listed": float(np.mean(listed)), "per_type": per_type}


# ---- d. query by example --------------------------------------------------------------------

def gold_rows(eval_set: EvalSet, label: str) -> np.ndarray:
    """Rows (in the gold mention side's order) of the gold mentions of ``label``."""
    labels = [s.label for doc in eval_set.docs for s in doc.spans or ()]
    return np.array([j for j, x in enumerate(labels) if x == label], np.int64)


def pick_examples(eval_set: EvalSet, label: str, n: int = EXAMPLES, seed: int = SEED
                  ) -> np.ndarray:
    """``n`` gold mentions of ``label`` (seeded per type, so adding a type moves no other
    type's examples)."""
    rows = gold_rows(eval_set, label)
    return np.sort(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))


def without(scores: np.ndarray, relevant: np.ndarray, own: int) -> float:
    """R-Precision with document ``own`` removed from the ranking and the relevant set."""
    mask = np.zeros(len(scores), bool)
    mask[relevant] = True
    return r_precision(np.delete(scores, own), np.delete(mask, own))


def example_scores(inputs: HybridInputs, vector: np.ndarray, dense_query: np.ndarray,
                   own: int, k: int, cfg: FusionConfig) -> np.ndarray:
    """``search(like=...)`` as scores: the example's mention vector and MiniLM of its text on
    every other document (its own is outside the ranking, feedback included)."""
    n = inputs.source.n_docs
    ranked = hybrid_rank(inputs.source, Queries(vector, dense_query, dense_query), k, cfg,
                         np.delete(np.arange(n), own))
    out = np.full(n, -np.inf)
    out[ranked.keys] = ranked.fused
    return out


def query_by_example(eval_set: EvalSet, inputs: HybridInputs, gold: MentionSide,
                     cfg: FusionConfig | None = None, n: int = EXAMPLES,
                     seed: int = SEED) -> dict:
    """Per type: mean R-Precision over ``n`` gold mentions used as examples (vector = the
    gold span encoded in its sentence and projected like an indexed mention, ``gold.vectors``)
    next to dense MiniLM given the example's sentence; macro over the types with a relevant
    document besides the example's own."""
    cfg = cfg or FusionConfig()
    documents = inputs.source.documents
    picked = {t: pick_examples(eval_set, t, n, seed) for t in eval_set.types}
    flat = [int(j) for rows in picked.values() for j in rows]
    names = mention_texts(eval_set, eval_set.gold_spans)
    dense_names = dict(zip(flat, inputs.dense.encode([names[j] for j in flat])))
    sentences = dict(zip(flat, inputs.dense.encode(
        [eval_set.docs[int(gold.doc_index[j])].text for j in flat])))
    per_type: dict[str, dict] = {}
    for t in eval_set.types:
        rel = eval_set.relevant[t]
        if len(rel) < 2:
            continue
        hybrid, dense = [], []
        for j in picked[t]:
            own = int(gold.doc_index[j])
            k = len(rel) - int(own in rel)
            scores = example_scores(inputs, gold.vectors[j], dense_names[j], own, k, cfg)
            hybrid.append(without(scores, rel, own))
            dense.append(without(documents @ sentences[j], rel, own))
        per_type[t] = {"example": float(np.mean(hybrid)), "dense_sentence": float(np.mean(dense))}
    example = macro({t: v["example"] for t, v in per_type.items()})
    baseline = macro({t: v["dense_sentence"] for t, v in per_type.items()})
    return {"types": len(per_type), "examples": sum(len(picked[t]) for t in per_type),
            "example": example, "dense_sentence": baseline,
            "ratio": example / baseline if baseline else float("nan"), "per_type": per_type}
