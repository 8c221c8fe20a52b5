"""Mention hits -> ranked documents: over-fetch neighbours, keep each document once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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
