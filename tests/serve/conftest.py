"""Fixtures of the fast HTTP tests: a small index built with the tiny random encoder (no real
model), served in-process (``tiny_app``) or by uvicorn
(``tests.serve.serve_support.live_server``); ``tiny_hybrid`` is the same corpus with gold
mentions and MiniLM document vectors (tests using it are marked slow)."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
from tests.serve.serve_support import TINY_CORPUS, TINY_TOKEN, with_gold_spans

from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.serve.app import create_app
from ner_retriever.serve.settings import ServeSettings


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_encoder) -> dict:
    """A small spaCy-detected index with raw tiny-encoder vectors (no head, no MiniLM)."""
    path = tmp_path_factory.mktemp("tiny-serve") / "index"
    retriever = Retriever.create(path, encoder=tiny_encoder, detector="spacy", head=None,
                                 hybrid=False)
    retriever.add(TINY_CORPUS)
    retriever.close()
    return {"path": path, "encoder": tiny_encoder, "detector": retriever.detector}


@pytest.fixture()
def tiny_app(tiny_index, tmp_path) -> Callable:
    """``tiny_app(**settings)``: the app over a fresh writable copy of the tiny index."""
    def build(**settings):
        path = tmp_path / f"index-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_index["path"], path, ignore=shutil.ignore_patterns("write.lock"))
        retriever = Retriever.open(path, writable=True, encoder=tiny_index["encoder"])
        retriever.detector = tiny_index["detector"]  # spaCy loaded once per session
        return create_app(retriever, ServeSettings(write_token=TINY_TOKEN, **settings),
                          owns_retriever=True)

    return build


@pytest.fixture(scope="session")
def tiny_hybrid(tmp_path_factory, tiny_encoder):
    """TINY_CORPUS with gold mentions on a hybrid index (tiny encoder, no head, MiniLM)."""
    path = tmp_path_factory.mktemp("tiny-hybrid") / "index"
    with Retriever.create(path, encoder=tiny_encoder, detector="gold", head=None) as r:
        r.add([with_gold_spans(d) for d in TINY_CORPUS])
    return path


@pytest.fixture()
def hybrid_app(tiny_hybrid, tiny_index, tmp_path) -> Callable:
    """``hybrid_app(threshold, writable, **settings)``: an app over the hybrid index whose
    exhaustive cut-off is ``threshold`` (low: every document passes); ``writable``: over a
    copy with the write token, documents added through spaCy (gold spans need a corpus)."""
    def build(threshold: float = -10.0, writable: bool = False, **settings):
        path, token = tiny_hybrid, None
        if writable:
            path, token = tmp_path / f"hybrid-{len(list(tmp_path.iterdir()))}", TINY_TOKEN
            shutil.copytree(tiny_hybrid, path, ignore=shutil.ignore_patterns("write.lock"))
        retriever = Retriever.open(path, writable=writable, encoder=tiny_index["encoder"])
        retriever.threshold = threshold
        if writable:
            retriever.detector = tiny_index["detector"]
        return create_app(retriever, ServeSettings(write_token=token, **settings),
                          owns_retriever=True)

    return build
