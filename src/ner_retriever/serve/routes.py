"""The routes of the app: the page, the read API, ``POST /documents`` and the error handlers.

Each ``register_*`` function adds one group to an app, closing over its service and settings.
"""

# No "from __future__ import annotations": FastAPI must evaluate the route signatures, which
# refer to these functions' closures (the limits in ServeSettings).
import hmac
import sqlite3
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match, Route

from ner_retriever.errors import (
    ConfigError,
    CorpusError,
    DuplicateDocumentError,
    IndexStateError,
    NerRetrieverError,
    UnsupportedRequestError,
)
from ner_retriever.serve.schemas import (
    AddDocumentsBase,
    AddDocumentsResponse,
    DocumentOut,
    ErrorOut,
    HealthOut,
    StatsOut,
)
from ner_retriever.serve.service import SearchService
from ner_retriever.serve.settings import ServeSettings
from ner_retriever.serve.validation import (parse_json, public_errors, read_body, reject,
                                            to_documents, validation_message)

ERRORS = {400: {"model": ErrorOut, "description": "malformed request"},
          422: {"model": ErrorOut, "description": "invalid parameter or document"}}
WRITE_ERRORS = {**ERRORS,
                401: {"model": ErrorOut, "description": "missing or wrong token"},
                403: {"model": ErrorOut, "description": "writes are disabled"},
                409: {"model": ErrorOut, "description": "document id already indexed, or "
                                                         "repeated in the request"},
                413: {"model": ErrorOut, "description": "body too large"}}
BEARER = "bearer"  # the security scheme of writes in the OpenAPI schema
STATUS_OF_ERROR = {CorpusError: 422, ConfigError: 422, UnsupportedRequestError: 409,
                   IndexStateError: 503}


class _AnyText(Convertor):
    """Like starlette's ``path`` convertor, but across line breaks too (``.`` stops at a
    newline): every id a document can have stays addressable by ``/documents/{id}``."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return str(value)

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("anytext", _AnyText())

def _invalid(errors) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": validation_message(errors),
                                                  "errors": public_errors(errors)})


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path takes: starlette's 405 names only the first
    route's (``GET /documents/{id}``, not the ``DELETE`` beside it)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] in (
                Match.FULL, Match.PARTIAL):
            methods |= route.methods
    return ", ".join(sorted(methods))


def register_error_handlers(app: FastAPI) -> None:
    """Known errors as ``{"detail": ...}`` with a status that says whose fault it is."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors())

    @app.exception_handler(sqlite3.DatabaseError)
    async def damaged_catalog(_request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        # damage inside a catalog page that the structural check on open could not see
        return JSONResponse(status_code=503, content={
            "detail": f"index file is corrupt: catalog.sqlite: {exc}"})

    @app.exception_handler(NerRetrieverError)
    async def known_error(_request: Request, exc: NerRetrieverError) -> JSONResponse:
        if isinstance(exc, DuplicateDocumentError):
            return JSONResponse(status_code=409, content={"detail": (
                f"document id {exc.doc_id!r} is already in the index; send "
                '"if_exists": "skip" to keep it or "update" to replace it')})
        status = STATUS_OF_ERROR.get(type(exc), 400)
        return JSONResponse(status_code=status, content={"detail": str(exc)})


def register_page(app: FastAPI, static_dir: Path) -> None:
    """The search page at ``/`` and its assets under ``/static``."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir), name="static")


def register_docs(app: FastAPI, assets_dir: Path) -> None:
    """``/docs``: FastAPI's Swagger page with its script and styles served from the package's
    vendored Swagger UI (``assets_dir``, with its licence) under ``/docs-assets``, so the API
    docs work offline: FastAPI's default loads them from a CDN, and Swagger UI's default
    validator badge from validator.swagger.io."""
    assets = "/docs-assets"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title=f"{app.title} API",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    app.mount(assets, StaticFiles(directory=assets_dir), name="docs-assets")


def register_service_routes(app: FastAPI, service: SearchService) -> None:
    """``/health`` and ``/stats``."""

    @app.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict:
        """Liveness: the model is loaded and the index answers."""
        return {"status": "ok", "documents": await run_in_threadpool(service.count)}

    @app.get("/stats", response_model=StatsOut, tags=["service"])
    async def stats() -> dict:
        """What the index holds and how it was built, plus the server's limits and cache."""
        return await run_in_threadpool(service.stats)


def register_documents(app: FastAPI, service: SearchService) -> None:
    """``GET /documents/{id}``: any id, line breaks and slashes included."""

    @app.get("/documents/{doc_id:anytext}", response_model=DocumentOut,
             responses={404: {"model": ErrorOut, "description": "no such document"}},
             tags=["documents"])
    async def get_document(doc_id: Annotated[str, PathParam(description="document id")]) -> dict:
        """A document's text, metadata and detected mentions (character offsets)."""
        doc = await run_in_threadpool(service.document, doc_id)
        if doc is None:
            raise reject(404, f"no document with id {doc_id!r}")
        return doc


def _check_writer(request: Request, service: SearchService, settings: ServeSettings) -> None:
    """403 unless writes are enabled, 401 unless the bearer token matches (constant time)."""
    if not service.writes_enabled:
        raise reject(403, "writes are disabled: start the server with --write-token (or "
                          "NER_RETRIEVER_WRITE_TOKEN) to enable POST /documents")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = settings.write_token or ""
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")):
        raise reject(401, "missing or invalid bearer token",
                     headers={"WWW-Authenticate": 'Bearer realm="ner-retriever"'})


def register_writes(app: FastAPI, service: SearchService, settings: ServeSettings,
                    model: type[AddDocumentsBase]) -> None:
    """``POST /documents``: the body is read and checked here (size, deadline, strict JSON)
    rather than by FastAPI, so a client learns exactly what was wrong."""

    @app.post("/documents", status_code=201, response_model=AddDocumentsResponse,
              responses=WRITE_ERRORS,
              openapi_extra={"security": [{BEARER: []}], "requestBody": {
                  "required": True, "description": f"at most {settings.max_body_bytes} bytes "
                                                    "(413)",
                  "content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/AddDocumentsRequest"}}}}},
              tags=["documents"])
    async def add_documents(request: Request) -> dict:
        """Add documents to the live index (needs ``Authorization: Bearer <write token>``).

        The request is committed at once: searches see all of its documents or none."""
        _check_writer(request, service, settings)
        payload = parse_json(await read_body(request, settings.max_body_bytes,
                                             settings.body_timeout_s))
        try:
            body = model.model_validate(payload)
        except ValidationError as exc:
            return _invalid(exc.errors())
        docs = to_documents(body)
        return await run_in_threadpool(service.add, docs, body.if_exists)


def install_openapi(app: FastAPI, model: type[AddDocumentsBase]) -> None:
    """The schema of ``POST /documents``'s body, which the route reads itself, documented
    as if FastAPI had parsed it, and its bearer token."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            request_schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})[BEARER] = {
                "type": "http", "scheme": "bearer",
                "description": "the server's write token (--write-token)"}
            bodies = components.setdefault("schemas", {})
            bodies.update(request_schema.pop("$defs", {}))
            bodies["AddDocumentsRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
