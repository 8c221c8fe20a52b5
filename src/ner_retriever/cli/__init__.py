"""The ``ner-retriever`` command line."""
