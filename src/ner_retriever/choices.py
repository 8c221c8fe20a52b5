"""The names a user chooses between: encoder components, index types, storages, vector stores,
search modes, mention sources and indexing engines.

Kept free of torch and faiss so the command line can offer them as choices (``--help``,
``info``) without loading either; the modules that act on a choice import it from here.
"""

COMPONENTS: tuple[str, ...] = ("query", "key", "value", "hidden")
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
STORAGES = ("fp32", "fp16", "pq", "sq8", "pq-disk")
STORE_NAMES = ("faiss", "milvus")
SEARCH_MODES = ("auto", "hybrid", "mentions")
MENTION_SOURCES = ("gold", "detected")
ENGINES = ("local", "ray")
