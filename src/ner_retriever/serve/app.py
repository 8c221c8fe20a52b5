"""The FastAPI application behind ``ner-retriever serve``: JSON API plus the web page at ``/``.

Consistency: the index commits a batch (SQLite rows, vector segment, row map) while holding
its mutex, on the same SQLite connection the readers use. Every read here (ranking plus the
document rows it needs, a document with its mentions, the counts) therefore runs under that
mutex too, so a reader sees a batch either entirely or not at all, never a document without
its mentions.
"""

# No "from __future__ import annotations": FastAPI must evaluate the route signatures, which
# refer to this module's closures (the limits in ServeSettings).
import asyncio
import hmac
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ner_retriever import __version__
from ner_retriever.errors import (
    ConfigError,
    CorpusError,
    DuplicateDocumentError,
    IndexStateError,
    NerRetrieverError,
)
from ner_retriever.retrieve.retriever import Retriever, index_info
from ner_retriever.retrieve.fusion import context_window
from ner_retriever.retrieve.fusion import snippet as make_snippet
from ner_retriever.serve.embedder import LockedEncoder, QueryEmbedder
from ner_retriever.serve.schemas import (
    AddDocumentsRequest,
    AddDocumentsResponse,
    DocumentOut,
    ErrorOut,
    HealthOut,
    SearchOut,
    StatsOut,
)
from ner_retriever.types import Document

DEFAULT_EXAMPLES = ("politician", "river", "car model", "sports team", "award", "city",
                    "musician", "company")
MIN_TOKEN_CHARS = 16
CONTEXT_CHARS = 220

# The page and its assets are ours: allow nothing from elsewhere, and no inline script at all,
# so even an escaping bug could not run a document's markup.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


class _AnyText(Convertor):
    """Like starlette's ``path`` convertor, but across line breaks too (``.`` stops at a
    newline): every id a document can have stays addressable by ``/documents/{id}``."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return str(value)

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("anytext", _AnyText())


@dataclass
class ServeSettings:
    """Limits and switches of one server. ``write_token=None`` makes the index read-only."""

    write_token: str | None = None
    cors_origins: Sequence[str] = ()
    examples: Sequence[str] = DEFAULT_EXAMPLES
    max_query_chars: int = 256
    max_k: int = 100
    max_offset: int = 1000
    max_per_doc: int = 20
    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 1000
    max_text_chars: int = 200_000
    max_id_chars: int = 512
    cache_size: int = 4096
    max_batch: int = 32
    max_wait_ms: float = 2.0
    # Slow clients (slowloris): deadlines on receiving a request body and a request's line and
    # headers (408), and on an idle keep-alive connection (closed). See ``server_config``.
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        if self.write_token is not None:
            token = self.write_token
            if len(token) < MIN_TOKEN_CHARS or token != token.strip() or not token.isprintable():
                raise ConfigError(
                    f"the write token must be at least {MIN_TOKEN_CHARS} printable characters "
                    "without surrounding spaces; generate one with: python -c "
                    "\"import secrets; print(secrets.token_urlsafe(32))\"")


class SearchService:
    """The retriever plus what the server adds: batching, caching, locking."""

    def __init__(self, retriever: Retriever, settings: ServeSettings, owns_retriever: bool = False):
        self.retriever = retriever
        self.settings = settings
        self.owns_retriever = owns_retriever
        if not isinstance(retriever.encoder, LockedEncoder):
            retriever.encoder = LockedEncoder(retriever.encoder)
        self.embedder = QueryEmbedder(retriever.embed_search_queries, cache_size=settings.cache_size,
                                      max_batch=settings.max_batch,
                                      max_wait=settings.max_wait_ms / 1000)
        self._write_lock = threading.Lock()

    @property
    def writes_enabled(self) -> bool:
        return self.settings.write_token is not None and self.retriever.index.writable

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the index mutex: a concurrent commit is then seen whole or not at all."""
        with self.retriever.index.lock:
            yield

    def close(self) -> None:
        self.embedder.close()
        if self.owns_retriever:
            self.retriever.close()

    # -- reads ---------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, offset: int, per_doc: int,
               mode: str = "auto") -> tuple[list, bool]:
        index = self.retriever.index
        if mode == "mentions":  # the cached row also holds the dense part: drop it
            vector = vector[:index.config.dim]
        with self.reading():
            ranked = self.retriever.search_vector(vector, k=offset + k + 1, per_doc=per_doc)
            page = ranked[offset: offset + k]
            docs = {r.doc_id: index.get_document(r.doc_id) for r in page}
        results = []
        for rank, r in enumerate(page, offset + 1):
            text = docs[r.doc_id].text
            # a hybrid result can rank on its document vector alone: no mention to centre on
            start, end = (r.mentions[0].start, r.mentions[0].end) if r.mentions else (0, 0)
            lo, hi = context_window(text, start, end, CONTEXT_CHARS)
            results.append({
                "rank": rank, "doc_id": r.doc_id, "score": r.score,
                "mentions": [{"start": m.start, "end": m.end, "text": m.text, "score": m.score}
                             for m in r.mentions],
                "snippet": make_snippet(text, start, end),
                "context": {"start": lo, "end": hi, "text": text[lo:hi],
                            "doc_length": len(text)},
            })
        return results, len(ranked) > offset + k

    def document(self, doc_id: str) -> dict | None:
        index = self.retriever.index
        with self.reading():
            doc = index.get_document(doc_id)
            if doc is None:
                return None
            mentions = index.mentions_of(doc_id)
        return {"id": doc.id, "text": doc.text, "metadata": doc.metadata,
                "mentions": [{"start": m.start, "end": m.end, "text": m.text, "label": m.label}
                             for m in mentions]}

    def count(self) -> int:
        with self.reading():
            return len(self.retriever.index)

    def stats(self) -> dict:
        with self.reading():
            info = index_info(self.retriever.index)
        for private in ("path", "config"):  # no file-system layout for anonymous clients
            info.pop(private, None)
        info["server"] = {"version": __version__, "writes_enabled": self.writes_enabled,
                          "examples": list(self.settings.examples),
                          "limits": {"max_k": self.settings.max_k,
                                     "max_offset": self.settings.max_offset,
                                     "max_query_chars": self.settings.max_query_chars,
                                     "max_documents": self.settings.max_documents,
                                     "max_body_bytes": self.settings.max_body_bytes},
                          "query_cache": self.embedder.stats()}
        return info

    # -- writes --------------------------------------------------------------------------------
    def add(self, docs: list[Document], if_exists: str) -> dict:
        with self._write_lock:  # one add at a time; searches go on (model shared per turn)
            stats = self.retriever.add(docs, if_exists=if_exists, commit_every=max(1, len(docs)))
            total = self.count()
        return {"added": stats.documents, "skipped": stats.skipped, "mentions": stats.mentions,
                "seconds": round(stats.seconds, 3), "documents": total}


# -- helpers for the routes -----------------------------------------------------------------------
def _where(loc: Sequence[Any]) -> str:
    loc = list(loc)
    if loc and loc[0] in ("query", "path", "header"):
        return f"{loc[0]} parameter {'.'.join(str(p) for p in loc[1:])!r}"
    if loc and loc[0] == "body":
        loc = loc[1:]
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _validation_message(errors: Sequence[dict]) -> str:
    parts = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def _public_errors(errors: Sequence[dict]) -> list[dict]:
    """Validation errors without the offending input (may be large) or non-JSON context."""
    return [{"loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors[:20]]


def _reject(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes, received within ``timeout`` seconds: a client that
    sends it slowly on purpose would otherwise hold a connection (and the write path) forever."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _reject(413, f"request body is larger than {limit} bytes; send fewer "
                                   "documents per request")
        except ValueError:
            raise _reject(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _reject(413, f"request body is larger than {limit} bytes; send fewer "
                                       "documents per request")
                chunks.append(chunk)
    except TimeoutError:
        raise _reject(408, f"request body not received within {timeout:g} s",
                      headers={"Connection": "close"}) from None
    return b"".join(chunks)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


# A JSON escape of a UTF-16 surrogate: unpaired, it decodes to a lone surrogate that SQLite and
# the tokenizers cannot encode, so such a body is refused up front.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _reject(400, 'request body is empty; expected JSON like {"documents": '
                           '[{"id": "1", "text": "..."}]}')
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                             parse_float=_finite_float)
        if _SURROGATE_ESCAPE.search(body) is not None:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return payload
    except UnicodeEncodeError:
        raise _reject(400, "request body is not valid Unicode: an unpaired surrogate escape "
                           "(\\ud800-\\udfff)") from None
    except UnicodeDecodeError as exc:
        raise _reject(400, f"request body is not valid UTF-8 ({exc.reason} at byte "
                           f"{exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _reject(400, f"malformed JSON body: {exc.msg} (line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except ValueError as exc:
        raise _reject(400, f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise _reject(400, "malformed JSON body: nested too deeply") from None


def _documents(request: AddDocumentsRequest, settings: ServeSettings) -> list[Document]:
    """The CLI's corpus rules (string or integer id, non-empty text, no repeated id)."""
    items = request.documents
    if not items:
        raise _reject(422, "invalid request: documents: give at least one document")
    if len(items) > settings.max_documents:
        raise _reject(422, f"invalid request: documents: at most {settings.max_documents} "
                           f"documents per request, got {len(items)}")
    docs, seen = [], {}
    for i, item in enumerate(items):
        doc_id = str(item.id)
        where = f"documents[{i}]"
        if not doc_id.strip():
            raise _reject(422, f"invalid request: {where}.id is empty")
        if len(doc_id) > settings.max_id_chars:
            raise _reject(422, f"invalid request: {where}.id is longer than "
                               f"{settings.max_id_chars} characters")
        if not item.text.strip():
            raise _reject(422, f"invalid request: {where}: document {doc_id!r} has empty text")
        if len(item.text) > settings.max_text_chars:
            raise _reject(422, f"invalid request: {where}.text is longer than "
                               f"{settings.max_text_chars} characters")
        if doc_id in seen:
            raise _reject(422, f"invalid request: {where}: document id {doc_id!r} repeats "
                               f"documents[{seen[doc_id]}]")
        seen[doc_id] = i
        metadata = {**item.metadata, **(item.model_extra or {})}
        docs.append(Document(id=doc_id, text=item.text, metadata=metadata, source=where))
    return docs


class SecurityHeaders:
    """``nosniff`` everywhere; the strict CSP on the page and its assets (``/docs`` keeps
    FastAPI's own Swagger page, which needs its inline script)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if page:
                    headers.setdefault("Content-Security-Policy", PAGE_CSP)
                    headers.setdefault("X-Frame-Options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)


ERRORS = {400: {"model": ErrorOut, "description": "malformed request"},
          422: {"model": ErrorOut, "description": "invalid parameter or document"}}


def create_app(retriever: Retriever, settings: ServeSettings | None = None,
               owns_retriever: bool = False) -> FastAPI:
    """Serve an open retriever. Writes need ``settings.write_token`` *and* a writable index."""
    settings = settings or ServeSettings()
    if settings.write_token is not None:
        if not retriever.index.writable:
            raise ConfigError("a write token was given but the index was opened read-only")
        retriever.detector  # noqa: B018 - built now: a missing detector fails at start, not on a POST
    service = SearchService(retriever, settings, owns_retriever)
    static_dir = Path(str(resources.files("ner_retriever") / "static"))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(title="ner-retriever", version=__version__, lifespan=lifespan,
                  description="Zero-shot named entity retrieval: rank documents by how well "
                              "their entity mentions match a free-text entity type.")
    app.state.service = service
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:  # off unless asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse(status_code=422, content={"detail": _validation_message(errors),
                                                      "errors": _public_errors(errors)})

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
        status = {CorpusError: 422, ConfigError: 422, IndexStateError: 503}.get(type(exc), 400)
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    # -- page ----------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    # -- API -----------------------------------------------------------------------------------
    @app.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict:
        """Liveness: the model is loaded and the index answers."""
        return {"status": "ok", "documents": await run_in_threadpool(service.count)}

    @app.get("/stats", response_model=StatsOut, tags=["service"])
    async def stats() -> dict:
        """What the index holds and how it was built, plus the server's limits and cache."""
        return await run_in_threadpool(service.stats)

    @app.get("/search", response_model=SearchOut, responses=ERRORS, tags=["search"])
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=settings.max_query_chars,
                                description='an entity type in your words, e.g. "politician"')],
        k: Annotated[int, Query(ge=1, le=settings.max_k, description="results per page")] = 10,
        offset: Annotated[int, Query(ge=0, le=settings.max_offset,
                                     description="skip this many results (for 'more')")] = 0,
        per_doc: Annotated[int, Query(ge=1, le=settings.max_per_doc,
                                      description="matching mentions shown per document")] = 3,
        mode: Annotated[Literal["auto", "mentions"], Query(
            description="auto: hybrid on a hybrid index (mention and document scores fused), "
                        "else best mention; mentions: best-mention cosine only")] = "auto",
    ) -> dict:
        """Rank documents by their mentions (fused with a document score on a hybrid index);
        mentions carry document offsets."""
        query = q.strip()
        if not query:
            raise _reject(422, "invalid request: query parameter 'q': query is empty")
        started = time.perf_counter()
        future, cached = service.embedder.submit(query)
        # shielded: a client hanging up must not cancel a vector other requests may share
        vector = await asyncio.shield(asyncio.wrap_future(future))
        results, has_more = await run_in_threadpool(service.search, vector, k, offset, per_doc,
                                                    mode)
        return {"query": query, "k": k, "offset": offset, "has_more": has_more,
                "cached": cached, "took_ms": round((time.perf_counter() - started) * 1000, 2),
                "results": results}

    @app.get("/documents/{doc_id:anytext}", response_model=DocumentOut,
             responses={404: {"model": ErrorOut, "description": "no such document"}},
             tags=["documents"])
    async def get_document(doc_id: Annotated[str, PathParam(description="document id")]) -> dict:
        """A document's text, metadata and detected mentions (character offsets)."""
        doc = await run_in_threadpool(service.document, doc_id)
        if doc is None:
            raise _reject(404, f"no document with id {doc_id!r}")
        return doc

    @app.post("/documents", status_code=201, response_model=AddDocumentsResponse,
              responses={**ERRORS,
                         401: {"model": ErrorOut, "description": "missing or wrong token"},
                         403: {"model": ErrorOut, "description": "writes are disabled"},
                         409: {"model": ErrorOut, "description": "document id already indexed"},
                         413: {"model": ErrorOut, "description": "body too large"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/AddDocumentsRequest"}}}}},
              tags=["documents"])
    async def add_documents(request: Request) -> dict:
        """Add documents to the live index (needs ``Authorization: Bearer <write token>``).

        The request is committed at once: searches see all of its documents or none."""
        if not service.writes_enabled:
            raise _reject(403, "writes are disabled: start the server with --write-token (or "
                               "NER_RETRIEVER_WRITE_TOKEN) to enable POST /documents")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = settings.write_token or ""
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")):
            raise _reject(401, "missing or invalid bearer token",
                          headers={"WWW-Authenticate": 'Bearer realm="ner-retriever"'})
        payload = _parse_json(await _read_body(request, settings.max_body_bytes,
                                               settings.body_timeout_s))
        try:
            body = AddDocumentsRequest.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors()
            return JSONResponse(status_code=422, content={
                "detail": _validation_message(errors), "errors": _public_errors(errors)})
        docs = _documents(body, settings)
        return await run_in_threadpool(service.add, docs, body.if_exists)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            request_schema = AddDocumentsRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schema.pop("$defs", {}))
            components["AddDocumentsRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


class HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers.

    uvicorn closes a keep-alive connection left idle after a response, but waits without limit
    for a request to complete its headers (or for a new connection to send anything): a client
    that sends them a byte at a time keeps its connection open for as long as it likes. Past
    ``header_timeout`` seconds without a complete request head, the server answers 408 and
    closes the connection."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        # h11 leaves IDLE only once a request's line and headers are complete
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        body = json.dumps({"detail": f"request headers not received within "
                                     f"{self.header_timeout:g} s"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json"
                             b"\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
        self.transport.close()


def server_config(app: FastAPI, settings: ServeSettings, host: str = "127.0.0.1",
                  port: int = 8000, log_level: str = "info", **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of ``ner-retriever serve``: one worker, h11 with the header
    deadline above, idle keep-alive connections closed after ``settings.keep_alive_s``."""
    protocol = type("HeaderDeadlineH11", (HeaderDeadlineH11,),
                    {"header_timeout": settings.header_timeout_s})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1,
                          http=protocol, timeout_keep_alive=settings.keep_alive_s, **options)


def open_app(index_dir: str | Path, settings: ServeSettings | None = None,
             encoder: Any = None) -> FastAPI:
    """Open the index (writable only when writes are enabled) and build the app around it."""
    settings = settings or ServeSettings()
    retriever = Retriever.open(index_dir, writable=settings.write_token is not None,
                               encoder=encoder)
    try:
        return create_app(retriever, settings, owns_retriever=True)
    except BaseException:
        retriever.close()
        raise
