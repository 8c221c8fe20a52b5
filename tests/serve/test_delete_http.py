"""``DELETE /documents/{id}`` with FastAPI's TestClient, over a tiny random model: the write
token, 404 for unknown ids, any id, CORS, the OpenAPI entry, and a deleted document gone from
search and from ``GET /documents``."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ner_retriever import Document, Retriever, Span
from ner_retriever.serve.app import create_app
from ner_retriever.serve.settings import ServeSettings

TOKEN = "s3cret-token-for-tests"
ORIGIN = "http://page.example"
ODD_ID = "a/b\nc d"  # slashes, a line break and a space: still one path parameter
IDS = [f"d{i}" for i in range(6)] + [ODD_ID]


def _docs() -> list[Document]:
    text = "Angela Merkel visited Paris."
    return [Document(i, text, spans=[Span(0, 13, "person"), Span(22, 27, "city")]) for i in IDS]


def _app(tmp_path, tiny_encoder, **settings) -> TestClient:
    retriever = Retriever.create(tmp_path / "idx", encoder=tiny_encoder, detector="gold",
                                 head=None, hybrid=False)
    retriever.add(_docs())
    return TestClient(create_app(retriever, ServeSettings(**settings), owns_retriever=True))


@pytest.fixture()
def writer(tmp_path, tiny_encoder) -> Iterator[TestClient]:
    with _app(tmp_path, tiny_encoder, write_token=TOKEN, cors_origins=[ORIGIN]) as client:
        yield client


def _delete(client: TestClient, doc_id: str, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.delete(f"/documents/{quote(doc_id, safe='/')}", headers=headers)


def _found(client: TestClient) -> set[str]:
    response = client.get("/search", params={"q": "person", "k": 50})
    assert response.status_code == 200, response.text
    return {r["doc_id"] for r in response.json()["results"]}


def test_delete_needs_the_token_and_removes_the_document_for_good(writer):
    assert _found(writer) == set(IDS)
    assert _delete(writer, "d1", token=None).status_code == 401
    assert _delete(writer, "d1", token="wrong").status_code == 401
    response = _delete(writer, "d1")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": "d1", "documents": len(IDS) - 1}
    assert writer.get("/documents/d1").status_code == 404
    assert _found(writer) == set(IDS) - {"d1"}
    again = _delete(writer, "d1")
    assert again.status_code == 404 and "no document with id 'd1'" in again.json()["detail"]
    assert _delete(writer, ODD_ID).json()["deleted"] == ODD_ID
    assert _found(writer) == set(IDS) - {"d1", ODD_ID}
    assert writer.get("/health").json()["documents"] == len(IDS) - 2


def test_cors_allows_delete_and_the_schema_states_it(writer):
    preflight = writer.options("/documents/d2", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    operation = writer.get("/openapi.json").json()["paths"]["/documents/{doc_id}"]["delete"]
    assert {"200", "401", "403", "404"} <= set(operation["responses"])
    assert operation["security"] == [{"bearer": []}]
    assert operation["parameters"][0]["name"] == "doc_id"


def test_delete_is_refused_when_writes_are_disabled(tmp_path, tiny_encoder):
    with _app(tmp_path, tiny_encoder) as client:
        response = _delete(client, "d1")
        assert response.status_code == 403
        assert client.get("/documents/d1").status_code == 200
