"""The hybrid ranking, ONE implementation for search and evaluation: candidates from each side,
exact scores on every side, calibration on a fixed sample, fusion, pseudo-relevance feedback.

What it reads comes through a :class:`RankingSource`: an index (``sources.IndexSource``, what
``Retriever.search`` uses) or arrays in memory (``sources.ArraySource``, what
``evaluation`` uses), so every published R-Precision is the ranking a user gets.

A filter (``allowed``: the sorted keys of the documents a search may return) acts inside
candidate generation on both sides, so a top k holds k documents whenever k are allowed; the
calibration sample stays the whole corpus's, so a document's fused score does not depend on
the filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ner_retriever.config import (CALIBRATION_DOCS, FEEDBACK_WEIGHT, HYBRID_WEIGHT, NAME_WEIGHT,
                                 FusionConfig, check_weight)
from ner_retriever.errors import ConfigError
from ner_retriever.retrieve.pooling import (DocumentHits, best_rows, document_max,
                                            document_softmax)

# Exhaustive mode's first k (a plain search's default, so a type few documents pass costs what a
# plain search does); multiplied by ALL_WIDEN while the k-th document still passes the cut-off
# (each pass re-reads its candidates' vectors: few large steps beat many small ones).
ALL_START = 10
ALL_WIDEN = 4


@dataclass(frozen=True)
class Queries:
    """One query per side: mention space, document (dense) space, mention names (dense)."""

    mention: np.ndarray
    dense: np.ndarray
    names: np.ndarray
    # calibration_scores of these queries, by calibration sample: a search ranks the same final
    # queries several times (a type's passing estimate, its ranking, a widened ranking)
    _calibrated: dict = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Calibration:
    """The fixed sample of documents that standardises each side: keys, their dense vectors,
    their mentions (``doc_index`` = position in ``keys``) and, with a names side, their name
    vectors."""

    keys: np.ndarray
    documents: np.ndarray
    mention_docs: np.ndarray
    mention_vectors: np.ndarray
    names: tuple[np.ndarray, np.ndarray] | None
    population: int  # live documents the sample was drawn from

    @property
    def scale(self) -> float:
        """Documents of the corpus per document of the sample."""
        return self.population / max(len(self.keys), 1)


class RankingSource(Protocol):
    """What the ranking reads. Keys identify documents and ascend; ``allowed`` (sorted keys,
    None = every document) restricts what the two ``*_top`` methods return."""

    def dense_top(self, query: np.ndarray, n: int,
                  allowed: np.ndarray | None = None) -> np.ndarray:
        """Keys of the ``n`` live documents whose dense vector scores highest (unordered)."""

    def mention_top(self, query: np.ndarray, n: int,
                    allowed: np.ndarray | None = None) -> np.ndarray:
        """Keys of the ``n`` documents whose best mention scores highest."""

    def mentions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, doc_index, vectors)`` of the documents' mentions, grouped in ``keys``
        order (``doc_index`` = position in ``keys``)."""

    def names(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(doc_index, vectors)`` of the documents' mention names; None without names."""

    def document_vectors(self, keys: np.ndarray) -> np.ndarray:
        """Dense vectors of the documents, in ``keys`` order."""

    def calibration(self, size: int) -> Calibration:
        """The calibration sample (at most ``size`` live documents, seeded)."""


@dataclass(frozen=True)
class ScoreStats:
    """Location and scale of one query's document scores, from a sample of the corpus; a
    document without any mention takes ``floor`` (the lowest mention score seen)."""

    mean: float
    std: float
    floor: float


def check_allowed(allowed: np.ndarray | None) -> np.ndarray | None:
    """``allowed`` as a 1-d int64 array of strictly ascending keys (None stays None)."""
    if allowed is None:
        return None
    keys = np.asarray(allowed)
    if keys.ndim != 1 or (len(keys) and not np.issubdtype(keys.dtype, np.integer)):
        raise ConfigError(f"allowed documents must be a 1-d array of integer keys, not "
                          f"{keys.dtype} of shape {keys.shape}")
    keys = keys.astype(np.int64, copy=False)
    if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
        raise ConfigError("allowed document keys must be sorted and distinct")
    return keys


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


def fuse(mention: np.ndarray, dense: np.ndarray, mention_stats: ScoreStats,
         dense_stats: ScoreStats, weight: float = HYBRID_WEIGHT,
         names: np.ndarray | None = None, name_stats: ScoreStats | None = None,
         name_weight: float = NAME_WEIGHT) -> np.ndarray:
    """``w * z(mention) + (1 - w) * z(dense) [+ name_weight * z(names)]``: each side
    standardised with its own statistics (``names`` with ``name_stats``), so no scale
    dominates."""
    check_weight(weight)
    fused = (weight * standardise(mention, mention_stats)
             + (1.0 - weight) * standardise(dense, dense_stats))
    if names is not None:
        fused += name_weight * standardise(names, name_stats)
    return fused


def standardise(scores: np.ndarray, stats: ScoreStats) -> np.ndarray:
    """``(scores - mean) / std``; ``-inf`` scores (a document without mentions) take the floor."""
    scores = np.where(np.isfinite(scores), scores, stats.floor)
    return (scores - stats.mean) / stats.std


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


@dataclass
class Candidates:
    """Fused scores of the candidate documents, with what explains each match.

    ``row_fused`` is each mention's own fused score: the same sum as its document's, with the
    mention's score in place of the document's pooled mention score and its own name score in
    place of the document's best name, so a mention and a document pass one cut-off alike."""

    keys: np.ndarray
    fused: np.ndarray
    rows: np.ndarray  # mention rows of the candidates, grouped by candidate
    doc_index: np.ndarray  # position in ``keys`` of each row
    sims: np.ndarray  # each row's score with the (final) mention query
    row_fused: np.ndarray | None = None

    @classmethod
    def empty(cls) -> Candidates:
        none = np.zeros(0, np.int64)
        return cls(none, np.zeros(0), none, none, np.zeros(0, np.float32), np.zeros(0))

    def order(self, k: int) -> np.ndarray:
        """Positions of the ``k`` best candidates: by fused score, ties by key."""
        return np.lexsort((self.keys, -self.fused))[:k]

    def select(self, keep: np.ndarray) -> Candidates:
        """The candidates where the boolean ``keep`` holds, with their mentions."""
        position = np.cumsum(keep) - 1
        own = keep[self.doc_index]
        return Candidates(self.keys[keep], self.fused[keep], self.rows[own],
                          position[self.doc_index[own]], self.sims[own],
                          None if self.row_fused is None else self.row_fused[own])

    def hits(self, i: int, per_doc: int) -> list[tuple[int, float]]:
        """Candidate ``i``'s ``per_doc`` best mentions, ``(row, score)``, best first."""
        lo, hi = np.searchsorted(self.doc_index, [i, i + 1])
        own, own_rows = self.sims[lo:hi], self.rows[lo:hi]
        return [(int(own_rows[j]), float(own[j])) for j in np.argsort(-own)[:per_doc]]

    def top(self, k: int, per_doc: int) -> list[DocumentHits]:
        """The ``k`` best documents with each one's ``per_doc`` best mentions."""
        return [DocumentHits(int(self.keys[i]), float(self.fused[i]), self.hits(i, per_doc))
                for i in self.order(k)]


def fused_candidates(source: RankingSource, q: Queries, k: int, cfg: FusionConfig,
                     allowed: np.ndarray | None = None) -> Candidates:
    """One pass: the top ``cfg.candidates(k)`` (allowed) documents of the mention and the
    dense side, each candidate scored exactly on every side (the mention side as a soft
    maximum over all its mentions), each side standardised on the calibration sample, then
    fused."""
    allowed = check_allowed(allowed)
    n = cfg.candidates(k)
    candidates = np.union1d(np.asarray(source.mention_top(q.mention, n, allowed), np.int64),
                            np.asarray(source.dense_top(q.dense, n, allowed), np.int64))
    if not len(candidates):
        return Candidates.empty()
    rows, doc_index, vectors = source.mentions(candidates)
    sims = vectors @ np.asarray(q.mention, np.float32)
    pooled = pooled_mention_scores(sims, doc_index, len(candidates), cfg.mention_temperature)
    cal_mention, cal_dense, cal_names = calibration_scores(source, q, cfg)
    mention_stats, dense_stats = score_stats(cal_mention), score_stats(cal_dense)
    dense = source.document_vectors(candidates) @ np.asarray(q.dense, np.float32)
    names = row_names = name_stats = None
    if cal_names is not None:
        name_docs, name_vectors = source.names(candidates)
        name_sims = name_vectors @ np.asarray(q.names, np.float32)
        names = document_max(name_sims[None], name_docs, len(candidates))[0]
        row_names = name_sims if len(name_sims) == len(rows) else names[doc_index]
        name_stats = score_stats(cal_names)
    fused = fuse(pooled.astype(np.float64), dense, mention_stats, dense_stats, cfg.weight,
                 names, name_stats, cfg.name_weight)
    row_fused = fuse(sims.astype(np.float64), dense[doc_index], mention_stats, dense_stats,
                     cfg.weight, row_names, name_stats, cfg.name_weight)
    return Candidates(candidates, fused, rows, doc_index, sims, row_fused)


def calibration_scores(source: RankingSource, q: Queries, cfg: FusionConfig
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each side's scores of the calibration sample's documents (mention: soft maximum, dense,
    best name or None without names): what standardises each side."""
    cal = source.calibration(cfg.calibration_docs)
    key = (id(cal), cfg.mention_temperature)  # the sample is held with its scores: no id reuse
    if key in q._calibrated:
        return q._calibrated[key][1]
    mention = pooled_mention_scores(cal.mention_vectors @ np.asarray(q.mention, np.float32),
                                    cal.mention_docs, len(cal.keys), cfg.mention_temperature)
    dense = cal.documents @ np.asarray(q.dense, np.float32)
    names = None if cal.names is None else best_name_scores(q.names, *cal.names, len(cal.keys))
    q._calibrated[key] = (cal, (mention, dense, names))
    return mention, dense, names


def passing_estimate(source: RankingSource, q: Queries, cfg: FusionConfig,
                     threshold: float) -> int:
    """How many documents of the corpus pass ``threshold``, estimated from the calibration
    sample (exact when the sample is the whole corpus): where an exhaustive ranking starts, so
    that it rarely needs to widen."""
    mention, dense, names = calibration_scores(source, q, cfg)
    fused = fuse(mention.astype(np.float64), dense, score_stats(mention), score_stats(dense),
                 cfg.weight, names, None if names is None else score_stats(names),
                 cfg.name_weight)
    return int(np.ceil(int((fused >= threshold).sum()) *
                       source.calibration(cfg.calibration_docs).scale))


def final_queries(source: RankingSource, q: Queries, cfg: FusionConfig,
                  allowed: np.ndarray | None = None) -> Queries:
    """The queries of the final pass: with ``cfg.feedback_docs``, each side moved toward the
    best vectors of a first pass's top documents; ``q`` itself without feedback."""
    if cfg.feedback_docs:
        first = fused_candidates(source, q, cfg.feedback_docs, cfg, allowed)
        top = first.keys[first.order(cfg.feedback_docs)]
        if len(top):
            return feedback_queries(source, q, top, cfg.feedback_weight)
    return q


def hybrid_rank(source: RankingSource, q: Queries, k: int, cfg: FusionConfig,
                allowed: np.ndarray | None = None) -> Candidates:
    """The full hybrid ranking: with ``cfg.feedback_docs``, a first pass for that many
    documents moves each side's query toward their best vectors, then the final pass. Both
    passes see only the ``allowed`` documents (sorted keys; None: all)."""
    allowed = check_allowed(allowed)
    return fused_candidates(source, final_queries(source, q, cfg, allowed), k, cfg, allowed)


def rank_all(source: RankingSource, q: Queries, cfg: FusionConfig, threshold: float,
             allowed: np.ndarray | None = None, final: bool = False,
             expected: int | None = None) -> Candidates:
    """Every (allowed) document whose fused score is at least ``threshold`` (exhaustive mode):
    the ranking of :func:`hybrid_rank`, its ``k`` widened from :func:`start_size` until the
    k-th document falls below the cut-off or the corpus runs out. ``final``: ``q`` already
    holds the final pass's queries (:func:`final_queries`), so no feedback pass runs;
    ``expected``: its :func:`passing_estimate`, when already made."""
    allowed = check_allowed(allowed)
    if not final:
        q = final_queries(source, q, cfg, allowed)
    k = start_size(allowed_estimate(source, q, cfg, threshold, allowed, expected))
    while True:
        ranked = fused_candidates(source, q, k, cfg, allowed)
        passing = ranked.fused >= threshold
        if int(passing.sum()) < k or len(ranked.keys) < cfg.candidates(k):
            return ranked.select(passing)
        k *= ALL_WIDEN


def allowed_estimate(source: RankingSource, q: Queries, cfg: FusionConfig, threshold: float,
                     allowed: np.ndarray | None = None, expected: int | None = None) -> int:
    """:func:`passing_estimate` (``expected``, when already made) among the ``allowed``
    documents: their share of it."""
    if expected is None:
        expected = passing_estimate(source, q, cfg, threshold)
    if allowed is None:
        return expected
    population = source.calibration(cfg.calibration_docs).population
    return int(np.ceil(expected * min(1.0, len(allowed) / max(population, 1))))


def start_size(expected: int) -> int:
    """The first ``k`` of an exhaustive ranking that expects ``expected`` documents to pass
    (:func:`allowed_estimate`): ALL_START, or that many plus an eighth for the sample's
    error."""
    return max(ALL_START, expected + expected // 8)


def feedback_queries(source: RankingSource, q: Queries, keys: np.ndarray,
                     weight: float = FEEDBACK_WEIGHT) -> Queries:
    """Each side's query moved toward the best-matching vector of each of the ``keys``
    documents: best mention, document vector, best mention name."""
    _, doc_index, vectors = source.mentions(keys)
    names = source.names(keys)
    return Queries(
        feedback_from_best(q.mention, vectors, doc_index, weight),
        feedback_query(q.dense, source.document_vectors(keys), weight),
        q.names if names is None else feedback_from_best(q.names, names[1], names[0], weight))


def pooled_mention_scores(sims: np.ndarray, doc_index: np.ndarray, n_docs: int,
                          temperature: float) -> np.ndarray:
    """Mention side of each of ``n_docs`` documents: the soft maximum of its mentions' scores."""
    return document_softmax(sims[None], doc_index, n_docs, temperature)[0]


def best_name_scores(query: np.ndarray, doc_index: np.ndarray, vectors: np.ndarray,
                     n_docs: int) -> np.ndarray:
    """Best mention-name score of each of ``n_docs`` documents (``-inf`` without mentions)."""
    return document_max((vectors @ np.asarray(query, np.float32))[None], doc_index, n_docs)[0]
