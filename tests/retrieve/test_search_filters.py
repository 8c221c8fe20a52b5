"""``Retriever.search(where=, must=)`` on a small index (tiny random encoder, gold spans): the
filtered ranking is the unfiltered ranking's order restricted to the documents that pass,
with k results whenever k pass; deletes and bad filters."""

from __future__ import annotations

import dataclasses

import pytest

from ner_retriever import Retriever
from ner_retriever.errors import ConfigError
from tests.retrieve.test_retriever import corpus, create

YEARS = [1990, 2005, 2010, 2020, 2021]


def with_metadata():
    return [dataclasses.replace(d, metadata={"year": y, "lang": "en" if i % 2 else "de",
                                             "meta": {"src": f"s{i % 2}"}})
            for i, (d, y) in enumerate(zip(corpus(), YEARS))]


@pytest.fixture()
def index(tmp_path, tiny_encoder):
    with create(tmp_path / "idx", tiny_encoder) as r:
        r.add(with_metadata(), commit_every=2)
    return tmp_path / "idx"


def ranked(r: Retriever, **kwargs) -> list[str]:
    return [x.doc_id for x in r.search("a city", k=5, **kwargs)]


def test_where_keeps_the_ranking_order_among_the_documents_that_pass(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        full = ranked(r)
        newer = ranked(r, where="year>=2010")
        assert newer == [d for d in full if d in {"d2", "d3", "d4"}]
        both = ranked(r, where=["year>=2005", "year<=2020", "lang=en"])
        assert both == [d for d in full if d in {"d1", "d3"}]
        assert ranked(r, where="meta.src=s0") == [d for d in full if d in {"d0", "d2", "d4"}]
        assert ranked(r, where="year=2020") == ["d3"]
        assert ranked(r, where="lang=fr") == []


def test_must_matches_whole_words_case_insensitively(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        full = ranked(r)
        assert ranked(r, must="PARIS") == ["d0"]
        assert ranked(r, must="in") == [d for d in full if d in {"d1", "d2", "d3"}]
        assert ranked(r, must="in", where="year>=2010") == [d for d in full if d in {"d2", "d3"}]
        assert ranked(r, must="Par") == []


def test_filters_follow_deletes(index, tiny_encoder):
    with Retriever.open(index, writable=True, encoder=tiny_encoder) as r:
        assert ranked(r, must="Paris") == ["d0"]
        r.delete(["d0"])
        assert ranked(r, must="Paris") == []
        assert "d0" not in ranked(r, where="year<=2030")


@pytest.mark.parametrize("where, must, message", [
    ("year", None, "where"), ("year>=soon", None, "number"), ("text=x", None, "id and text"),
    (None, "   ", "keyword is empty"), (None, "!!", "no letter")])
def test_bad_filters_are_refused_before_the_model_runs(index, tiny_encoder, where, must,
                                                        message):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        with pytest.raises(ConfigError, match=message):
            r.search("a city", where=where, must=must)
