"""HTTP search service and web page (``ner-retriever serve``).

>>> from ner_retriever.serve.app import open_app                    # doctest: +SKIP
>>> from ner_retriever.serve.settings import ServeSettings          # doctest: +SKIP
>>> app = open_app("my-index", ServeSettings(write_token=None))     # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP

``app`` builds the application, ``routes`` holds its endpoints, ``service`` the locking and
batching around the retriever, ``validation`` the request checks, ``http`` the security headers
and slow-client deadlines, ``embedder`` the batched, cached query embedding.
"""
