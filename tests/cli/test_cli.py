"""The CLI end to end, in-process (typer's runner), on the real default model."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from ner_retriever.cli.main import app

runner = CliRunner()

CORPUS = [
    {"id": "a", "text": "Angela Merkel met Emmanuel Macron in Berlin.", "source": "news"},
    {"id": "b", "text": "The Danube flows through Vienna and Budapest."},
    {"id": "c", "text": "Manchester United signed a striker from Ajax."},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def built_index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    corpus = write_jsonl(tmp / "corpus.jsonl", CORPUS)
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp / "idx")])
    assert result.exit_code == 0, result.output
    return tmp / "idx"


@pytest.mark.slow
def test_search_json_contract(built_index):
    result = runner.invoke(app, ["search", str(built_index), "politician", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"query", "queries", "results"} and data["query"] == "politician"
    assert data["queries"] == ["politician"]
    assert len(data["results"]) == 2
    for r in data["results"]:
        assert set(r) == {"doc_id", "score", "mentions", "snippet"}
        text = next(c["text"] for c in CORPUS if c["id"] == r["doc_id"])
        for m in r["mentions"]:
            assert set(m) == {"start", "end", "text", "score"}
            assert text[m["start"]:m["end"]] == m["text"]


@pytest.mark.slow
def test_search_several_types_an_example_and_everything(built_index):
    def run(*args):
        result = runner.invoke(app, ["search", str(built_index), *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    both = run("politician", "city")
    assert (both["query"], both["queries"]) == ("politician & city", ["politician", "city"])
    assert set(both) == {"query", "queries", "threshold", "results"}
    for r in both["results"]:  # each result names an entity of each type
        assert {m["query"] for m in r["mentions"]} == {"politician", "city"}
    like = run("--like", "They sailed down the [[Rhine]] to Basel.", "-k", "1")
    assert like["queries"] == ["They sailed down the [[Rhine]] to Basel."]
    assert like["results"][0]["doc_id"] == "b"  # the river document
    everything = run("river", "--all", "-k", "1")
    assert everything["threshold"] > 0
    assert all(r["score"] >= everything["threshold"] for r in everything["results"])
    listed = runner.invoke(app, ["entities", str(built_index), "person", "--top", "3",
                                 "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert set(data) == {"query", "threshold", "entities"} and len(data["entities"]) <= 3
    for e in data["entities"]:
        assert set(e) == {"text", "documents", "mentions", "score", "examples"}
        assert e["score"] >= data["threshold"] and set(e["examples"]) <= {"a", "b", "c"}
    table = runner.invoke(app, ["entities", str(built_index), "person"])
    assert table.exit_code == 0 and "entity" in table.stdout
    both_ways = runner.invoke(app, ["search", str(built_index), "city", "--like", "Rhine"])
    assert both_ways.exit_code == 1 and "not both" in both_ways.stderr


@pytest.mark.slow
def test_search_table_and_info(built_index):
    result = runner.invoke(app, ["search", str(built_index), "river"])
    assert result.exit_code == 0 and "river" in result.stdout
    info = runner.invoke(app, ["info", str(built_index), "--json"])
    data = json.loads(info.stdout)
    assert data["documents"] == 3 and data["mentions"] >= 6
    assert (data["model"], data["block"], data["extra_blocks"], data["component"]) == \
        ("gemma3-270m", 15, [7], "value")
    assert data["head"]["query_template"] == "mentions of {}" and data["dim"] == 500
    assert data["detector"]["name"] == "union"  # the default: learned + spacy
    assert [d["name"] for d in data["detector"]["detectors"]] == ["learned", "spacy"]
    assert data["config"]["confidence_weight"] == 0.5
    assert data["hybrid"] == {"model": "minilm-l6", "max_length": 256, "dim": 384}


@pytest.mark.slow
def test_search_modes_and_a_mentions_only_index(built_index, tmp_path):
    hybrid = json.loads(runner.invoke(app, ["search", str(built_index), "politician", "-k", "3",
                                            "--json"]).stdout)["results"]
    plain = json.loads(runner.invoke(app, ["search", str(built_index), "politician", "-k", "3",
                                           "--mode", "mentions", "--json"]).stdout)["results"]
    for r in plain:  # mentions mode: the score is the best mention's cosine
        assert r["score"] == pytest.approx(r["mentions"][0]["score"])
    assert {r["doc_id"] for r in hybrid} == {r["doc_id"] for r in plain} == {"a", "b", "c"}
    once = json.loads(runner.invoke(app, ["search", str(built_index), "politician", "-k", "3",
                                          "--feedback", "0", "--json"]).stdout)["results"]
    assert {r["doc_id"] for r in once} == {"a", "b", "c"}
    assert [r["score"] for r in once] != [r["score"] for r in hybrid]  # feedback moved queries
    bad = runner.invoke(app, ["search", str(built_index), "politician", "--feedback", "-1"])
    assert bad.exit_code == 2 and "feedback" in bad.output
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS[:1])
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "plain"),
                                 "--no-hybrid"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "plain"), "--json"]).stdout)
    assert info["hybrid"] is None
    result = runner.invoke(app, ["search", str(tmp_path / "plain"), "city", "--mode", "hybrid"])
    assert result.exit_code == 1 and "hybrid" in result.output
    # appending cannot switch hybrid on
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "plain"),
                                 "--if-exists", "skip", "--hybrid"])
    assert result.exit_code == 1 and "hybrid" in result.output


@pytest.mark.slow
def test_reindex_same_corpus_needs_if_exists(built_index, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS[:1])
    result = runner.invoke(app, ["index", str(corpus), "--index", str(built_index)])
    assert result.exit_code == 1 and "--if-exists skip" in result.stderr
    result = runner.invoke(app, ["index", str(corpus), "--index", str(built_index),
                                 "--if-exists", "skip"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", str(corpus), "--index", str(built_index),
                                 "--layer", "3"])
    assert result.exit_code == 1 and "was built with" in result.stderr


@pytest.mark.parametrize("content, message", [
    (b'{"id": "1", "text": "Paris."}\n{"id": "2", "text": "  "}\n', "c.jsonl:2"),
    (b'{"id": "1", "text": "Paris."}\n{"text": "Rome."}\n', "c.jsonl:2"),
    (b'{"id": "1", "text": "Paris."}\n{"id": "2", "text": \n', "c.jsonl:2"),
    (b'{"id": "1", "text": "Paris."}\n{"id": "1", "text": "Rome."}\n', "c.jsonl:2"),
    (b'{"id": "1", "text": "Paris \xff."}\n', "c.jsonl:1"),
])
def test_bad_corpus_is_one_line_error_and_no_index(tmp_path, content, message):
    (tmp_path / "c.jsonl").write_bytes(content)
    result = runner.invoke(app, ["index", str(tmp_path / "c.jsonl"), "--index",
                                 str(tmp_path / "idx")])
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "idx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model"], "no such folder"),
    (["--layer", "99"], "out of range"),
    (["--layer", "15+40"], "block 40 is out of range"),
    (["--layer", "15+x"], "numbers joined by '+'"),
])
def test_bad_model_options(tmp_path, args, message):
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS[:1])
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"), *args])
    assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "idx" / "config.json").exists()


def test_unknown_component_is_rejected(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS[:1])
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "i"),
                                 "--component", "attention"])
    assert result.exit_code == 2 and "attention" in result.output


@pytest.mark.slow
def test_empty_query_and_missing_index(built_index, tmp_path):
    result = runner.invoke(app, ["search", str(built_index), "   "])
    assert result.exit_code == 1 and "query is empty" in result.stderr
    result = runner.invoke(app, ["search", str(tmp_path / "nope"), "city"])
    assert result.exit_code == 1 and "no index at" in result.stderr
    result = runner.invoke(app, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no index at" in result.stderr


@pytest.mark.slow
def test_conll_corpus_with_gold_detector(tmp_path):
    (tmp_path / "g.conll").write_text(
        "Angela\tB-person\nMerkel\tI-person\nvisited\tO\nParis\tB-location\n.\tO\n\n"
        "Rome\tB-location\nis\tO\nold\tO\n\n")
    result = runner.invoke(app, ["index", str(tmp_path / "g.conll"), "--index",
                                 str(tmp_path / "idx"), "--detector", "gold"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "idx"), "--json"]).stdout)
    assert (info["documents"], info["mentions"]) == (2, 3)
    # store options are recorded, and appending with other ones is refused
    result = runner.invoke(app, ["index", str(tmp_path / "g.conll"), "--index",
                                 str(tmp_path / "ivf"), "--detector", "gold", "--index-type",
                                 "ivfpq", "--storage", "pq-disk"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "ivf"), "--json"]).stdout)
    assert (info["config"]["index_type"], info["config"]["storage"]) == ("ivfpq", "pq-disk")
    result = runner.invoke(app, ["index", str(tmp_path / "g.conll"), "--index",
                                 str(tmp_path / "ivf"), "--detector", "gold", "--if-exists",
                                 "skip", "--storage", "sq8"])
    assert result.exit_code == 1 and "cannot change when appending" in result.stderr


@pytest.mark.slow
def test_appending_keeps_the_index_detector(tmp_path):
    """Without --detector, appending uses the index's own detector (an index built with an
    earlier default can be resumed); naming another one is refused."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS[:2])
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(corpus), "--index", str(idx), "--detector",
                               "spacy"]).exit_code == 0
    more = write_jsonl(tmp_path / "more.jsonl", CORPUS)
    result = runner.invoke(app, ["index", str(more), "--index", str(idx), "--if-exists", "skip"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(idx), "--json"]).stdout)
    assert info["documents"] == 3 and info["detector"]["name"] == "spacy"
    refused = runner.invoke(app, ["index", str(more), "--index", str(idx), "--if-exists", "skip",
                                  "--detector", "learned"])
    assert refused.exit_code != 0 and "was built with detector" in refused.output


@pytest.mark.slow
def test_demo_rebuilds_a_stale_default_index(tmp_path, monkeypatch):
    """The quick start's job: index the bundled sample and search it. A demo index left by an
    older version that no longer opens is rebuilt at the default place (never elsewhere)."""
    import tempfile

    from ner_retriever.models.head import ProjectionHead
    from ner_retriever.retrieve.retriever import HEAD_DIR

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = tmp_path / "mine"
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS[:1])
    assert runner.invoke(app, ["index", str(corpus), "--index", str(mine)]).exit_code == 0
    head = ProjectionHead.load(mine / HEAD_DIR)  # weights no longer match the recorded ones
    with __import__("torch").no_grad():
        next(head.parameters()).add_(1.0)
    head.save(mine / HEAD_DIR)
    named = runner.invoke(app, ["demo", "--index", str(mine), "-q", "river"])
    assert named.exit_code != 0 and "checksum" in named.output and mine.exists()
    stale = tmp_path / "ner-retriever-demo"
    shutil.copytree(mine, stale)
    result = runner.invoke(app, ["demo", "-q", "river", "-k", "3"])
    assert result.exit_code == 0, result.output
    assert "rebuilding the demo index" in result.output
    info = json.loads(runner.invoke(app, ["info", str(stale), "--json"]).stdout)
    assert info["documents"] == 300 and info["detector"]["name"] == "union"


@pytest.mark.slow
def test_confidence_weight_is_set_at_creation_and_kept(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS[:1])
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(corpus), "--index", str(idx), "--no-hybrid",
                               "--confidence-weight", "0"]).exit_code == 0
    info = json.loads(runner.invoke(app, ["info", str(idx), "--json"]).stdout)
    assert info["config"]["confidence_weight"] == 0.0
    more = write_jsonl(tmp_path / "more.jsonl", CORPUS[:2])
    clash = runner.invoke(app, ["index", str(more), "--index", str(idx), "--if-exists", "skip",
                                "--confidence-weight", "0.5"])
    assert clash.exit_code != 0 and "cannot change when appending" in clash.output
    bad = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "x"),
                              "--confidence-weight", "-1"])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_detect_shows_what_would_be_indexed(tmp_path):
    result = runner.invoke(app, ["detect", "--text", CORPUS[0]["text"]])  # default detector
    assert result.exit_code == 0, result.output
    assert "Berlin (" in result.stdout and "mention(s)" in result.stdout  # with confidences
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS + [{"id": "d"}])  # line 4: no text
    result = runner.invoke(app, ["detect", str(corpus), "--json", "--limit", "2",
                                 "--detector", "spacy"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"]
    for line, row in zip(lines, CORPUS):
        assert all(row["text"][m["start"]:m["end"]] == m["text"] for m in line["mentions"])
        assert all("confidence" not in m for m in line["mentions"])  # spaCy gives none
    assert {"Vienna", "Budapest"} <= {m["text"] for m in lines[1]["mentions"]}
    conll = tmp_path / "g.conll"
    conll.write_text("The\tO\nDanube\tB-river\nflows\tO\n\nAjax\tB-team\n")
    result = runner.invoke(app, ["detect", str(conll), "--json", "--detector", "gold"])
    assert [json.loads(line)["mentions"] for line in result.stdout.splitlines()] == [
        [{"start": 4, "end": 10, "text": "Danube", "label": "river"}],
        [{"start": 0, "end": 4, "text": "Ajax", "label": "team"}]]
    for args, message in [([], "--text"), ([str(corpus), "--text", "x"], "--text"),
                          ([str(corpus), "--detector", "flair"], "flair"),
                          ([str(tmp_path / "none.jsonl")], "none.jsonl"),
                          ([str(corpus), "--detector", "spacy"], "c.jsonl:4")]:
        result = runner.invoke(app, ["detect", *args])
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert "Traceback" not in result.output


@pytest.mark.slow
def test_detect_json_reaches_stdout_when_stderr_is_a_terminal():
    """rich's progress bar on a terminal must not capture the JSON lines printed meanwhile."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from ner_retriever.cli.main import app; app()", "detect",
             "--text", CORPUS[0]["text"], "--detector", "spacy", "--json"],
            stdout=subprocess.PIPE, stderr=follower, timeout=300,
            env={**os.environ, "COLUMNS": "40"})
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    (line,) = proc.stdout.decode().splitlines()
    assert "Berlin" in {m["text"] for m in json.loads(line)["mentions"]}
