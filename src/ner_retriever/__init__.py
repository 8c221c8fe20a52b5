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
    "Retriever",
    "SearchResult",
    "Span",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``Retriever`` is imported on first use: it pulls in torch, which the CLI's light
    commands (``info``, ``--help``) never need."""
    if name == "Retriever":
        from ner_retriever.retrieve.retriever import Retriever

        return Retriever
    raise AttributeError(f"module 'ner_retriever' has no attribute {name!r}")
