"""``Retriever.search`` with several types, an example (``like=``) and ``exhaustive=True``,
and ``Retriever.entities``, on a small hybrid index (tiny random encoder, gold spans, MiniLM
on the document side): each answer checked against the plain ranking of the same index."""

from __future__ import annotations

import pytest

from ner_retriever import Retriever
from ner_retriever.errors import ConfigError
from ner_retriever.retrieve.examples import parse_example
from tests.retrieve.test_retriever import corpus, create

QUERIES = ["a person", "a city"]


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_encoder):
    path = tmp_path_factory.mktemp("features") / "idx"
    with Retriever.create(path, encoder=tiny_encoder, detector="gold", head=None) as r:
        r.add(corpus())
    return path


def opened(path, encoder, threshold: float | None = None) -> Retriever:
    r = Retriever.open(path, encoder=encoder)
    if threshold is not None:
        r.threshold = threshold
    return r


def scores(r: Retriever, query: str) -> dict[str, float]:
    return {x.doc_id: x.score for x in r.search(query, k=5)}


@pytest.mark.slow
def test_exhaustive_returns_every_document_past_the_cut_off(hybrid, tiny_encoder):
    with opened(hybrid, tiny_encoder) as r:
        plain = scores(r, "a city")
        r.threshold = sorted(plain.values())[2]  # the middle score: 3 of 5 pass
        got = r.search("a city", k=1, exhaustive=True)
    assert {x.doc_id: x.score for x in got} == {d: s for d, s in plain.items()
                                                 if s >= r.threshold}
    assert len(got) == 3 and [x.score for x in got] == sorted((x.score for x in got),
                                                              reverse=True)


@pytest.mark.slow
def test_several_types_rank_documents_by_their_weakest_type(hybrid, tiny_encoder):
    with opened(hybrid, tiny_encoder, threshold=-10.0) as r:  # every document passes
        each = [scores(r, q) for q in QUERIES]
        got = r.search(QUERIES, k=5, per_doc=1)
    want = sorted(((d, min(s[d] for s in each)) for d in each[0]), key=lambda x: -x[1])
    assert [(x.doc_id, pytest.approx(x.score, abs=1e-6)) for x in got] == want
    for res in got:
        assert sorted(m.query for m in res.mentions) == sorted(QUERIES)
        assert "query" in res.to_dict()["mentions"][0]


@pytest.mark.slow
def test_a_type_nobody_passes_empties_a_combined_search(hybrid, tiny_encoder):
    with opened(hybrid, tiny_encoder, threshold=1e9) as r:
        assert r.search(QUERIES, k=5) == [] and r.search("a city", exhaustive=True) == []
        assert r.entities("a city") == []


@pytest.mark.slow
def test_an_example_finds_its_own_mention_first(hybrid, tiny_encoder):
    with opened(hybrid, tiny_encoder) as r:
        got = r.search(like="Lionel Messi scored in [[Madrid]].", k=5, mode="mentions")
        bare = r.search(like="Madrid", k=5)
    assert got[0].doc_id == "d2" and got[0].mentions[0].text == "Madrid"
    assert got[0].score == pytest.approx(1.0, abs=1e-4)  # the very vector the index holds
    assert len(bare) == 5


@pytest.mark.slow
def test_entities_list_each_name_once_with_its_documents(hybrid, tiny_encoder):
    with opened(hybrid, tiny_encoder, threshold=-10.0) as r:
        got = r.entities("a city", top=50)
    texts = [e.text for e in got]
    assert len(texts) == len(set(texts)) == 9  # every gold mention is its own entity here
    assert all(e.documents == e.mentions == 1 and len(e.examples) == 1 for e in got)
    assert [e.score for e in got] == sorted((e.score for e in got), reverse=True)
    assert {e.examples[0] for e in got if e.text == "Paris"} == {"d0"}


def test_mention_only_indexes_refuse_what_needs_a_cut_off(tmp_path, tiny_encoder):
    with create(tmp_path / "idx", tiny_encoder) as r:
        r.add(corpus())
        with pytest.raises(ConfigError, match="exhaustive mode needs a hybrid index"):
            r.search("a city", exhaustive=True)
        with pytest.raises(ConfigError, match="several types need"):
            r.search(QUERIES)
        assert r.search(like="Angela Merkel visited [[Paris]].", k=1)[0].doc_id == "d0"


@pytest.mark.parametrize("kwargs, message", [
    (dict(query="a city", like="Paris"), "not both"), (dict(query=[]), "query is empty"),
    (dict(query=["a city", " "]), "query is empty"), (dict(like="[[ ]] x"), "mark is empty"),
    (dict(like="a [[b]] [[c]]"), "mark one"), (dict(like="a [[b"), "unclosed"),
    (dict(query=["t"] * 9), "at most 8 types")])
def test_bad_requests_are_refused_before_the_model_runs(tmp_path, tiny_encoder, kwargs,
                                                        message):
    with create(tmp_path / "idx", tiny_encoder) as r:
        with pytest.raises(ConfigError, match=message):
            r.search(**kwargs)


def test_examples_parse_marked_and_bare_mentions():
    ex = parse_example("They sailed down the [[ Danube ]] to Vienna.")
    assert (ex.text, ex.mention) == ("They sailed down the  Danube  to Vienna.", "Danube")
    assert parse_example("Danube").mention == "Danube"
