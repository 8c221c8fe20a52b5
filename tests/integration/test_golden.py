"""Behaviour pinned across refactors: an index built at 61117af (``tests/data/golden``) opens,
searches exactly as it did then (ids, fused scores and mention offsets to 1e-5) and accepts
appends."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from ner_retriever import Document, Retriever

pytestmark = pytest.mark.slow  # loads SmolLM2 and MiniLM

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
spec = importlib.util.spec_from_file_location("make_fixture", GOLDEN / "make_fixture.py")
make_fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_fixture)


@pytest.fixture()
def golden_index(tmp_path) -> Path:
    path = tmp_path / "index"
    shutil.copytree(GOLDEN / "index", path)
    return path


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        where = (w["query"], w["mode"], w["feedback"])
        assert [r["doc_id"] for r in g["results"]] == [r["doc_id"] for r in w["results"]], where
        for gr, wr in zip(g["results"], w["results"]):
            assert gr["score"] == pytest.approx(wr["score"], abs=1e-5), where
            assert [m[:2] for m in gr["mentions"]] == [m[:2] for m in wr["mentions"]], where
            assert [m[2] for m in gr["mentions"]] == pytest.approx(
                [m[2] for m in wr["mentions"]], abs=1e-5), where


def test_index_from_61117af_searches_identically(golden_index):
    want = json.loads((GOLDEN / "search.json").read_text())
    with Retriever.open(golden_index, precision="fp32") as r:  # int8 queries are not exact
        assert_same(make_fixture.results_json(r), want)


def test_index_from_61117af_accepts_appends(golden_index):
    with Retriever.open(golden_index, writable=True) as r:
        before = len(r.index)
        stats = r.add([Document("new-1", "Barack Obama visited the Danube delta in Romania."),
                       Document("new-2", "The Rolling Stones played in Lisbon.")])
        assert stats.documents == 2 and len(r.index) == before + 2
    with Retriever.open(golden_index) as r:
        ids = [h.doc_id for h in r.search("politician", k=5)]
        assert "new-1" in ids
        assert r.index.get_document("new-2").text.startswith("The Rolling Stones")
