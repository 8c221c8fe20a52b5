"""The FastAPI application behind ``ner-retriever serve``: JSON API plus the web page at ``/``.

The routes are in :mod:`~ner_retriever.serve.routes`, the request checks in
:mod:`~ner_retriever.serve.validation`, the headers and slow-client deadlines in
:mod:`~ner_retriever.serve.http`, and the locking around the retriever in
:mod:`~ner_retriever.serve.service`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from ner_retriever import __version__
from ner_retriever.errors import ConfigError
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.serve import deletes, routes, searching
from ner_retriever.serve.http import SecurityHeaders
from ner_retriever.serve.schemas import add_documents_model
from ner_retriever.serve.service import SearchService
from ner_retriever.serve.settings import ServeSettings

DESCRIPTION = ("Zero-shot named entity retrieval: rank documents by how well their entity "
               "mentions match a free-text entity type.")


def create_app(retriever: Retriever, settings: ServeSettings | None = None,
               owns_retriever: bool = False) -> FastAPI:
    """Serve an open retriever. Writes need ``settings.write_token`` *and* a writable index."""
    settings = settings or ServeSettings()
    if settings.write_token is not None:
        if not retriever.index.writable:
            raise ConfigError("a write token was given but the index was opened read-only")
        retriever.detector  # noqa: B018 - built now: a missing detector fails at start, not on a POST
    service = SearchService(retriever, settings, owns_retriever)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    # /docs is served by routes.register_docs from local files; ReDoc would need a CDN
    app = FastAPI(title="ner-retriever", version=__version__, lifespan=lifespan,
                  description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:  # off unless asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    routes.register_error_handlers(app)
    package = resources.files("ner_retriever")
    routes.register_page(app, Path(str(package / "static")))
    routes.register_docs(app, Path(str(package / "serve" / "docs_assets")))  # vendored Swagger UI
    routes.register_service_routes(app, service)
    searching.register_search(app, service, settings)
    searching.register_entities(app, service, settings)
    routes.register_documents(app, service)
    deletes.register_deletes(app, service, settings)
    body_model = add_documents_model(settings)
    routes.register_writes(app, service, settings, body_model)
    routes.install_openapi(app, body_model)
    return app


def open_app(index_dir: str | Path, settings: ServeSettings | None = None,
             encoder: Any = None, precision: str | None = None) -> FastAPI:
    """Open the index (writable only when writes are enabled) and build the app around it;
    ``precision``: the query pass's (``Retriever.open``)."""
    settings = settings or ServeSettings()
    retriever = Retriever.open(index_dir, writable=settings.write_token is not None,
                               encoder=encoder, precision=precision)
    try:
        return create_app(retriever, settings, owns_retriever=True)
    except BaseException:
        retriever.close()
        raise
