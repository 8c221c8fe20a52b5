"""Short CI variant of ``benchmarks/soak.py``: a real ``ner-retriever serve`` process on
127.0.0.1 under mixed search/add load for 15 s, then SIGKILL and restart.

Zero 5xx, zero transport errors, zero lost writes (every acknowledged document served before
and after the restart, its vectors searchable), every deliberately bad request a 4xx. The
5-minute run and its figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import pytest

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_soak_short(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import crash_trials
        import soak
    finally:
        sys.path.remove(str(BENCH))
    from ner_retriever.cli.index import run_index

    model, _, _ = crash_trials.make_fixture(tmp_path / "model", n_docs=1)  # tiny Llama
    corpus = tmp_path / "base.jsonl"
    rng = soak.random.Random(0)
    corpus.write_text("".join(json.dumps({"id": f"base-{i}", "text": soak.make_text(
        rng, f"b{i}")}) + "\n" for i in range(30)))
    run_index(corpus, tmp_path / "index", model=str(model), detector="spacy-ents")

    result = soak.run_soak(tmp_path / "index", seconds=15, clients=4, seed=0,
                           workdir=tmp_path, log=lambda _msg: None)
    assert result["5xx"] == 0 and result["transport_errors"] == 0
    assert result["unexpected_count"] == 0, result["unexpected"]
    assert result["acknowledged_documents"] > 0 and result["lost_writes"] == 0
    assert result["served_after_restart"]["documents"] == 30 + result["acknowledged_documents"]
    assert result["not_searchable"] == 0
    assert result["passed"]
    rss = result["rss"]
    assert rss["end_mb"] < rss["after_warmup_mb"] + 200  # no runaway growth in 15 s
