"""HTTP search service and web page (``ner-retriever serve``).

>>> from ner_retriever.serve import ServeSettings, open_app       # doctest: +SKIP
>>> app = open_app("my-index", ServeSettings(write_token=None))    # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from ner_retriever.serve.app import (
    DEFAULT_EXAMPLES,
    SearchService,
    ServeSettings,
    create_app,
    open_app,
    server_config,
)
from ner_retriever.serve.embedder import LockedEncoder, LRUCache, QueryEmbedder

__all__ = [
    "DEFAULT_EXAMPLES",
    "LRUCache",
    "LockedEncoder",
    "QueryEmbedder",
    "SearchService",
    "ServeSettings",
    "create_app",
    "open_app",
    "server_config",
]
