"""ner-retriever: zero-shot named entity retrieval."""

from ner_retriever.errors import (
    ConfigError,
    CorpusError,
    DuplicateDocumentError,
    IndexStateError,
    NerRetrieverError,
    UnsupportedRequestError,
)
from ner_retriever.types import Document, Mention, MentionHit, SearchResult, Span

# Heavy parts are imported on first use: they pull in torch, which the CLI's light commands
# (``info``, ``--help``) never need. Name -> module that defines it.
_LAZY = {
    "Retriever": "ner_retriever.retrieve.retriever",
    "read_corpus": "ner_retriever.io.corpus",
    "build_detector": "ner_retriever.detect.registry",
    "TransformerEncoder": "ner_retriever.models.encoder",
    "EncoderConfig": "ner_retriever.models.encoder",
    "ProjectionHead": "ner_retriever.models.head",
    "DenseEncoder": "ner_retriever.models.dense",
    "Index": "ner_retriever.indexes.index",
    "FaissStore": "ner_retriever.indexes.faiss",
    "FusionConfig": "ner_retriever.config",
    "Entity": "ner_retriever.retrieve.inventory",
    "SearchFilter": "ner_retriever.retrieve.filtering",
}

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
    "UnsupportedRequestError",
    *_LAZY,
]
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ner_retriever' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
