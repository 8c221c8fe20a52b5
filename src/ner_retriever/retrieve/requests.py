"""One search request, validated once before any model runs: the type descriptions (one, or
several that must all hold) or an example mention, how many results, the fusion settings, the
filter and whether the search is exhaustive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ner_retriever.config import (FEEDBACK_DOCS, HYBRID_WEIGHT, MAX_K, FusionConfig, check_feedback,
                                  check_k, check_weight)
from ner_retriever.errors import ConfigError
from ner_retriever.retrieve.examples import Example, parse_example
from ner_retriever.retrieve.filtering import SearchFilter

MAX_TYPES = 8  # descriptions one search may combine
QUERY_JOIN = " & "  # how several descriptions read as one query string (CLI/HTTP "query")


@dataclass(frozen=True)
class SearchRequest:
    """What :meth:`Retriever.search` was asked. ``queries`` holds the descriptions (empty for
    an example search); ``exhaustive`` returns every document past the cut-off. ``mode`` is
    checked by the retriever, which knows whether its index is hybrid."""

    queries: tuple[str, ...] = ()
    like: Example | None = None
    k: int = 10
    per_doc: int = 3
    mode: str = "auto"
    weight: float = HYBRID_WEIGHT
    feedback: int = FEEDBACK_DOCS
    where: SearchFilter = SearchFilter()
    exhaustive: bool = False

    @classmethod
    def of(cls, query: str | Sequence[str] | None = None, like: str | None = None,
           where: str | Sequence[str] | SearchFilter | None = None, must: str | None = None,
           **settings) -> SearchRequest:
        """Parse and check every part (a ``ConfigError`` names the bad one)."""
        queries = _descriptions(query)
        if like is not None and queries:
            raise ConfigError("give either a type description or an example (like=), not both")
        if like is None and not queries:
            raise ConfigError("query is empty")
        flt = where if isinstance(where, SearchFilter) else SearchFilter.of(where, must)
        req = cls(queries, None if like is None else parse_example(like), where=flt, **settings)
        check_k(req.k)
        check_feedback(req.feedback)
        check_weight(req.weight)
        if req.per_doc < 1:
            raise ConfigError(f"per_doc must be at least 1, not {req.per_doc}")
        return req

    @property
    def labels(self) -> list[str]:
        """One label per query vector: the descriptions, or the example as given."""
        return list(self.queries) if self.queries else [self.like.source]

    @property
    def query(self) -> str:
        """The request as one string (several descriptions joined by QUERY_JOIN)."""
        return QUERY_JOIN.join(self.labels)

    @property
    def cut_off(self) -> bool:
        """Whether the answer is every document past the cut-off (exhaustive, several types)."""
        return self.exhaustive or self.combined

    @property
    def combined(self) -> bool:
        """Several types: each must hold, so each is ranked exhaustively."""
        return len(self.queries) > 1

    @property
    def limit(self) -> int | None:
        """Results to return: ``k``, or every passing document when exhaustive."""
        return None if self.exhaustive else self.k

    def fusion(self) -> FusionConfig:
        return FusionConfig(weight=self.weight, feedback_docs=self.feedback)


def _descriptions(query: str | Sequence[str] | None) -> tuple[str, ...]:
    if query is None:
        return ()
    items = [query] if isinstance(query, str) else list(query)
    for q in items:
        if not isinstance(q, str) or not q.strip():
            raise ConfigError("query is empty")
    if len(items) > MAX_TYPES:
        raise ConfigError(f"at most {MAX_TYPES} types in one search, not {len(items)}")
    return tuple(q.strip() for q in items)


__all__ = ["MAX_K", "MAX_TYPES", "QUERY_JOIN", "SearchRequest"]
