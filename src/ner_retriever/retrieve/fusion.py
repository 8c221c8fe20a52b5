"""Mention hits -> ranked documents: over-fetch neighbours, keep each document once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ner_retriever.errors import ConfigError


@dataclass
class DocumentHits:
    """A document's score is its best mention's score; the other hits explain the match."""

    doc_key: int
    score: float
    hits: list[tuple[int, float]] = field(default_factory=list)  # (mention row, score)


def group_by_document(scores: np.ndarray, rows: np.ndarray, doc_keys: np.ndarray,
                      per_doc: int) -> list[DocumentHits]:
    """Group one query's neighbour list (sorted by score) into documents, best first."""
    docs: dict[int, DocumentHits] = {}
    for score, row, key in zip(scores.tolist(), rows.tolist(), doc_keys.tolist()):
        if key < 0:
            continue
        entry = docs.get(key)
        if entry is None:
            entry = docs[key] = DocumentHits(key, score)
        if len(entry.hits) < per_doc:
            entry.hits.append((row, score))
    return sorted(docs.values(), key=lambda d: (-d.score, d.doc_key))


def top_documents(search: Callable[[int], tuple[np.ndarray, np.ndarray]],
                  doc_keys: Callable[[np.ndarray], np.ndarray], k: int, ntotal: int,
                  per_doc: int = 3, overfetch: int = 4) -> list[DocumentHits]:
    """Widen the neighbour search until k distinct documents are found or the index is
    exhausted (a fixed 4k can return fewer than k when documents have many mentions)."""
    if k <= 0 or ntotal == 0:
        return []
    fetch = min(ntotal, max(overfetch * k, 32))
    while True:
        scores, rows = search(fetch)
        grouped = group_by_document(scores, rows, doc_keys(rows), per_doc)
        if len(grouped) >= k or fetch >= ntotal:
            return grouped[:k]
        fetch = min(ntotal, fetch * 4)


def context_window(text: str, start: int, end: int, width: int = 160) -> tuple[int, int]:
    """Offsets of about ``width`` characters around ``text[start:end]``, cut at spaces (offsets,
    so callers such as the web page can highlight inside the window)."""
    if len(text) <= width:
        return 0, len(text)
    pad = max(0, (width - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    if lo > 0:
        space = text.find(" ", lo, start)
        lo = space + 1 if space != -1 else lo
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space != -1 else hi
    return lo, hi


def snippet(text: str, start: int, end: int, width: int = 160) -> str:
    """The context window as text, with ellipses where it was cut."""
    lo, hi = context_window(text, start, end, width)
    return ("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else "")


def document_max(scores: np.ndarray, doc_index: np.ndarray, n_docs: int) -> np.ndarray:
    """Per-document max over mentions: ``(q, n_mentions)`` -> ``(q, n_docs)``; ``-inf`` for a
    document without mentions. ``doc_index`` must be sorted (mentions grouped by document)."""
    out = np.full((scores.shape[0], n_docs), -np.inf, dtype=np.float32)
    if scores.shape[1] == 0:
        return out
    starts = np.flatnonzero(np.r_[True, doc_index[1:] != doc_index[:-1]])
    out[:, doc_index[starts]] = np.maximum.reduceat(scores, starts, axis=1)
    return out


def document_softmax(scores: np.ndarray, doc_index: np.ndarray, n_docs: int,
                     temperature: float) -> np.ndarray:
    """Per-document soft maximum ``t * log(sum(exp(score / t)))`` over mentions: the best
    mention's score plus a bonus for further mentions that score nearly as well (a sentence
    naming three rivers is likelier to be about rivers). Same shapes as :func:`document_max`."""
    best = document_max(scores, doc_index, n_docs)
    if scores.shape[1] == 0:
        return best
    own_best = best[:, doc_index]
    starts = np.flatnonzero(np.r_[True, doc_index[1:] != doc_index[:-1]])
    total = np.add.reduceat(np.exp((scores - own_best) / temperature), starts, axis=1)
    best[:, doc_index[starts]] += temperature * np.log(total)
    return best


# -- hybrid ranking --------------------------------------------------------------------------
# Weight on the standardised mention score; chosen with the shipped head by 5-fold
# cross-validation over the 33 Few-NERD INTER *training* types (benchmarks/hybrid_cv.py,
# docs/RESULTS.md "Hybrid weight with the head"), never on test types. 0.55 and 0.6 tie there
# (0.5751 / 0.5752 vs 0.5717 for 0.5, within fold noise); 0.6 is the argmax.
HYBRID_WEIGHT = 0.6
# Temperature of the soft maximum over a document's mentions on the mention side of the hybrid
# ranking; chosen by the same cross-validation over training types (docs/RESULTS.md).
MENTION_TEMPERATURE = 0.05
# Weight of the third side of the hybrid ranking, the mention *names* (each mention's text
# embedded alone with the dense model, best name per document) added to the fused score as
# NAME_WEIGHT * z(name score); chosen by the same cross-validation (+0.0139, 5 of 5 folds).
NAME_WEIGHT = 0.2
# Pseudo-relevance feedback (Rocchio) on the hybrid ranking: a first fused ranking's top
# FEEDBACK_DOCS documents lend each side their best-matching vector (best mention, document
# vector, best name); each side's query becomes ``q + FEEDBACK_WEIGHT * mean(those)``,
# renormalised, and the ranking runs again. A description and the mentions it should find sit
# in different regions; the top documents show the query where its mentions are. Chosen by the
# same cross-validation over training types (+0.038, 4 of 5 folds; docs/RESULTS.md).
FEEDBACK_DOCS = 20
FEEDBACK_WEIGHT = 1.0
# A detected mention's index vector is scaled by confidence ** CONFIDENCE_WEIGHT (the learned
# tagger's mean P(mention) over the span's tokens; 1 for detectors that cannot tell), so a
# doubtful span can still be found but rarely outranks a sure one. It lets the default keep
# spaCy's spans for recall without their noise: chosen on validation data together with the
# detector (docs/DETECTION.md, "Choosing the default").
CONFIDENCE_WEIGHT = 0.5
CALIBRATION_DOCS = 1024  # documents whose scores standardise each side of a query


@dataclass(frozen=True)
class ScoreStats:
    """Location and scale of one query's document scores, from a sample of the corpus; a
    document without any mention takes ``floor`` (the lowest mention score seen)."""

    mean: float
    std: float
    floor: float


def calibration_sample(n_docs: int, size: int = CALIBRATION_DOCS) -> np.ndarray:
    """Seeded positions of the documents that calibrate the scores (all when few)."""
    if n_docs <= size:
        return np.arange(n_docs)
    return np.sort(np.random.default_rng(0).choice(n_docs, size, replace=False))


def score_stats(scores: np.ndarray) -> ScoreStats:
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return ScoreStats(0.0, 1.0, 0.0)
    floor = float(finite.min())
    filled = np.where(np.isfinite(scores), scores, floor)
    std = float(filled.std())
    return ScoreStats(float(filled.mean()), std if std > 1e-12 else 1.0, floor)


def candidate_count(k: int) -> int:
    """Documents fetched from each side before fusing: enough that the fused top k is almost
    always among them (checked against fusing every document, docs/RESULTS.md)."""
    return max(4 * k, 100)


def fuse(mention: np.ndarray, dense: np.ndarray, mention_stats: ScoreStats,
         dense_stats: ScoreStats, weight: float = HYBRID_WEIGHT,
         names: np.ndarray | None = None, name_stats: ScoreStats | None = None,
         name_weight: float = NAME_WEIGHT) -> np.ndarray:
    """``w * z(mention) + (1 - w) * z(dense) [+ name_weight * z(names)]``: each side
    standardised with its own statistics (``names`` with ``name_stats``), so no scale
    dominates."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"hybrid weight must be in [0, 1], got {weight}")
    fused = (weight * standardise(mention, mention_stats)
             + (1.0 - weight) * standardise(dense, dense_stats))
    if names is not None:
        fused += name_weight * standardise(names, name_stats)
    return fused


def standardise(scores: np.ndarray, stats: ScoreStats) -> np.ndarray:
    """``(scores - mean) / std``; ``-inf`` scores (a document without mentions) take the floor."""
    scores = np.where(np.isfinite(scores), scores, stats.floor)
    return (scores - stats.mean) / stats.std


def best_rows(scores: np.ndarray, doc_index: np.ndarray) -> np.ndarray:
    """Position of the highest score of each document present in ``doc_index`` (sorted)."""
    order = np.lexsort((-scores, doc_index))
    grouped = doc_index[order]
    return order[np.r_[True, grouped[1:] != grouped[:-1]]] if len(order) else order


def feedback_query(query: np.ndarray, vectors: np.ndarray,
                   weight: float = FEEDBACK_WEIGHT) -> np.ndarray:
    """``normalise(q + weight * mean(normalised vectors))``; ``q`` itself without vectors."""
    query = np.asarray(query, np.float32)
    if not len(vectors):
        return query
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    moved = query / max(float(np.linalg.norm(query)), 1e-12) + weight * unit.mean(axis=0)
    return (moved / max(float(np.linalg.norm(moved)), 1e-12)).astype(np.float32)


def feedback_from_best(query: np.ndarray, vectors: np.ndarray, doc_index: np.ndarray,
                       weight: float = FEEDBACK_WEIGHT) -> np.ndarray:
    """:func:`feedback_query` toward the best-matching vector (by inner product with ``query``)
    of each document in ``doc_index`` (sorted): one document, one vote."""
    return feedback_query(query, vectors[best_rows(vectors @ query, doc_index)], weight)


def top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores (unordered)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]
