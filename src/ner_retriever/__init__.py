"""ner-retriever: zero-shot named entity retrieval."""

from ner_retriever.errors import (
    ConfigError,
    CorpusError,
    DuplicateDocumentError,
    IndexStateError,
    NerRetrieverError,
)
from ner_retriever.types import Document, Mention, MentionHit, SearchResult, Span

__all__ = [
    "ConfigError",
    "CorpusError",
    "Document",
    "DuplicateDocumentError",
    "IndexStateError",
    "Mention",
    "MentionHit",
    "NerRetrieverError",
    "SearchResult",
    "Span",
]
__version__ = "0.1.0"
