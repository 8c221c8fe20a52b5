"""Several entity types in one document: ``search(["politician", "city"])``.

Each type is ranked exhaustively (:func:`ner_retriever.retrieve.fusion.rank_all`: every
document past the cut-off), a document must pass for every type, and its score is the
**lowest** of its per-type fused scores: a document is as good an answer as its weakest type,
so one strong type cannot carry a document that barely mentions the other. Each hit says which
type it matched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ner_retriever.retrieve.fusion import Candidates
from ner_retriever.retrieve.pooling import DocumentHits


def all_types(ranked: Sequence[Candidates], k: int | None, per_doc: int) -> list[DocumentHits]:
    """Documents in every one of ``ranked`` (one exhaustive ranking per type), by the minimum
    of their fused scores (ties by key); each with ``per_doc`` best mentions per type. ``k``:
    at most that many (None: all)."""
    if not ranked:
        return []
    common = ranked[0].keys
    for r in ranked[1:]:
        common = np.intersect1d(common, r.keys)
    at = [np.searchsorted(r.keys, common) for r in ranked]  # Candidates keys ascend
    score = np.min([r.fused[a] for r, a in zip(ranked, at)], axis=0) if len(common) \
        else np.zeros(0)
    order = np.lexsort((common, -score))[:k]
    out = []
    for i in order:
        hits, queries = [], []
        for t, (r, a) in enumerate(zip(ranked, at)):
            own = r.hits(int(a[i]), per_doc)
            hits += own
            queries += [t] * len(own)
        out.append(DocumentHits(int(common[i]), float(score[i]), hits, queries))
    return out
