"""Document-level baselines for the evaluation: BM25 and a dense sentence embedder.

* ``bm25``: bm25s (Lucene BM25, k1=1.5, b=0.75) over the documents, English stopwords, no
  stemming; the query is the type description.
* ``dense``: cosine between the description and each whole document, both embedded by
  :class:`ner_retriever.models.dense.DenseEncoder` (all-MiniLM-L6-v2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bm25_scores(documents: Sequence[str], queries: Sequence[str]) -> np.ndarray:
    """``(n_queries, n_documents)`` BM25 scores; a document sharing no term with a query
    scores 0."""
    import bm25s

    if not documents:
        return np.zeros((len(queries), 0), np.float32)
    corpus = bm25s.tokenize(list(documents), stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    return np.stack([np.asarray(retriever.get_scores(t), np.float32) if t
                     else np.zeros(len(documents), np.float32) for t in tokens]) \
        if queries else np.zeros((0, len(documents)), np.float32)
