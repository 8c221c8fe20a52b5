"""How training scores a head: macro R-Precision of description queries over a
:class:`~ner_retriever.training.mentions.MentionSet` (document = sentence), through the
evaluation's own scoring, so early stopping selects what the evaluation measures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ner_retriever.evaluation.metrics import r_precision as ranking_r_precision
from ner_retriever.evaluation.scoring import mention_document_scores
from ner_retriever.models.head import normalize
from ner_retriever.training.mentions import MentionSet


def load_descriptions(path_or_name: str | Path | None, tags: Iterable[str]) -> dict[str, list[str]]:
    """``tag -> [description, ...]`` (first = canonical) from a JSON map (values: a string or a
    list of paraphrases), a shipped map name (``fewnerd``...), or derived from the tag (None).

    Lookup is :class:`ner_retriever.evaluation.descriptions.Descriptions`' (``location_GPE`` finds ``GPE``)."""
    from ner_retriever.evaluation.descriptions import load_descriptions as load_map

    mapping = load_map(path_or_name)
    return {t: mapping.get_all(t) for t in tags}


def r_precision(query_vectors: np.ndarray, mention_vectors: np.ndarray, docs: np.ndarray,
                n_docs: int, relevant: Sequence[set[int] | np.ndarray]) -> np.ndarray:
    """R-Precision per query, ranking documents by their best mention: the metric of
    :mod:`ner_retriever.evaluation.metrics` (ties in expectation). Vectors must be normalised;
    queries with R = 0 give NaN."""
    order = np.argsort(docs, kind="stable")  # the per-document max wants mentions grouped
    scores = mention_document_scores(query_vectors, mention_vectors[order], docs[order], n_docs)
    result = np.full(len(relevant), np.nan)
    for q, rel in enumerate(relevant):
        rel = np.fromiter(rel, dtype=np.int64) if isinstance(rel, set) else np.asarray(rel)
        if len(rel):
            result[q] = ranking_r_precision(scores[q], rel)
    return result


def relevant_docs(ms: MentionSet, types: Sequence[str]) -> list[np.ndarray]:
    """The sentences holding at least one mention of each type."""
    return [np.unique(ms.docs[ms.labels == t]) for t in types]


def evaluate_vectors(ms: MentionSet, query_raw: dict[str, np.ndarray],
                     project: Callable[[np.ndarray], np.ndarray] | None = None,
                     types: Sequence[str] | None = None,
                     project_queries: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Macro R-Precision of ``project`` (None = raw normalised vectors) on a mention set.

    ``query_raw[type]`` holds one or more raw description vectors; their projections are
    averaged into one query (one description gives exactly that description's query)."""
    project = project or normalize
    project_queries = project_queries or project
    types = [t for t in (types or sorted(query_raw)) if t in query_raw]
    mentions = project(ms.vectors)
    queries = normalize(np.stack([project_queries(query_raw[t]).mean(0) for t in types]))
    per = r_precision(queries, mentions, ms.docs, ms.n_docs, relevant_docs(ms, types))
    per_type = {t: float(p) for t, p in zip(types, per) if not np.isnan(p)}
    macro = float(np.mean(list(per_type.values()))) if per_type else float("nan")
    return {"r_precision": macro, "per_type": per_type}


def encode_descriptions(encoder, descriptions: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Raw vectors of every description, through the same encoder (and query template)."""
    flat = [(t, d) for t, ds in descriptions.items() for d in ds]
    if not flat:
        return {}
    vecs = encoder.encode_queries([d for _, d in flat])
    out: dict[str, list[np.ndarray]] = {}
    for (t, _), v in zip(flat, vecs):
        out.setdefault(t, []).append(v)
    return {t: np.stack(v).astype(np.float32) for t, v in out.items()}
