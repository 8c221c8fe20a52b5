"""Several entity types in one document: ``search(["politician", "city"])``.

Each type is ranked exhaustively (:func:`ner_retriever.retrieve.fusion.rank_all`: every
document past the cut-off), a document must pass for every type, and its score is the
**lowest** of its per-type fused scores: a document is as good an answer as its weakest type,
so one strong type cannot carry a document that barely mentions the other. Each hit says which
type it matched.

Each type's queries are final (feedback included) before any type is ranked, over the documents
the search allows, so a type's scores do not depend on the other types; the later types are
then ranked only among the documents the earlier ones passed, which gives the same answer as
ranking every type over the whole corpus at the cost of one exhaustive ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.retrieve.fusion import (Candidates, Queries, RankingSource, final_queries,
                                           rank_all)
from ner_retriever.retrieve.pooling import DocumentHits


def rank_types(source: RankingSource, queries: Sequence[Queries], cfg: FusionConfig,
               threshold: float, allowed: np.ndarray | None = None) -> list[Candidates]:
    """Each type's documents past ``threshold``, among those every earlier type passed."""
    finals = [final_queries(source, q, cfg, allowed) for q in queries]
    ranked: list[Candidates] = []
    for q in finals:
        ranked.append(rank_all(source, q, cfg, threshold, allowed, final=True))
        allowed = ranked[-1].keys
        if not len(allowed):
            break
    return ranked


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
