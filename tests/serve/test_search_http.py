"""``GET /search``'s several types, ``like=``, ``all=``, ``where=`` and ``must=``, and
``GET /entities``, over HTTP: each answer checked against the Python API on the same index
(``Retriever.search`` / ``Retriever.entities``), plus known answers of the tiny corpus.

The mention-only tiny index (``tiny_app``) needs no real model; the features that need a
cut-off run on the hybrid one (``hybrid_app``: MiniLM document vectors, hence ``slow``).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.serve.serve_support import TINY_CORPUS

from ner_retriever.retrieve.requests import MAX_TYPES
from ner_retriever.retrieve.retriever import Retriever

TYPES = ["a person", "a city"]
NEWS = {d.id for d in TINY_CORPUS if d.metadata["source"] == "news"}


def get(client: TestClient, path: str = "/search", status: int = 200, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def ids(data: dict) -> list[str]:
    return [r["doc_id"] for r in data["results"]]


def api(retriever: Retriever, **kwargs) -> list[tuple[str, float]]:
    return [(r.doc_id, pytest.approx(r.score, abs=1e-5)) for r in retriever.search(**kwargs)]


def ranked(data: dict) -> list[tuple[str, float]]:
    return [(r["doc_id"], r["score"]) for r in data["results"]]


# -- filters and examples on the mention-only index (no real model) ------------------------------
def test_where_and_must_filter_inside_the_ranking(tiny_app):
    with TestClient(tiny_app()) as client:
        retriever = client.app.state.service.retriever
        news = get(client, q="company", where="source=news", k=5)
        assert set(ids(news)) == NEWS and "threshold" not in news
        assert ranked(news) == api(retriever, query="company", where="source=news", k=5)
        recent = get(client, q="city", where=["source=news", "year>=2020"])
        assert ids(recent) == ["toyota"]
        old = get(client, q="city", where="year<=2001")
        assert set(ids(old)) == {"danube", "curie"}
        paris = get(client, q="city", must="paris")
        assert set(ids(paris)) == {"merkel", "curie"}  # whole word, case-insensitive
        assert ranked(paris) == api(retriever, query="city", must="paris")
        assert ids(get(client, q="city", must="Paris", where="source=history")) == ["curie"]
        assert get(client, q="city", where="source=none")["results"] == []


def test_like_finds_the_marked_mention(tiny_app):
    with TestClient(tiny_app()) as client:
        retriever = client.app.state.service.retriever
        like = "They sailed down the [[Danube]] past Vienna."
        data = get(client, like=like, k=5)
        assert data["query"] == like and data["queries"] == [like]
        assert data["cached"] is False and "threshold" not in data
        assert ranked(data) == api(retriever, like=like, k=5)
        bare = get(client, like="Danube", k=5)
        assert ranked(bare) == api(retriever, like="Danube", k=5)
        mention = data["results"][0]["mentions"][0]
        assert "query" not in mention  # one query: mentions carry no label
        # an indexed mention in its own context finds itself: the very vector the index holds
        doc = TINY_CORPUS[1]
        own = doc.text.replace("Vienna", "[[Vienna]]", 1)
        top = get(client, like=own, k=1, per_doc=1)["results"][0]
        assert top["doc_id"] == "danube" and top["mentions"][0]["text"] == "Vienna"
        assert top["score"] == pytest.approx(1.0, abs=1e-4)
        assert ids(get(client, like=own, where="source=news")) != []


@pytest.mark.parametrize(("params", "detail"), [
    ({"q": "city", "where": "year>=soon"}, "where: 'year>=soon': >= needs a number"),
    ({"q": "city", "where": "year"}, "where: 'year' has no operator"),
    ({"q": "city", "where": "id=3"}, "where: 'id=3': 'id' is not metadata"),
    ({"q": "city", "where": "year >= 3"}, "no spaces around the operator"),
    ({"q": "city", "where": "year>=nan"}, "n a decimal number"),
    ({"q": "city", "must": "  "}, "must: the keyword is empty"),
    ({"q": "city", "must": "?!"}, "must: '?!' holds no letter or digit"),
    ({"like": "the [[Danube to Vienna"}, "unclosed [[ ]] mark"),
    ({"like": "[[Danube]] and [[Vienna]]"}, "marks 2 mentions"),
    ({"like": "the [[ ]] river"}, "mark is empty"),
    ({"like": "a [[[Danube]] b"}, "no other [[ or ]]"),
    ({"q": "city", "like": "Danube"}, "not both"),
    ({}, "give q (an entity type, repeatable) or like"),
    ({"q": "city", "all": "true"}, None),  # mention-only index: 409, below
])
def test_bad_values_are_refused_with_the_reason(tiny_app, params, detail):
    with TestClient(tiny_app()) as client:
        response = client.get("/search", params=params)
        if detail is None:
            assert response.status_code == 409
            assert "needs a hybrid index" in response.json()["detail"]
            return
        assert response.status_code == 422, response.text
        assert detail in response.json()["detail"]


def test_limits_are_in_the_schema(tiny_app):
    with TestClient(tiny_app()) as client:
        schema = client.get("/openapi.json").json()
        search = {p["name"]: p["schema"] for p in schema["paths"]["/search"]["get"]["parameters"]}
        assert search["q"]["anyOf"][0]["maxItems"] == MAX_TYPES
        assert search["where"]["items"]["pattern"].startswith("^")
        assert "pattern" in search["must"] and "pattern" in search["like"]
        assert search["all"]["type"] == "boolean"
        entities = {p["name"] for p in schema["paths"]["/entities"]["get"]["parameters"]}
        assert entities == {"q", "top", "where", "must"}
        too_many = client.get("/search", params={"q": ["city"] * (MAX_TYPES + 1)})
        assert too_many.status_code == 422
        assert client.get("/entities", params={"q": "city"}).status_code == 409


# -- several types, all=, entities on the hybrid index --------------------------------------------
@pytest.mark.slow
def test_several_types_are_documents_with_an_entity_of_each(hybrid_app):
    with TestClient(hybrid_app()) as client:
        retriever = client.app.state.service.retriever
        data = get(client, q=TYPES, k=5, per_doc=2)
        assert data["query"] == "a person & a city" and data["queries"] == TYPES
        assert data["threshold"] == -10.0
        assert ranked(data) == api(retriever, query=TYPES, k=5, per_doc=2)
        for result in data["results"]:
            assert {m["query"] for m in result["mentions"]} <= set(TYPES)
            assert all("query" in m for m in result["mentions"])
        again = get(client, q=TYPES, k=5, per_doc=2)
        assert again["cached"] is True and ranked(again) == ranked(data)
        # each description's vector is the cached single-query one
        single = get(client, q="a city", k=5)
        assert single["cached"] is True and single["queries"] == ["a city"]
        paged = get(client, q=TYPES, k=2, offset=2, per_doc=2)
        assert ranked(paged) == ranked(data)[2:4] and paged["has_more"] is True
        filtered = get(client, q=TYPES, where="source=news")
        assert set(ids(filtered)) <= NEWS
        assert ranked(filtered) == api(retriever, query=TYPES, where="source=news")
        assert get(client, q=TYPES, mode="mentions", status=409)["detail"].endswith(
            "not mode=mentions")


@pytest.mark.slow
def test_all_pages_through_every_document_past_the_cut_off(hybrid_app):
    app = hybrid_app()
    with TestClient(app) as client:
        retriever = app.state.service.retriever
        plain = get(client, q="a city", k=5)
        cut = sorted(r["score"] for r in plain["results"])[2]  # 3 of 5 pass
        retriever.threshold = cut
        every = api(retriever, query="a city", exhaustive=True)
        first = get(client, q="a city", all="true", k=2)
        assert first["total"] == 3 == len(every) and first["threshold"] == cut
        assert ranked(first) == every[:2] and first["has_more"] is True
        rest = get(client, q="a city", all="true", k=2, offset=2)
        assert ranked(rest) == every[2:] and rest["has_more"] is False
        assert [r["rank"] for r in rest["results"]] == [3]
        assert all(r["score"] >= cut for r in first["results"] + rest["results"])
        retriever.threshold = 1e9
        none = get(client, q="a city", all="true")
        assert none["results"] == [] and none["total"] == 0


@pytest.mark.slow
def test_like_on_a_hybrid_index_fuses_like_the_api(hybrid_app):
    with TestClient(hybrid_app()) as client:
        retriever = client.app.state.service.retriever
        like = "Crowds filled [[Budapest]] at night."
        assert ranked(get(client, like=like)) == api(retriever, like=like)
        exhaustive = get(client, like=like, all="true", k=100)
        assert exhaustive["total"] == len(TINY_CORPUS) and "threshold" in exhaustive


@pytest.mark.slow
def test_entities_list_each_name_once_like_the_api(hybrid_app):
    with TestClient(hybrid_app()) as client:
        retriever = client.app.state.service.retriever
        data = get(client, "/entities", q="a city", top=50)
        assert data["query"] == "a city" and data["threshold"] == -10.0
        assert data["entities"] == [e.to_dict() for e in retriever.entities("a city", top=50)]
        paris = next(e for e in data["entities"] if e["text"] == "Paris")
        assert paris["documents"] == 2 and paris["mentions"] == 2
        assert sorted(paris["examples"]) == ["curie", "merkel"]
        assert len({e["text"].casefold() for e in data["entities"]}) == len(data["entities"])
        assert len(get(client, "/entities", q="a city", top=3)["entities"]) == 3
        news = get(client, "/entities", q="a city", where="source=news")["entities"]
        assert {d for e in news for d in e["examples"]} <= NEWS
        vienna = get(client, "/entities", q="a city", must="Vienna")["entities"]
        assert {d for e in vienna for d in e["examples"]} == {"danube"}
        assert get(client, "/entities", status=422, q="a city", where="year")["detail"] \
            .startswith("where: 'year' has no operator")
        assert get(client, "/entities", status=422, q="a city", top=0)
        client.app.state.service.retriever.threshold = 1e9
        assert get(client, "/entities", q="a city")["entities"] == []
