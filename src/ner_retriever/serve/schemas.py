"""Request and response bodies of the HTTP API (they also document it at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)


class DocumentIn(BaseModel):
    """One document to add. Like a JSONL line: keys other than ``id``, ``text`` and
    ``metadata`` are kept as metadata."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"example": {"id": "doc-1", "text":
                                                 "Angela Merkel met Emmanuel Macron in Paris.",
                                                 "source": "news"}})

    id: StrictStr | StrictInt
    text: StrictStr
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="wrap")
    @classmethod
    def _id_is_string_or_integer(cls, value: Any, handler: Any) -> str | int:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"must be a string or an integer, not {value!r:.40}") from None


class AddDocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(description="documents to add, committed all at once")
    if_exists: Literal["error", "skip", "update"] = Field(
        "error", description="a document id already indexed: 409 (error), skip it, or update it")


class AddDocumentsResponse(BaseModel):
    added: int
    skipped: int
    mentions: int
    seconds: float
    documents: int = Field(description="documents in the index after the add")


class MentionHitOut(BaseModel):
    start: int = Field(description="character offset into the document text")
    end: int
    text: str
    score: float


class ContextOut(BaseModel):
    """A window of the document text around the best mention: ``text == doc.text[start:end]``."""

    start: int
    end: int
    text: str
    doc_length: int = Field(description="length of the whole document text")


class ResultOut(BaseModel):
    rank: int
    doc_id: str
    score: float = Field(description="the fused score on a hybrid index; otherwise the best "
                               "mention's cosine times its detector confidence ** the "
                               "index's confidence weight")
    mentions: list[MentionHitOut] = Field(description="best-matching mentions, best first")
    snippet: str = Field(description="plain-text snippet around the best mention")
    context: ContextOut


class SearchOut(BaseModel):
    query: str
    k: int
    offset: int
    has_more: bool
    cached: bool = Field(description="the query vector came from the cache")
    took_ms: float
    results: list[ResultOut]


class MentionOut(BaseModel):
    start: int
    end: int
    text: str
    label: str | None


class DocumentOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    mentions: list[MentionOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    documents: int


class StatsOut(BaseModel):
    """``ner-retriever info`` of the index (less its path) plus ``server``."""

    model_config = ConfigDict(extra="allow")

    documents: int
    mentions: int
    model: str | None = None
    block: int | None = None
    component: str | None = None
    head: dict[str, Any] | None = None
    detector: dict[str, Any] | None = None
    dim: int | None = None
    store: str | None = None
    created: str | None = None
    size_bytes: int | None = None
    server: dict[str, Any]


class ErrorOut(BaseModel):
    detail: str
