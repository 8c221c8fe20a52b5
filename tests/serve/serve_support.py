"""Helpers of the HTTP tests (fixtures are in conftest.py): the tiny corpus, the write
token, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ner_retriever.types import Document, Span

TINY_TOKEN = "tiny-token-0123456789abcdef"
TINY_AUTH = {"Authorization": f"Bearer {TINY_TOKEN}"}
START_TIMEOUT_S = 60

TINY_CORPUS = [
    Document("merkel", "Angela Merkel met Emmanuel Macron in Paris to discuss the budget.",
             {"source": "news", "year": 2019}),
    Document("danube", "The Danube flows through Vienna, Bratislava and Budapest.",
             {"source": "atlas", "year": 2001}),
    Document("toyota", "Toyota unveiled the new Corolla at the Tokyo Motor Show.",
             {"source": "news", "year": 2021}),
    Document("curie", "Marie Curie received the Nobel Prize in Physics in Paris.",
             {"source": "history", "year": 1903}),
    Document("lakers", "The Los Angeles Lakers beat the Boston Celtics in the NBA Finals.",
             {"source": "sport", "year": 2020}),
]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# The gold mentions of TINY_CORPUS (text, label) for the hybrid index (gold detector): the
# several-types, exhaustive and entity tests need fused scores, hence document vectors.
TINY_MENTIONS = {
    "merkel": [("Angela Merkel", "person"), ("Emmanuel Macron", "person"), ("Paris", "city")],
    "danube": [("Danube", "river"), ("Vienna", "city"), ("Bratislava", "city"),
               ("Budapest", "city")],
    "toyota": [("Toyota", "company"), ("Corolla", "car"), ("Tokyo", "city")],
    "curie": [("Marie Curie", "person"), ("Nobel Prize in Physics", "award"), ("Paris", "city")],
    "lakers": [("Los Angeles Lakers", "team"), ("Boston Celtics", "team"), ("NBA", "league")],
}


def with_gold_spans(doc: Document) -> Document:
    spans = []
    for text, label in TINY_MENTIONS[doc.id]:
        start = doc.text.index(text)
        spans.append(Span(start, start + len(text), label))
    return Document(doc.id, doc.text, doc.metadata, tuple(spans))
