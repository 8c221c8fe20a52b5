"""Scores of every document for every evaluated type: the mention ranking (best mention), the
hybrid ranking (the same function ``Retriever.search`` runs, :mod:`ner_retriever.retrieve.fusion`,
over the set's vectors in memory) and the baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.evaluation.vectors import dense_document_vectors
from ner_retriever.models.head import ProjectionHead, normalize, to_index_space
from ner_retriever.retrieve.fusion import Queries, hybrid_rank as rank
from ner_retriever.retrieve.pooling import document_max, document_softmax
from ner_retriever.retrieve.sources import ArraySource

QUERY_CHUNK = 64  # queries scored against all mentions at once


def mention_document_scores(query_vectors: np.ndarray, mention_vectors: np.ndarray,
                            doc_index: np.ndarray, n_docs: int, chunk: int = QUERY_CHUNK,
                            temperature: float | None = None) -> np.ndarray:
    """Exact inner product between (normalised) queries and mentions, max per document (or
    the soft maximum at ``temperature``, as the hybrid ranking pools mentions)."""
    return pooled_document_scores(query_vectors, mention_vectors, doc_index, n_docs,
                                  (temperature,), chunk)[0]



def pooled_document_scores(query_vectors: np.ndarray, mention_vectors: np.ndarray,
                           doc_index: np.ndarray, n_docs: int,
                           temperatures: Sequence[float | None], chunk: int = QUERY_CHUNK
                           ) -> list[np.ndarray]:
    """:func:`mention_document_scores` for several poolings (``None`` = max) from one pass
    over the query x mention similarities (the hybrid ranking needs the max and the soft max)."""
    out = [np.empty((len(query_vectors), n_docs), dtype=np.float32) for _ in temperatures]
    for b in range(0, len(query_vectors), chunk):
        sims = query_vectors[b: b + chunk] @ mention_vectors.T
        for pooled, t in zip(out, temperatures):
            pooled[b: b + chunk] = (document_max(sims, doc_index, n_docs) if t is None
                                    else document_softmax(sims, doc_index, n_docs, t))
    return out


def hybrid_rank(eval_set: EvalSet, source: ArraySource, queries: np.ndarray,
                dense_queries: np.ndarray, cfg: FusionConfig | None = None,
                k: int | None = None) -> np.ndarray:
    """``(n_types, n_docs)`` scores of the hybrid ranking as :class:`Retriever` computes them
    for ``k`` documents (default: each type's ``R``): the fused score of every candidate,
    ``-inf`` for documents the ranking never considers."""
    cfg = cfg or FusionConfig()
    out = np.full((len(eval_set.types), source.n_docs), -np.inf, dtype=np.float64)
    for i, t in enumerate(eval_set.types):
        q = Queries(queries[i], dense_queries[i], dense_queries[i])
        ranked = rank(source, q, len(eval_set.relevant[t]) if k is None else k, cfg)
        out[i, ranked.keys] = ranked.fused
    return out


def average_queries(vectors: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """Mean of normalised vectors per type (``groups[i]`` descriptions each), renormalised."""
    vectors = normalize(vectors)
    out, i = [], 0
    for n in groups:
        out.append(vectors[i: i + n].mean(axis=0))
        i += n
    return normalize(np.stack(out))



def embed_queries(encoder, eval_set: EvalSet, head: ProjectionHead | None = None) -> np.ndarray:
    """One normalised query vector per type (the mean over its descriptions), projected exactly
    as ``Retriever`` projects a query."""
    flat = [d for t in eval_set.types for d in eval_set.descriptions[t]]
    vectors = to_index_space(head, encoder.encode_queries(flat), queries=True)
    return average_queries(vectors, [len(eval_set.descriptions[t]) for t in eval_set.types])



def dense_queries(eval_set: EvalSet, dense) -> np.ndarray:
    flat = [d for t in eval_set.types for d in eval_set.descriptions[t]]
    return average_queries(dense.encode(flat), [len(eval_set.descriptions[t])
                                                for t in eval_set.types])



def dense_document_scores(eval_set: EvalSet, cache_root: Path | None, dense=None) -> np.ndarray:
    """Cosine of each type's description with each whole document; ``dense``: a loaded
    encoder or a dense model name (default MiniLM)."""
    from ner_retriever.models.dense import DenseEncoder

    dense = DenseEncoder(dense) if dense is None or isinstance(dense, str) else dense
    return dense_queries(eval_set, dense) @ dense_document_vectors(eval_set, cache_root, dense).T



def bm25_document_scores(eval_set: EvalSet) -> np.ndarray:
    from ner_retriever.evaluation.baselines import bm25_scores

    queries = [" ".join(eval_set.descriptions[t]) for t in eval_set.types]
    return bm25_scores(eval_set.texts, queries)
