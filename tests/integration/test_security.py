"""Security checks of the server and of the files it loads (docs/RELIABILITY.md, "Security").

Covered elsewhere and referenced, not repeated: bearer-token refusals and the 403 of a
read-only server, body-size limits (413 with and without Content-Length), query limits,
weak tokens refused, CORS off by default for GET and preflight (tests/serve/test_serve.py); document
markup rendered as inert text in a real browser (tests/serve/test_browser.py).

Here: the token check is constant-time and never echoes the token; request lines and headers
are bounded by the real HTTP server; no request path reaches the file system (raw, unnormalised
request targets against a live uvicorn on 127.0.0.1); weights and vectors load without pickle
execution; JSON responses stay JSON even for markup; CORS off for writes too; loopback by default.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.types import Document

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ner_retriever"
TOKEN = "security-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- fixtures: a small index served by a real uvicorn on loopback ---------------------------------
@pytest.fixture(scope="module")
def retriever(tmp_path_factory, minilm_tokenizer):
    import transformers as tf

    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.retrieve.retriever import Retriever

    torch.manual_seed(0)
    model = tf.LlamaModel(tf.LlamaConfig(
        vocab_size=len(minilm_tokenizer), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=512)).eval()
    encoder = TransformerEncoder(EncoderConfig(model="tiny-llama", block=1), model=model,
                                 tokenizer=minilm_tokenizer)
    path = tmp_path_factory.mktemp("sec") / "index"
    r = Retriever.create(path, encoder=encoder, detector="spacy-ents")
    r.add([Document("merkel", "Angela Merkel met Emmanuel Macron in Paris."),
           Document("xss", 'Senator Alice Brown wrote <script>alert(1)</script> in Ohio.')])
    yield r
    r.close()


@pytest.fixture(scope="module")
def app(retriever):
    from ner_retriever.serve.app import create_app
    from ner_retriever.serve.settings import ServeSettings

    return create_app(retriever, ServeSettings(write_token=TOKEN, max_body_bytes=64 * 1024))


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _running(config) -> Iterator[int]:
    """A uvicorn server for ``config`` in a background thread; yields its port."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield config.port
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def live(app):
    """The app behind a real uvicorn (h11) on 127.0.0.1, for raw request targets."""
    import uvicorn

    with _running(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="error",
                                 lifespan="off")) as port:
        yield port


@pytest.fixture(scope="module")
def strict(retriever):
    """The uvicorn configuration of ``ner-retriever serve`` (``server_config``), with deadlines
    of 1 s for a request body, a request head and an idle keep-alive connection."""
    from ner_retriever.serve.app import create_app
    from ner_retriever.serve.http import server_config
    from ner_retriever.serve.settings import ServeSettings

    settings = ServeSettings(write_token=TOKEN, body_timeout_s=1.0, header_timeout_s=1.0,
                             keep_alive_s=1)
    config = server_config(create_app(retriever, settings), settings, port=_free_port(),
                           log_level="error", lifespan="off")
    with _running(config) as port:
        yield port


def raw_request(port: int, target: str | bytes, extra: bytes = b"", method: bytes = b"GET"
                ) -> tuple[int, bytes]:
    """Send one request exactly as written (no client-side normalisation of ``..``)."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra
                         + b"Connection: close\r\n\r\n")
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server hung up on an oversized request: status 0 unless it answered
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


# -- the write token ------------------------------------------------------------------------------
def test_write_token_is_compared_in_constant_time():
    from ner_retriever.serve import routes

    source = inspect.getsource(routes)  # the routes, the write endpoint's check included
    assert "hmac.compare_digest(" in source
    # no ordinary comparison of anything token-like in any route
    assert not re.search(r"(token|credentials)\w*\s*[!=]=|[!=]=\s*\w*(token|credentials)",
                         source, flags=re.IGNORECASE)


@pytest.mark.slow
@pytest.mark.parametrize("header", [
    f"Bearer {TOKEN[:-1]}\u00ff",             # same length, last character differs (latin-1)
    f"Bearer {TOKEN}{TOKEN}",                 # the token twice
    f"Bearer {'x' * 8000}",                   # very long
    f"Bearer\t{TOKEN}",                       # tab instead of a space
    "Bearer " + TOKEN.replace("-", "\u2010"),  # look-alike hyphens (sent as UTF-8 bytes)
])
def test_near_miss_tokens_are_401_and_never_echoed(client, header):
    try:
        response = client.post("/documents", headers={"Authorization": header},
                               json={"documents": [{"id": "n", "text": "Rome."}]})
    except UnicodeEncodeError:
        response = client.post("/documents", headers={"Authorization": header.encode()},
                               json={"documents": [{"id": "n", "text": "Rome."}]})
    assert response.status_code == 401
    assert TOKEN not in response.text and TOKEN not in str(response.headers)
    assert client.get("/documents/n").status_code == 404


@pytest.mark.slow
def test_the_token_is_not_disclosed_anywhere(client):
    for path in ("/stats", "/health", "/openapi.json", "/", "/static/app.js"):
        assert TOKEN not in client.get(path).text, path


# -- limits of the real HTTP server ----------------------------------------------------------------
@pytest.mark.slow
def test_oversized_request_lines_and_headers_are_refused_by_the_server(live):
    status, _ = raw_request(live, "/search?q=" + "a" * 200_000)
    assert 400 <= status < 500 or status == 0  # refused (or connection closed), never served
    status, _ = raw_request(live, "/health", extra=b"X-Big: " + b"b" * 200_000 + b"\r\n")
    assert 400 <= status < 500 or status == 0
    status, _ = raw_request(live, "/health", extra=b"".join(
        b"X-H%d: v\r\n" % i for i in range(20_000)))  # 240 kB of small headers
    assert 400 <= status < 500 or status == 0
    # and the server is still healthy afterwards
    status, body = raw_request(live, "/health")
    assert status == 200 and b'"status":"ok"' in body


@pytest.mark.slow
def test_query_and_body_limits_hold_on_the_wire(live):
    status, body = raw_request(live, "/search?q=" + "a" * 257)
    assert status == 422 and b"at most 256 characters" in body
    status, body = raw_request(live, "/search?q=city&k=100000")
    assert status == 422
    big = b'{"documents": [{"id": "big", "text": "' + b"a" * 70_000 + b'"}]}'
    status, body = raw_request(
        live, "/documents", method=b"POST",
        extra=b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json"
              b"\r\nContent-Length: " + str(len(big)).encode() + b"\r\n")
    assert status == 413


def _slow_client(port: int, first: bytes, drip: bytes, every: float = 0.2,
                 give_up: float = 15.0) -> tuple[float, bytes, bool]:
    """Send ``first``, then one byte of ``drip`` every ``every`` seconds (slowloris) until the
    server hangs up; returns (seconds until then, what the server sent, whether it hung up)."""
    start, data = time.monotonic(), b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        sock.settimeout(every)
        for i in range(int(give_up / every)):
            try:
                if i < len(drip):
                    sock.sendall(drip[i: i + 1])
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, data, True
            if not chunk:
                return time.monotonic() - start, data, True
            data += chunk
    return time.monotonic() - start, data, False


@pytest.mark.slow
def test_slow_clients_get_408_and_hang_up_while_others_are_served(strict):
    """Slowloris against ``ner-retriever serve``'s own uvicorn setup: a body, a request head,
    or nothing at all, trickled in a byte every 0.2 s, each get a 408 and a closed connection
    at the 1 s deadline, while a normal client is served meanwhile; an idle keep-alive
    connection is closed too."""
    body_head = (b"POST /documents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " +
                 AUTH["Authorization"].encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000\r\n\r\n")
    cases = {"body": (body_head, b'{"documents": [{"id": "slow", "text": "' + b"x" * 200),
             "head": (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: " + b"a" * 200),
             "nothing": (b"", b"")}
    results: dict[str, tuple[float, bytes, bool]] = {}
    threads = [threading.Thread(target=lambda n=name, c=case: results.__setitem__(
        n, _slow_client(strict, *c))) for name, case in cases.items()]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{strict}", timeout=30) as http:
        assert http.get("/health").status_code == 200  # served while the slow ones wait
        added = http.post("/documents", headers=AUTH, json={"documents": [
            {"id": "fast", "text": "Angela Merkel visited Rome."}]})
        assert added.status_code == 201, added.text
    for thread in threads:
        thread.join(timeout=30)
    for name, (seconds, data, hung_up) in results.items():
        assert hung_up and data.startswith(b"HTTP/1.1 408 "), (name, data)
        assert b"not received within 1 s" in data, (name, data)
        assert 0.9 < seconds < 6, (name, seconds)
    assert b"request body" in results["body"][1] and b"headers" in results["head"][1]
    # keep-alive: after a response, an idle connection is closed after keep_alive_s
    with socket.create_connection(("127.0.0.1", strict), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        start, data = time.monotonic(), b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and time.monotonic() - start < 6


# -- no request path reaches the file system ------------------------------------------------------
def _traversal_targets(index_path: Path) -> list[str]:
    config = str(index_path / "config.json").lstrip("/")
    catalog = str(index_path / "catalog.sqlite").lstrip("/")
    up = "../" * 30
    return [
        "/static/../../../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/%252e%252e/%252e%252e/etc/passwd",
        "/static/..%5C..%5C..%5C..%5Cetc%5Cpasswd",
        "/static/....//....//....//etc/passwd",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/static/app.js/../../../../../../etc/passwd",
        "/static/app.js%00.png",
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/documents/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/documents/../../../../etc/passwd",
        f"/static/{up}{config}",
        f"/static/{up}{catalog}",
        f"/static/{'..%2F' * 30}{config}",
        f"/documents/{up}{config}",
        "/static/../../../../../../proc/self/environ",
        "/docs/../../../../etc/passwd",
        "/docs-assets/../../../../../../etc/passwd",
        "/docs-assets/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/docs-assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/docs-assets/../../routes.py",
        "/docs-assets/..%2F..%2Fapp.py",
        "/docs-assets/..%2Fschemas.py",
        "/docs-assets/%2e%2e/settings.py",
        f"/docs-assets/{up}{config}",
    ]


@pytest.mark.slow
def test_no_request_path_reaches_the_file_system(live, retriever):
    config_text = (retriever.index.path / "config.json").read_text()
    for target in _traversal_targets(retriever.index.path):
        status, data = raw_request(live, target)
        assert status != 0, target
        assert b"root:x:0:0" not in data, target
        assert b"SQLite format 3" not in data, target
        assert b'"format_version"' not in data and config_text.encode() not in data, target
        assert b"PATH=" not in data, target
        if status == 200:  # only a JSON 404-like answer or the page itself may come back
            assert target.startswith(("/documents/", "/docs")) or b"<!doctype html>" in \
                data.lower(), (target, data[:200])


@pytest.mark.slow  # the live server fixture loads the real default models
def test_docs_assets_refuses_path_traversal(live):
    """``/docs-assets`` serves its own files and nothing above them: not the package's code
    next to it, not the index, not the system's files."""
    assert raw_request(live, "/docs-assets/swagger-ui.css")[0] == 200
    for target in ["/docs-assets/../app.py", "/docs-assets/../../serve/routes.py",
                   "/docs-assets/..%2Froutes.py", "/docs-assets/%2e%2e/settings.py",
                   "/docs-assets/%2e%2e%2f%2e%2e%2f__init__.py", "/docs-assets/..%5Croutes.py",
                   "/docs-assets/../../../../../../etc/passwd", "/docs-assets//etc/passwd",
                   "/docs-assets/%2Fetc%2Fpasswd", "/docs-assets/swagger-ui.css/../../app.py"]:
        status, data = raw_request(live, target)
        assert status in (400, 404), (target, status, data[:200])
        assert b"def create_app" not in data and b"root:x:0:0" not in data, target


# The only folders the server may serve files from: the page's assets and the vendored
# Swagger UI of /docs, both inside the package.
SERVED_FOLDERS = {"/static": SRC / "static", "/docs-assets": SRC / "serve" / "docs_assets"}


def check_served_folders(app) -> None:
    """Each mount is one of SERVED_FOLDERS, serving exactly that package folder (no symlinks
    followed, no package=), and every route's path is known."""
    from fastapi.routing import APIRoute
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    mounts = [r for r in app.routes if isinstance(r, Mount)]
    assert sorted(m.path for m in mounts) == sorted(SERVED_FOLDERS)
    for mount in mounts:
        static = mount.app
        assert isinstance(static, StaticFiles), mount.path
        folder = SERVED_FOLDERS[mount.path].resolve()
        assert folder.is_dir() and folder.is_relative_to(SRC.resolve()), folder
        assert [Path(d).resolve() for d in static.all_directories] == [folder], mount.path
        assert static.follow_symlink is False, mount.path
    api = {r.path for r in app.routes if isinstance(r, APIRoute)}
    assert api == {"/", "/docs", "/health", "/stats", "/search", "/entities",
                   "/documents/{doc_id:anytext}",
                   "/documents"}  # none of them opens a file named by the request


@pytest.mark.slow
def test_only_the_package_static_folder_is_served(app):
    check_served_folders(app)


def test_a_folder_outside_the_package_fails_the_served_folders_check(app, tmp_path):
    """The check above is not vacuous: another mount, or a known mount moved outside the
    package, fails it."""
    from fastapi import FastAPI
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    def app_with(mounts: dict[str, Path]) -> FastAPI:
        other = FastAPI(docs_url=None, redoc_url=None)
        other.router.routes[:] = [r for r in app.routes if not isinstance(r, Mount)]
        for path, folder in mounts.items():
            other.mount(path, StaticFiles(directory=folder))
        return other

    check_served_folders(app_with(SERVED_FOLDERS))  # the same mounts pass
    outside = tmp_path / "assets"
    outside.mkdir()
    for mounts in ({**SERVED_FOLDERS, "/files": outside},
                   {**SERVED_FOLDERS, "/docs-assets": outside},
                   {**SERVED_FOLDERS, "/static": SRC},  # the whole package, config included
                   {"/static": SERVED_FOLDERS["/static"]}):
        with pytest.raises(AssertionError):
            check_served_folders(app_with(mounts))


# -- no pickle execution --------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_head_weights_with_a_pickle_payload_are_refused(tmp_path):
    from ner_retriever.models.head import HeadConfig, ProjectionHead

    marker = tmp_path / "pwned"
    evil = tmp_path / "head.pth"
    torch.save({"net.0.weight": _Payload(marker), "net.3.weight": torch.zeros(2, 2)}, evil)
    with pytest.raises(ConfigError, match="weights-only"):
        ProjectionHead.load(evil)
    assert not marker.exists()
    # a plain state dict (the paper's release format) still loads, without pickle code
    good = ProjectionHead(HeadConfig(input_dim=8, hidden_dim=6, output_dim=4))
    torch.save(good.state_dict(), tmp_path / "good.pth")
    loaded = ProjectionHead.load(tmp_path / "good.pth")
    assert loaded.checksum() == good.checksum()
    # safetensors with a damaged header: a clear error
    folder = good.save(tmp_path / "saved")
    weights = folder / "head.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    with pytest.raises(ConfigError, match="cannot read"):
        ProjectionHead.load(folder)


def test_a_vector_segment_with_a_pickle_payload_is_refused(tmp_path):
    """Even a segment whose checksum was forged in the catalog is read without pickle."""
    from ner_retriever.indexes.index import CATALOG_NAME, Index, IndexConfig
    from ner_retriever.indexes.base import file_sha256
    from ner_retriever.types import Mention

    path = tmp_path / "idx"
    config = IndexConfig(encoder={"model": "synthetic"}, raw_dim=4, dim=4, head=None,
                         detector={"name": "gold"})
    with Index.create(path, config) as index:
        index.add([Document("a", "Paris.")], [[Mention("a", 0, 5, "Paris")]],
                  [np.ones((1, 4), np.float32)])
        (segment,) = index.segments()
    marker = tmp_path / "pwned"
    seg_path = path / "vectors" / segment.name
    np.save(seg_path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    db = sqlite3.connect(path / CATALOG_NAME)
    with db:
        db.execute("UPDATE segments SET sha256 = ?", (file_sha256(seg_path),))
    db.close()
    with pytest.raises(IndexStateError, match=segment.name):
        Index.open(path)
    assert not marker.exists()


def test_no_unsafe_deserialisation_in_the_package():
    """Weights: safetensors or torch.load(weights_only=True); arrays: allow_pickle=False;
    models: no remote code. ``pickle`` appears only where Ray actors hand this process's own
    in-memory batches back (scale/ray.py), never on a file or a request."""
    offenders = []
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            checks = [
                "torch.load(" in code and "weights_only=True" not in code,
                "allow_pickle=True" in code,
                "trust_remote_code=True" in code,
                re.search(r"\byaml\.load\(|\bmarshal\.loads?\(|\bshelve\.", code) is not None,
                re.search(r"(?<![\w.])eval\(|(?<![\w.])exec\(", code) is not None,
                re.search(r"\bpickle\.loads?\(", code) is not None
                and file.relative_to(SRC).as_posix() != "scale/ray.py",
            ]
            if any(checks):
                offenders.append(f"{file.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


# -- what the browser gets ------------------------------------------------------------------------
@pytest.mark.slow
def test_markup_in_documents_and_ids_always_comes_back_as_json(client):
    """The page renders text with textContent only (test_serve, test_browser); the API itself
    never answers markup as HTML, whatever the document or the id holds."""
    doc = client.get("/documents/xss")
    assert doc.headers["content-type"] == "application/json"
    assert doc.headers["x-content-type-options"] == "nosniff"
    assert "<script>alert(1)</script>" in doc.json()["text"]
    for path in ("/documents/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                 "/search?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&k=0",
                 "/search?q=%3Cb%3Ebold%3C%2Fb%3E"):
        response = client.get(path)
        assert response.headers["content-type"] == "application/json", path
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.slow
def test_cors_is_off_for_writes_and_the_server_listens_on_loopback_by_default(client):
    from ner_retriever.cli.serve import serve
    from ner_retriever.serve.settings import ServeSettings

    assert tuple(ServeSettings().cors_origins) == ()
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    preflight = client.options("/documents", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert "access-control-allow-origin" not in preflight.headers
    post = client.post("/documents", headers={**AUTH, "Origin": "http://evil.example"},
                       json={"documents": [{"id": "cors", "text": "Oslo."}]})
    assert "access-control-allow-origin" not in post.headers
