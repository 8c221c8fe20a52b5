"""Several entity types in one document: ``search(["politician", "city"])``.

Each type is ranked exhaustively (:func:`ner_retriever.retrieve.fusion.rank_all`: every
document past the cut-off), a document must pass for every type, and its score is the
**lowest** of its per-type fused scores: a document is as good an answer as its weakest type,
so one strong type cannot carry a document that barely mentions the other. Each hit says which
type it matched.

Each type's queries are final (feedback included) before any type is ranked, over the documents
the search allows, so a type's scores do not depend on the other types; the later types are
then ranked only among the documents the earlier ones passed, which gives the same answer as
ranking every type over the whole corpus at the cost of one exhaustive ranking. A top ``k``
(:func:`top_types`) stops earlier: the first type's ranking widens only until ``k`` documents
score at least its n-th document on every type (no document outside its top n can then enter).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.retrieve.fusion import (ALL_START, ALL_WIDEN, Candidates, Queries,
                                           RankingSource, final_queries, fused_candidates,
                                           rank_all)
from ner_retriever.retrieve.pooling import DocumentHits


def rank_types(source: RankingSource, queries: Sequence[Queries], cfg: FusionConfig,
               threshold: float, allowed: np.ndarray | None = None,
               first: Candidates | None = None) -> list[Candidates]:
    """Each type's documents past ``threshold``, among those every earlier type passed.
    ``first``: the first type's ranking already made (:func:`top_types`), ``queries`` then
    the later types' final queries."""
    finals = queries if first is not None else \
        [final_queries(source, q, cfg, allowed) for q in queries]
    ranked: list[Candidates] = [] if first is None else [first]
    if first is not None:
        allowed = first.keys
    for q in finals:
        if allowed is not None and not len(allowed):
            break
        ranked.append(rank_all(source, q, cfg, threshold, allowed, final=True))
        allowed = ranked[-1].keys
    return ranked


def top_types(source: RankingSource, queries: Sequence[Queries], cfg: FusionConfig,
              threshold: float, k: int, per_doc: int, allowed: np.ndarray | None = None
              ) -> list[DocumentHits] | None:
    """The ``k`` best documents of :func:`all_types` over :func:`rank_types`, the first type's
    ranking widened from ALL_START only while fewer than ``k`` documents reach its n-th score
    on every type (as :func:`rank_all` assumes, a document outside the first type's top n
    scores below that). None when a type passes no document."""
    finals = [final_queries(source, q, cfg, allowed) for q in queries]
    n = ALL_START
    while True:
        first = fused_candidates(source, finals[0], n, cfg, allowed)
        passing = first.fused >= threshold
        exhausted = int(passing.sum()) < n or len(first.keys) < cfg.candidates(n)
        ranked = rank_types(source, finals[1:], cfg, threshold, first=first.select(passing))
        if len(ranked) < len(queries) and exhausted:
            return None
        hits = all_types(ranked, k, per_doc) if len(ranked) == len(queries) else []
        bound = first.fused[first.order(n)[-1]] if len(first.keys) else threshold
        if exhausted or (len(hits) == k and hits[-1].score >= bound):
            return hits
        n *= ALL_WIDEN


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
