"""Query -> ranked documents: pooling, fusion, the Retriever facade."""
