"""HTTP hardening below the routes: security headers on every response, and uvicorn's h11
protocol with a deadline on request heads (slow clients), in the server's uvicorn config."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ner_retriever.serve.settings import ServeSettings

# The page and its assets are ours: allow nothing from elsewhere, and no inline script at all,
# so even an escaping bug could not run a document's markup.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


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
