"""Records that flow between pipeline stages (corpus -> detect -> encode -> index -> search)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Span:
    """A character span ``text[start:end]``; ``label`` is set only for gold spans.

    ``confidence`` (0-1], when a detector can tell, is how sure it is that this is a mention;
    indexes weight the mention's vector by it. Equality ignores it."""

    start: int
    end: int
    label: str | None = None
    confidence: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid span [{self.start}, {self.end})")


@dataclass(frozen=True, slots=True)
class Document:
    """One retrievable unit. ``spans`` holds gold mentions when the corpus has them (CoNLL)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    spans: tuple[Span, ...] | None = None
    source: str | None = None  # "file:line" where the document came from, for error messages


@dataclass(frozen=True, slots=True)
class Mention:
    """A detected (or gold) mention inside a document."""

    doc_id: str
    start: int
    end: int
    text: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class MentionHit:
    """A mention that matched a query, with its similarity; ``query`` names the description
    it matched when a search asks for several types."""

    start: int
    end: int
    text: str
    score: float
    query: str | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One ranked document: its best-matching mentions, ordered by score."""

    doc_id: str
    score: float
    mentions: list[MentionHit]
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "score": self.score,
            "mentions": [
                {"start": m.start, "end": m.end, "text": m.text, "score": m.score,
                 **({} if m.query is None else {"query": m.query})}
                for m in self.mentions
            ],
            "snippet": self.snippet,
        }
