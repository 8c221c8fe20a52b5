"""Mention scores -> document scores: each document once, by its best mention (or a soft
maximum over its mentions), and the widening neighbour search that finds k distinct documents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A neighbour search asks for OVERFETCH * k mentions (at least MIN_FETCH) and widens by
# WIDEN until k distinct documents are found: documents with many mentions fill a fixed 4k.
OVERFETCH = 4
MIN_FETCH = 32
WIDEN = 4


@dataclass
class DocumentHits:
    """A document's score is its best mention's score; the other hits explain the match."""

    doc_key: int
    score: float
    hits: list[tuple[int, float]] = field(default_factory=list)  # (mention row, score)
    queries: list[int] | None = None  # per hit, the query it matched (several types)


def group_by_document(scores: np.ndarray, rows: np.ndarray, doc_keys: np.ndarray,
                      per_doc: int, limit: int | None = None) -> list[DocumentHits]:
    """Group one query's neighbour list (sorted by score) into documents, best first (ties by
    key), each with its first ``per_doc`` rows; rows of key -1 (removed) are skipped.
    ``limit``: only that many documents are built (a list of thousands of rows is grouped
    with numpy; only the returned documents become objects)."""
    keep = np.asarray(doc_keys) >= 0
    scores, rows, keys = np.asarray(scores)[keep], np.asarray(rows)[keep], \
        np.asarray(doc_keys)[keep]
    if not len(keys):
        return []
    unique, first = np.unique(keys, return_index=True)  # first = the best row (list order)
    best = scores[first]
    order = np.lexsort((unique, -best))[:limit]
    grouped = np.argsort(keys, kind="stable")  # rows by key, list order within a key
    by_key = keys[grouped]
    starts = np.searchsorted(by_key, unique)
    ends = np.minimum(np.searchsorted(by_key, unique, side="right"), starts + per_doc)
    return [DocumentHits(int(unique[d]), float(best[d]),
                         [(int(rows[j]), float(scores[j])) for j in grouped[starts[d]:ends[d]]])
            for d in order.tolist()]


def top_documents(search: Callable[[int], tuple[np.ndarray, np.ndarray]],
                  doc_keys: Callable[[np.ndarray], np.ndarray], k: int, ntotal: int,
                  per_doc: int = 3, overfetch: int = OVERFETCH) -> list[DocumentHits]:
    """Widen the neighbour search until k distinct documents are found or the index is
    exhausted (a fixed 4k can return fewer than k when documents have many mentions)."""
    if k <= 0 or ntotal == 0:
        return []
    fetch = min(ntotal, max(overfetch * k, MIN_FETCH))
    while True:
        scores, rows = search(fetch)
        grouped = group_by_document(scores, rows, doc_keys(rows), per_doc, limit=k)
        if len(grouped) >= k or fetch >= ntotal:
            return grouped
        fetch = min(ntotal, fetch * WIDEN)


def document_max(scores: np.ndarray, doc_index: np.ndarray, n_docs: int) -> np.ndarray:
    """Per-document max over mentions: ``(q, n_mentions)`` -> ``(q, n_docs)``; ``-inf`` for a
    document without mentions. ``doc_index`` must be sorted (mentions grouped by document).

    >>> document_max(np.array([[0.1, 0.7, 0.3]]), np.array([0, 0, 2]), 3).tolist()
    [[0.699999988079071, -inf, 0.30000001192092896]]
    """
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


def best_rows(scores: np.ndarray, doc_index: np.ndarray) -> np.ndarray:
    """Position of the highest score of each document present in ``doc_index`` (sorted)."""
    order = np.lexsort((-scores, doc_index))
    grouped = doc_index[order]
    return order[np.r_[True, grouped[1:] != grouped[:-1]]] if len(order) else order


def top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores (unordered)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]
