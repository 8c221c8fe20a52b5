"""``serve``: the HTTP search service and web page over one index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ner_retriever.cli.common import err, friendly_errors, quiet_transformers

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@friendly_errors
def serve(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    write_token: Annotated[Optional[str], typer.Option(
        "--write-token", envvar="NER_RETRIEVER_WRITE_TOKEN", show_default=False,
        help="enable POST /documents for clients sending 'Authorization: Bearer <token>' "
             "(opens the index writable; prefer the environment variable)")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", help="allow browser pages from this origin (repeatable; off by default)")] = None,
    example: Annotated[Optional[list[str]], typer.Option(
        "--example", help="example query shown on the page (repeatable)")] = None,
    cache_size: Annotated[int, typer.Option(help="query vectors kept in the LRU cache")] = 4096,
    max_batch: Annotated[int, typer.Option(help="most queries embedded in one model call")] = 32,
    body_timeout: Annotated[float, typer.Option(
        help="seconds a client has to send a request body (then 408)")] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    precision: Annotated[Optional[str], typer.Option(help="query pass: fp32, fp16, int8, or auto (fp16 weights where a start-up probe measures them faster; the default)")] = None,
) -> None:
    """Serve an index over HTTP: JSON API (OpenAPI docs at /docs) and a search page at /."""
    import uvicorn

    from ner_retriever.serve.app import open_app
    from ner_retriever.serve.http import server_config
    from ner_retriever.serve.settings import DEFAULT_EXAMPLES, ServeSettings

    quiet_transformers()
    settings = ServeSettings(write_token=write_token or None,
                             cors_origins=tuple(cors_origin or ()),
                             examples=tuple(example) if example else DEFAULT_EXAMPLES,
                             cache_size=cache_size, max_batch=max_batch,
                             body_timeout_s=body_timeout)
    application = open_app(index_dir, settings, precision=precision)
    mode = "writes enabled with a bearer token" if settings.write_token else "read-only"
    if settings.write_token and host not in LOOPBACK_HOSTS:
        err.print(f"warning: listening on {host} without TLS: the write token crosses the "
                  "network in clear text; put a TLS proxy in front", soft_wrap=True)
    err.print(f"serving {index_dir} ({mode}) on http://{host}:{port}/ - API docs at /docs",
              soft_wrap=True, highlight=False)
    uvicorn.Server(server_config(application, settings, host, port, log_level)).run()
