"""Request and response bodies of the HTTP API (they also document it at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictStr,
    StringConstraints,
    Tag,
    create_model,
)

from ner_retriever.serve.settings import ServeSettings


def char_class(chars: list[str], negate: bool = False) -> str:
    """A regex character class matching ``chars`` (any character but them when ``negate``),
    spelled with explicit ``\\xHH``/``\\uHHHH`` escapes: Python's ``re``, pydantic's Rust regex
    and a browser's ECMAScript regex then agree exactly (their ``\\s`` classes differ)."""
    def escape(c: str) -> str:
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    ranges: list[list[str]] = []
    for c in sorted(set(chars)):
        if ranges and ord(c) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ("[^" if negate else "[") + "".join(
        escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges) + "]"


# What ``str.strip()`` removes: a query, id or text with nothing else is refused, and the
# OpenAPI schema says so with this pattern ("holds a character that is not whitespace").
# Unicode has no whitespace outside the BMP (a test scans all of it).
BMP = 0x10000
WHITESPACE = [chr(c) for c in range(BMP) if chr(c).isspace()]
NON_BLANK = char_class(WHITESPACE, negate=True)
BLANK_MESSAGE = "must hold a character other than whitespace"
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # integer ids: what every JSON client can send
ID_TAGS = ("string", "integer")  # the two forms of an id, named in validation error locations


def _id_kind(value: Any) -> str | None:
    """Which form an id took; a number goes to the integer form, where ``5.0`` is ``5`` (JSON
    Schema's ``integer``) and ``5.5`` is refused."""
    if isinstance(value, str):
        return ID_TAGS[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ID_TAGS[1]
    return None


def _document_id(max_chars: int) -> Any:
    """A string id (not blank, at most ``max_chars``) or a 64-bit integer id."""
    text = Annotated[StrictStr, StringConstraints(pattern=NON_BLANK, max_length=max_chars)]
    number = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]  # only numbers reach it
    return Annotated[Annotated[text, Tag(ID_TAGS[0])] | Annotated[number, Tag(ID_TAGS[1])],
                     Discriminator(_id_kind, custom_error_type="id_type",
                                   custom_error_message="must be a string or an integer")]


class DocumentBase(BaseModel):
    """One document to add. Like a JSONL line: keys other than ``id``, ``text`` and
    ``metadata`` are kept as metadata."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"example": {"id": "doc-1", "text":
                                                 "Angela Merkel met Emmanuel Macron in Paris.",
                                                 "source": "news"}})

    metadata: dict[str, Any] = Field(default_factory=dict)


class AddDocumentsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    if_exists: Literal["error", "skip", "update"] = Field(
        "error", description="a document id already indexed: 409 (error), skip it, or update it")


def add_documents_model(settings: ServeSettings) -> type[AddDocumentsBase]:
    """The body of ``POST /documents`` with this server's limits, so the one model both
    validates requests and states the limits in the OpenAPI schema."""
    text = Annotated[StrictStr, StringConstraints(pattern=NON_BLANK,
                                                  max_length=settings.max_text_chars)]
    document = create_model("DocumentIn", __base__=DocumentBase,
                            id=(_document_id(settings.max_id_chars), ...), text=(text, ...))
    documents = Annotated[list[document], Field(  # type: ignore[valid-type]
        min_length=1, max_length=settings.max_documents,
        description="documents to add, committed all at once; ids must not repeat (409)")]
    return create_model("AddDocumentsRequest", __base__=AddDocumentsBase,
                        documents=(documents, ...))


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
    query: str | None = Field(None, description="the description this mention matched; only "
                                                "when a search has several q")


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
    query: str = Field(description='the descriptions joined by " & ", or the example (like)')
    queries: list[str] = Field(description="each description (or the example) on its own")
    threshold: float | None = Field(None, description="the fused-score cut-off documents "
                                                      "passed; only with all=true or several q")
    total: int | None = Field(None, description="documents past the cut-off; only with "
                                                "all=true")
    k: int
    offset: int
    has_more: bool
    cached: bool = Field(description="the query vector came from the cache")
    took_ms: float
    results: list[ResultOut]


class EntityOut(BaseModel):
    text: str = Field(description="the most frequent surface form of the entity")
    documents: int = Field(description="documents naming it")
    mentions: int = Field(description="its mentions past the cut-off")
    score: float = Field(description="its best mention's fused score")
    examples: list[str] = Field(description="ids of the documents of its best mentions")


class EntitiesOut(BaseModel):
    query: str
    threshold: float = Field(description="the fused-score cut-off each mention passed")
    entities: list[EntityOut] = Field(description="best first")


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
