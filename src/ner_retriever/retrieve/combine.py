"""Several entity types in one document: ``search(["politician", "city"])``.

Each type is ranked exhaustively (:func:`ner_retriever.retrieve.fusion.rank_all`: every
document past the cut-off), a document must pass for every type, and its score is the
**lowest** of its per-type fused scores: a document is as good an answer as its weakest type,
so one strong type cannot carry a document that barely mentions the other. Each hit says which
type it matched.

Each type's queries are final (feedback included) before any type is ranked, over the documents
the search allows, so a type's scores do not depend on the other types. The type the
calibration sample expects fewest documents to pass is ranked first, the others only among the
documents it passed, which gives the same answer as ranking every type over the whole corpus at
the cost of one (small) exhaustive ranking. A top ``k`` (:func:`top_types`) stops earlier: the
first type's ranking widens only until ``k`` documents score at least its n-th document on
every type (no document outside its top n can then enter).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.retrieve.fusion import (ALL_WIDEN, Candidates, Queries, RankingSource,
                                           allowed_estimate, final_queries, fused_candidates,
                                           passing_estimate, rank_all, start_size)
from ner_retriever.retrieve.pooling import DocumentHits


def rank_types(source: RankingSource, queries: Sequence[Queries], cfg: FusionConfig,
               threshold: float, allowed: np.ndarray | None = None) -> list[Candidates]:
    """Each type's documents past ``threshold``, in the order of ``queries``; fewer than
    ``len(queries)`` when some type passes none of the documents the others pass."""
    finals = [final_queries(source, q, cfg, allowed) for q in queries]
    order, expected = _rarest_first(source, finals, cfg, threshold)
    ranked = _among_passing(source, [finals[t] for t in order], [expected[t] for t in order],
                            cfg, threshold, allowed)
    return _in_query_order(ranked, order)


def _rarest_first(source: RankingSource, finals: Sequence[Queries], cfg: FusionConfig,
                  threshold: float) -> tuple[list[int], list[int]]:
    """Type positions, the type the calibration sample expects fewest documents to pass
    first (the later types are ranked among the documents it passes, so the fewer the
    cheaper; the answer does not depend on the order), and each type's
    :func:`passing_estimate` (in query order)."""
    expected = [passing_estimate(source, f, cfg, threshold) for f in finals]
    return sorted(range(len(finals)), key=lambda t: expected[t]), expected


def _among_passing(source: RankingSource, finals: Sequence[Queries], expected: Sequence[int],
                   cfg: FusionConfig, threshold: float, allowed: np.ndarray | None,
                   first: Candidates | None = None) -> list[Candidates]:
    """Each of ``finals`` (final queries, with their :func:`passing_estimate`) ranked
    exhaustively among the documents every earlier one passed; ``first``: the first type's
    ranking already made, ``finals`` then the later types'. Stops at a type that passes
    nothing."""
    ranked: list[Candidates] = [] if first is None else [first]
    if first is not None:
        allowed = first.keys
    for q, count in zip(finals, expected):
        if allowed is not None and not len(allowed):
            break
        ranked.append(rank_all(source, q, cfg, threshold, allowed, final=True, expected=count))
        allowed = ranked[-1].keys
    return ranked


def _in_query_order(ranked: list[Candidates], order: list[int]) -> list[Candidates]:
    """``ranked`` (one per type of ``order``) back in the order of the queries; unchanged
    (and short) when a type passed nothing."""
    if len(ranked) < len(order):
        return ranked
    out: list[Candidates] = [Candidates.empty()] * len(order)
    for r, t in zip(ranked, order):
        out[t] = r
    return out


def top_types(source: RankingSource, queries: Sequence[Queries], cfg: FusionConfig,
              threshold: float, k: int, per_doc: int, allowed: np.ndarray | None = None
              ) -> list[DocumentHits] | None:
    """The ``k`` best documents of :func:`all_types` over :func:`rank_types`. The rarest type
    (:func:`_rarest_first`) is ranked first, to the size its calibration sample expects, and
    widened only while fewer than ``k`` documents reach its n-th score on every type (as
    :func:`rank_all` assumes, a document outside its top n scores below that). None when a
    type passes no document."""
    finals = [final_queries(source, q, cfg, allowed) for q in queries]
    order, expected = _rarest_first(source, finals, cfg, threshold)
    lead, later = finals[order[0]], [finals[t] for t in order[1:]]
    n = start_size(allowed_estimate(source, lead, cfg, threshold, allowed, expected[order[0]]))
    while True:
        first = fused_candidates(source, lead, n, cfg, allowed)
        passing = first.fused >= threshold
        exhausted = int(passing.sum()) < n or len(first.keys) < cfg.candidates(n)
        ranked = _among_passing(source, later, [expected[t] for t in order[1:]], cfg, threshold,
                                None, first.select(passing))
        if len(ranked) < len(queries) and exhausted:
            return None
        hits = all_types(_in_query_order(ranked, order), k, per_doc) \
            if len(ranked) == len(queries) else []
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
