"""R-Precision, the paper's metric, with ties at the cut-off taken in expectation."""

from __future__ import annotations

import numpy as np

from ner_retriever.evaluation.data import EvalSet


def r_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """R-Precision of one ranking: ``scores`` (n_docs,), ``relevant`` indices or a bool mask.

    Ties at the cut-off count in expectation over a random order; NaN scores rank last."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.zeros(len(scores), dtype=bool)
    rel = np.asarray(relevant)
    if rel.dtype == bool:
        if rel.shape != mask.shape:
            raise ValueError("relevance mask and scores differ in length")
        mask = rel
    else:
        mask[rel] = True
    r = int(mask.sum())
    if r == 0:
        raise ValueError("R-Precision is undefined for a type without relevant documents")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    cut = np.partition(scores, len(scores) - r)[len(scores) - r]  # the R-th largest score
    above = scores > cut
    tied = scores == cut
    slots = r - int(above.sum())
    hits = mask[above].sum() + slots * mask[tied].sum() / tied.sum()
    return float(hits / r)



def macro(per_type: dict[str, float]) -> float:
    return float(np.mean(list(per_type.values()))) if per_type else float("nan")



def evaluate_scores(eval_set: EvalSet, scores: np.ndarray) -> dict:
    """``scores`` (n_types, n_docs) in ``eval_set.types`` order -> result dict."""
    per_type = {t: r_precision(scores[i], eval_set.relevant[t])
                for i, t in enumerate(eval_set.types)}
    return {"r_precision": macro(per_type), "per_type": per_type}
