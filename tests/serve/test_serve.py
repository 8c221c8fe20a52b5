"""The HTTP service (`ner-retriever serve`) on a real small index with the real SmolLM2 model.

One index is built per session; read tests share a read-only app on it, write tests get their
own copy opened writable. Nothing is mocked: queries go through the model, documents through
spaCy, the vectors through FAISS.
"""

from __future__ import annotations

import json
import re
import copy
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.retrieve.snippets import context_window
from ner_retriever.serve.app import create_app, open_app
from ner_retriever.serve.embedder import LockedEncoder, LRUCache, QueryEmbedder
from ner_retriever.serve.settings import ServeSettings
from ner_retriever.types import Document

pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parents[2] / "src" / "ner_retriever" / "static"
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CORPUS = [
    Document("merkel", "Angela Merkel met Emmanuel Macron in Paris to discuss the budget.",
             {"source": "news"}),
    Document("danube", "The Danube flows through Vienna, Bratislava and Budapest before "
                       "reaching the Black Sea."),
    Document("toyota", "Toyota unveiled the new Corolla at the Tokyo Motor Show."),
    Document("curie", "Marie Curie received the Nobel Prize in Physics in 1903."),
    Document("lakers", "The Los Angeles Lakers beat the Boston Celtics in the NBA Finals."),
    Document("beatles", "John Lennon and Paul McCartney founded The Beatles in Liverpool."),
    Document("amazon", "Amazon opened a new office in Seattle, led by Andy Jassy."),
    Document("everest", "Edmund Hillary and Tenzing Norgay climbed Mount Everest in 1953."),
    # an id that needs URL escaping, and a character outside the BMP before the mentions
    Document("news/2024 01", "Reporters \U0001F30D in Berlin asked Olaf Scholz about Volkswagen."),
    # untrusted markup: must come back verbatim and never run in the page
    Document("xss", 'Senator Alice Brown wrote <script>window.__pwned = 1</script> and '
                    '<img src=x onerror="window.__pwned = 2"> in Ohio.'),
]
ALL_IDS = {d.id for d in CORPUS}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict:
    """The index on disk plus the loaded encoder and detector, shared by every app."""
    path = tmp_path_factory.mktemp("serve") / "index"
    retriever = Retriever.create(path, detector="spacy")
    retriever.add(CORPUS)
    retriever.close()
    return {"path": path, "encoder": retriever.encoder, "detector": retriever.detector}


def _open(built: dict, path: Path, writable: bool) -> Retriever:
    retriever = Retriever.open(path, writable=writable, encoder=built["encoder"])
    retriever.detector = built["detector"]  # same settings; spaCy loaded once per session
    return retriever


@pytest.fixture(scope="session")
def client(built) -> Iterator[TestClient]:
    app = create_app(_open(built, built["path"], writable=False), owns_retriever=True)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture()
def writer(built, tmp_path) -> Iterator[TestClient]:
    """A writable copy of the index, served with a token and small request limits."""
    path = tmp_path / "index"
    shutil.copytree(built["path"], path, ignore=shutil.ignore_patterns("write.lock"))
    settings = ServeSettings(write_token=TOKEN, max_body_bytes=64 * 1024, max_documents=20)
    app = create_app(_open(built, path, writable=True), settings, owns_retriever=True)
    with TestClient(app) as test_client:
        yield test_client


def search(client: TestClient, q: str, **params) -> dict:
    response = client.get("/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


# -- read endpoints ----------------------------------------------------------------------------
def test_health(client):
    assert client.get("/health").json() == {"status": "ok", "documents": len(CORPUS)}


def test_stats_describe_the_index(client):
    stats = client.get("/stats").json()
    assert stats["documents"] == len(CORPUS)
    assert stats["mentions"] >= len(CORPUS)
    assert stats["model"] == "gemma3-270m"
    assert isinstance(stats["block"], int) and stats["component"] == "value"
    assert stats["head"]["model"] == "gemma3-270m"  # the shipped trained head
    assert stats["detector"]["name"] == "spacy"
    assert stats["size_bytes"] > 0
    assert "path" not in stats and "config" not in stats  # no file-system layout
    server = stats["server"]
    assert server["writes_enabled"] is False
    assert "politician" in server["examples"]
    assert {"hits", "misses", "batches"} <= set(server["query_cache"])


def test_search_returns_ranked_documents_with_mentions_and_context(client):
    data = search(client, "politician", k=10)
    assert data["query"] == "politician" and data["k"] == 10 and data["offset"] == 0
    results = data["results"]
    assert {r["doc_id"] for r in results} == ALL_IDS  # every document has a mention
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        text = client.get(f"/documents/{quote(r['doc_id'], safe='')}").json()["text"]
        # hybrid index (the default): the score is the fused one, the mentions come best first
        mention_scores = [m["score"] for m in r["mentions"]]
        assert mention_scores == sorted(mention_scores, reverse=True)
        for m in r["mentions"]:
            assert text[m["start"]:m["end"]] == m["text"]
        ctx = r["context"]
        assert ctx["text"] == text[ctx["start"]:ctx["end"]] and ctx["doc_length"] == len(text)
        best = r["mentions"][0]
        assert ctx["start"] <= best["start"] and best["end"] <= ctx["end"]
        assert best["text"] in r["snippet"]


def test_search_mode_mentions_ranks_by_the_best_mention(client):
    data = client.get("/search", params={"q": "politician", "k": 5, "mode": "mentions"}).json()
    for r in data["results"]:
        assert r["score"] == pytest.approx(r["mentions"][0]["score"])
    hybrid = client.get("/search", params={"q": "politician", "k": 5}).json()["results"]
    assert any(r["score"] != pytest.approx(r["mentions"][0]["score"]) for r in hybrid)
    bad = client.get("/search", params={"q": "politician", "mode": "fused"})
    assert bad.status_code == 422 and "mode" in bad.text


def test_search_finds_people_first_for_a_person_query(client):
    top = search(client, "person", k=3)["results"]
    assert len(top) == 3 and all(r["score"] > 0 for r in top)


def test_more_pages_continue_the_ranking(client):
    full = [r["doc_id"] for r in search(client, "city", k=10)["results"]]
    pages, offset = [], 0
    while True:
        data = search(client, "city", k=3, offset=offset)
        pages += [r["doc_id"] for r in data["results"]]
        assert [r["rank"] for r in data["results"]] == list(range(offset + 1, offset + 1 +
                                                                  len(data["results"])))
        offset += 3
        if not data["has_more"]:
            break
    assert pages == full
    assert search(client, "city", k=5, offset=50)["results"] == []


def test_repeated_queries_hit_the_cache(client):
    first = search(client, "mountain range")
    again = search(client, "  mountain range ")
    assert again["cached"] is True and again["query"] == "mountain range"
    assert [(r["doc_id"], r["score"]) for r in again["results"]] == \
        [(r["doc_id"], r["score"]) for r in first["results"]]
    assert client.get("/stats").json()["server"]["query_cache"]["hits"] >= 1


def test_concurrent_queries_share_one_model_call(client):
    """Queries waiting together are embedded in one batch, and batching changes no vector."""
    retriever = client.app.state.service.retriever
    queries = ["river", "car model", "sports team", "award", "musician", "company", "lake",
               "scientist"]
    embedder = QueryEmbedder(retriever.embed_queries, cache_size=0, max_batch=32, max_wait=0.5)
    try:
        futures = [embedder.submit(q)[0] for q in queries]
        batched = np.stack([f.result(timeout=60) for f in futures])
    finally:
        embedder.close()
    assert embedder.batches == 1 and embedder.largest_batch == len(queries)
    single = np.stack([retriever.embed_queries([q])[0] for q in queries])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_concurrent_http_searches_agree_with_sequential_ones(client):
    queries = ["athlete", "band", "physicist", "country", "vehicle", "ocean"]
    results: dict[str, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(queries))

    def run(q: str) -> None:
        try:
            barrier.wait(timeout=30)
            results[q] = search(client, q, k=5)["results"]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for q in queries:
        again = search(client, q, k=5)
        assert again["cached"] is True
        assert [r["doc_id"] for r in again["results"]] == [r["doc_id"] for r in results[q]]


def test_document_view(client):
    doc = client.get("/documents/merkel").json()
    assert doc["id"] == "merkel" and doc["metadata"] == {"source": "news"}
    assert doc["text"] == CORPUS[0].text
    assert {"Angela Merkel", "Emmanuel Macron", "Paris"} <= {m["text"] for m in doc["mentions"]}
    starts = [m["start"] for m in doc["mentions"]]
    assert starts == sorted(starts)


def test_document_ids_are_url_escaped_and_offsets_count_code_points(client):
    doc = client.get(f"/documents/{quote('news/2024 01', safe='')}").json()
    assert doc["id"] == "news/2024 01"
    for m in doc["mentions"]:
        assert doc["text"][m["start"]:m["end"]] == m["text"]
    assert "Olaf Scholz" in {m["text"] for m in doc["mentions"]}


def test_document_markup_comes_back_verbatim(client):
    doc = client.get("/documents/xss").json()
    assert "<script>window.__pwned = 1</script>" in doc["text"]


def test_unknown_document_is_404(client):
    response = client.get("/documents/no-such-doc")
    assert response.status_code == 404
    assert response.json() == {"detail": "no document with id 'no-such-doc'"}


@pytest.mark.parametrize(("params", "expected"), [
    ({}, "give q (an entity type, repeatable) or like (an example mention)"),
    ({"q": ["city", " "]}, "query parameter 'q' (value 2): must hold a character other than"),
    ({"q": ""}, "query parameter 'q': String should have at least 1 character"),
    ({"q": "   "}, "query parameter 'q': must hold a character other than whitespace"),
    ({"q": "x" * 257}, "query parameter 'q': String should have at most 256 characters"),
    ({"q": "city", "k": 0}, "query parameter 'k': Input should be greater than or equal to 1"),
    ({"q": "city", "k": 101}, "query parameter 'k': Input should be less than or equal to 100"),
    ({"q": "city", "k": "ten"}, "query parameter 'k': Input should be a valid integer"),
    ({"q": "city", "offset": -1}, "query parameter 'offset': Input should be greater than"),
    ({"q": "city", "offset": 1001}, "query parameter 'offset': Input should be less than"),
    ({"q": "city", "per_doc": 0}, "query parameter 'per_doc': Input should be greater than"),
])
def test_invalid_searches_are_422_with_a_clear_message(client, params, expected):
    response = client.get("/search", params=params)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


# -- writes ------------------------------------------------------------------------------------
def test_writes_are_disabled_without_a_token(client):
    for headers in ({}, AUTH):
        response = client.post("/documents", json={"documents": [{"id": "n", "text": "Rome."}]},
                               headers=headers)
        assert response.status_code == 403
        assert "--write-token" in response.json()["detail"]
    assert client.get("/health").json()["documents"] == len(CORPUS)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Bearer {TOKEN}x"},
])
def test_writes_need_the_bearer_token(writer, headers):
    response = writer.post("/documents", json={"documents": [{"id": "n", "text": "Rome."}]},
                           headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {"detail": "missing or invalid bearer token"}
    assert writer.get("/health").json()["documents"] == len(CORPUS)


def test_auth_is_checked_before_the_body_is_read(writer):
    response = writer.post("/documents", content=b"{not json", headers={})
    assert response.status_code == 401


def test_added_documents_are_searchable_and_viewable(writer):
    body = {"documents": [{"id": 42, "text": "Lionel Messi scored twice for Inter Miami.",
                           "metadata": {"lang": "en"}, "league": "MLS"}]}
    response = writer.post("/documents", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["added"] == 1 and result["skipped"] == 0 and result["mentions"] >= 2
    assert result["documents"] == len(CORPUS) + 1
    doc = writer.get("/documents/42").json()
    assert doc["metadata"] == {"lang": "en", "league": "MLS"}
    assert {"Lionel Messi", "Inter Miami"} <= {m["text"] for m in doc["mentions"]}
    ids = [r["doc_id"] for r in search(writer, "football player", k=20)["results"]]
    assert "42" in ids
    stats = writer.get("/stats").json()
    assert stats["documents"] == len(CORPUS) + 1 and stats["server"]["writes_enabled"] is True


def test_existing_ids_conflict_skip_or_update(writer):
    doc = {"id": "merkel", "text": "Olaf Scholz visited Warsaw."}
    conflict = writer.post("/documents", json={"documents": [doc]}, headers=AUTH)
    assert conflict.status_code == 409
    assert '"if_exists": "skip"' in conflict.json()["detail"]
    skipped = writer.post("/documents", json={"documents": [doc], "if_exists": "skip"},
                          headers=AUTH).json()
    assert skipped["added"] == 0 and skipped["skipped"] == 1
    assert writer.get("/documents/merkel").json()["text"] == CORPUS[0].text
    updated = writer.post("/documents", json={"documents": [doc], "if_exists": "update"},
                          headers=AUTH).json()
    assert updated["added"] == 1 and updated["documents"] == len(CORPUS)
    view = writer.get("/documents/merkel").json()
    assert view["text"] == doc["text"]
    assert {m["text"] for m in view["mentions"]} >= {"Olaf Scholz", "Warsaw"}
    hits = {r["doc_id"]: r for r in search(writer, "politician", k=20)["results"]}
    assert "Angela Merkel" not in {m["text"] for m in hits["merkel"]["mentions"]}


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b"{not json", 400, "malformed JSON body: Expecting property name"),
    (b"", 400, "request body is empty"),
    (b'{"documents": [{"id": "a", "text": "x", "metadata": {"v": NaN}}]}', 400, "NaN"),
    (b'{"documents": "\xff"}', 400, "request body is not valid UTF-8"),
    (b"[" * 10_000 + b"]" * 10_000, 400, "malformed JSON body"),
    (b"[]", 422, "Input should be a valid dictionary"),
    (b"{}", 422, "documents: Field required"),
    (b'{"documents": []}', 422, "documents: List should have at least 1 item"),
    (b'{"documents": [{"id": "a"}]}', 422, "documents[0].text: Field required"),
    (b'{"documents": [{"id": "a", "text": "  "}]}', 422, "documents[0].text: must hold a"),
    (b'{"documents": [{"id": " ", "text": "Rome"}]}', 422, "documents[0].id: must hold a"),
    (b'{"documents": [{"id": true, "text": "Rome"}]}', 422, "must be a string or an integer"),
    (b'{"documents": [{"id": "a", "text": 5}]}', 422, "documents[0].text: Input should be a valid"),
    (b'{"documents": [{"id": "a", "text": "Rome"}, {"id": "a", "text": "Oslo"}]}', 409,
     "documents[1]: document id 'a' repeats documents[0]"),
    (b'{"documents": [{"id": "a", "text": "Rome"}], "if_exists": "maybe"}', 422,
     "if_exists: Input should be 'error', 'skip' or 'update'"),
    (b'{"documents": [{"id": "a", "text": "Rome"}], "extra": 1}', 422,
     "extra: Extra inputs are not permitted"),
    (json.dumps({"documents": [{"id": str(i), "text": "Rome"} for i in range(21)]}).encode(),
     422, "documents: List should have at most 20 items"),
    (json.dumps({"documents": [{"id": "big", "text": "Rome " * 20_000}]}).encode(), 413,
     "request body is larger than 65536 bytes"),
])
def test_invalid_writes_are_4xx_with_a_clear_message(writer, body, status, expected):
    response = writer.post("/documents", content=body,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"]
    assert writer.get("/health").json()["documents"] == len(CORPUS)  # nothing half-written


def test_oversized_body_without_content_length_is_413(writer):
    def chunks():
        for _ in range(40):
            yield b" " * 4096

    response = writer.post("/documents", content=chunks(), headers=AUTH)
    assert response.status_code == 413


class SlowMentionInserts:
    """A SQLite connection that sleeps a little before every ``INSERT INTO mentions``."""

    def __init__(self, connection):
        self.connection = connection

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith("INSERT INTO MENTIONS"):
            time.sleep(0.003)
        return self.connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.connection, name)


def test_concurrent_adds_and_searches_never_show_half_a_document(writer):
    """Readers (search, document view, stats) run while documents are added, a request at a
    time; every state they observe must be a whole number of committed requests."""
    sentences = [
        "Serena Williams won Wimbledon after beating Maria Sharapova in London.",
        "Microsoft acquired GitHub and moved its office from San Francisco to Redmond.",
        "The Amazon River crosses Brazil, Peru and Colombia before the Atlantic Ocean.",
        "Barack Obama and Joe Biden spoke in Chicago with Kamala Harris.",
        "Ferrari presented the Roma coupe in Maranello with Charles Leclerc.",
        "Lake Baikal lies in Siberia near Irkutsk and the Mongolian border.",
    ]
    # a few requests of several documents each: every commit writes many rows at once
    requests = [[Document(f"new-{r}-{i}", text) for i, text in enumerate(sentences)]
                for r in range(4)]
    new = [doc for batch in requests for doc in batch]
    base = writer.get("/stats").json()
    observed: list[tuple[int, int]] = []
    seen_docs: dict[str, list] = {}
    failures: list[str] = []
    done = threading.Event()

    def stats_loop() -> None:
        while not done.is_set():
            stats = writer.get("/stats")
            if stats.status_code != 200:
                failures.append(f"stats {stats.status_code}")
            else:
                observed.append((stats.json()["documents"], stats.json()["mentions"]))

    def read_loop() -> None:
        while not done.is_set():
            response = writer.get("/search", params={"q": "person", "k": 30})
            if response.status_code != 200:
                failures.append(f"search {response.status_code} {response.text}")
                continue
            for r in response.json()["results"]:
                if not r["doc_id"].startswith("new-"):
                    continue
                doc = writer.get(f"/documents/{r['doc_id']}")
                if doc.status_code != 200:
                    failures.append(f"document {r['doc_id']} {doc.status_code}")
                else:
                    seen_docs.setdefault(r["doc_id"], []).append(doc.json()["mentions"])

    # Widen the commit window: pause before each mention row the writer inserts (its document
    # row is already in), so a reader that did not wait for the commit would see a document
    # without its mentions. The pause is between statements: SQLite still does all the work.
    index = writer.app.state.service.retriever.index
    index._db = SlowMentionInserts(index._db)
    readers = [threading.Thread(target=loop) for loop in (stats_loop, read_loop, read_loop)]
    for t in readers:
        t.start()
    try:
        added = []
        for batch in requests:
            response = writer.post("/documents", json={"documents": [
                {"id": doc.id, "text": doc.text} for doc in batch]}, headers=AUTH)
            assert response.status_code == 201, response.text
            added.append(response.json())
    finally:
        done.set()
        for t in readers:
            t.join(timeout=120)
        index._db = index._db.connection
    assert not failures
    # every (documents, mentions) pair seen is the base plus a prefix of the requests
    committed = {(base["documents"] + sum(a["added"] for a in added[:i]),
                  base["mentions"] + sum(a["mentions"] for a in added[:i]))
                 for i in range(len(requests) + 1)}
    assert observed and set(observed) <= committed
    final = {d.id: writer.get(f"/documents/{d.id}").json()["mentions"] for d in new}
    assert seen_docs, "the readers never saw a new document"
    for doc_id, views in seen_docs.items():
        assert all(view == final[doc_id] for view in views)


def test_an_empty_index_serves_and_fills_up(built, tmp_path):
    retriever = Retriever.create(tmp_path / "empty", encoder=built["encoder"],
                                 detector=built["detector"])
    app = create_app(retriever, ServeSettings(write_token=TOKEN), owns_retriever=True)
    with TestClient(app) as empty:
        assert empty.get("/health").json() == {"status": "ok", "documents": 0}
        data = search(empty, "city")
        assert data["results"] == [] and data["has_more"] is False
        response = empty.post("/documents", headers=AUTH, json={"documents": [
            {"id": "oslo", "text": "Oslo is the capital of Norway."}]})
        assert response.status_code == 201, response.text
        assert [r["doc_id"] for r in search(empty, "city")["results"]] == ["oslo"]


# -- page, docs, CORS --------------------------------------------------------------------------
def test_page_and_assets_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="search-form"' in page.text and "/static/app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css"),
                        ("favicon.svg", "image/svg+xml")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_page_loads_nothing_from_elsewhere_and_never_uses_html_sinks():
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)
        assert [u for u in urls if u != "http://www.w3.org"] == [], path.name
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code


def test_openapi_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    assert {"/health", "/stats", "/search", "/documents", "/documents/{doc_id}"} <= \
        set(schema["paths"])
    body = schema["paths"]["/documents"]["post"]["requestBody"]["content"]["application/json"]
    ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "documents" in schema["components"]["schemas"][ref]["properties"]
    assert "DocumentIn" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_cors_is_off_by_default(client):
    response = client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/search", headers={
        "Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_can_allow_named_origins(built):
    settings = ServeSettings(cors_origins=["http://app.example"])
    app = create_app(_open(built, built["path"], writable=False), settings, owns_retriever=True)
    with TestClient(app) as cors_client:
        ok = cors_client.get("/health", headers={"Origin": "http://app.example"})
        assert ok.headers["access-control-allow-origin"] == "http://app.example"
        other = cors_client.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- opening, settings, CLI --------------------------------------------------------------------
def test_index_is_writable_only_when_writes_are_enabled(built, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(built["path"], path, ignore=shutil.ignore_patterns("write.lock"))
    read_only = open_app(path, encoder=built["encoder"])
    assert read_only.state.service.retriever.index.writable is False
    writable = open_app(path, ServeSettings(write_token=TOKEN), encoder=built["encoder"])
    try:
        assert writable.state.service.retriever.index.writable is True
        with pytest.raises(IndexStateError, match="being written by another process"):
            open_app(path, ServeSettings(write_token=TOKEN), encoder=built["encoder"])
    finally:
        writable.state.service.close()
        read_only.state.service.close()


def test_the_query_precision_is_chosen_at_start_up(built, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(built["path"], path, ignore=shutil.ignore_patterns("write.lock"))
    encoder = copy.copy(built["encoder"])  # the shared fixture keeps its own precision
    app = open_app(path, encoder=encoder, precision="fp32")
    try:
        retriever = app.state.service.retriever
        retriever.embed_queries(["a city"])  # the query pass resolves its precision on use
        assert retriever.encoder.query_pass.precision == "fp32"
    finally:
        app.state.service.close()
    with pytest.raises(ConfigError, match="precision"):
        open_app(path, encoder=copy.copy(built["encoder"]), precision="fp8")


def test_weak_tokens_and_read_only_writes_are_refused(built):
    for token in ("short", " padded-token-0123456789 ", "tab\tinside-0123456789"):
        with pytest.raises(ConfigError, match="write token"):
            ServeSettings(write_token=token)
    retriever = _open(built, built["path"], writable=False)
    try:
        with pytest.raises(ConfigError, match="read-only"):
            create_app(retriever, ServeSettings(write_token=TOKEN))
    finally:
        retriever.close()


def test_cli_serve_help_and_errors(tmp_path):
    from ner_retriever.cli.main import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "--write-token" in help_text and "--port" in help_text and "--cors-origin" in help_text
    missing = runner.invoke(app, ["serve", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no index at" in missing.output
    weak = runner.invoke(app, ["serve", str(tmp_path), "--write-token", "short"])
    assert weak.exit_code == 1 and "write token" in weak.output


# -- building blocks ---------------------------------------------------------------------------
def test_locked_encoder_chunks_documents_without_changing_vectors(built):
    inner = built["encoder"]
    locked = LockedEncoder(inner, docs_per_turn=3)
    assert locked.model is inner.model and locked.config is inner.config
    assert locked._lock is LockedEncoder(inner)._lock  # one lock per model
    texts = [d.text for d in CORPUS]
    spans = [[(0, 5), (len(t) - 6, len(t) - 1)] for t in texts]
    chunked = locked.encode_spans(texts, spans)
    whole = inner.encode_spans(texts, spans)
    assert len(chunked) == len(whole) == len(CORPUS)
    for a, b in zip(chunked, whole, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_lru_cache_evicts_the_least_recently_used():
    cache = LRUCache(2)
    a, b, c = (np.full(2, x, np.float32) for x in (1, 2, 3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "a" is now the most recent
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c


def test_context_window_covers_the_mention_and_cuts_at_spaces():
    text = " ".join(f"word{i}" for i in range(200))
    start = text.index("word100")
    lo, hi = context_window(text, start, start + 7, width=60)
    assert lo <= start and start + 7 <= hi and hi - lo <= 60
    assert text[lo - 1] == " " and text[hi] == " "
    assert context_window("short text", 0, 5) == (0, 10)
