"""Multi-sentence documents (``evaluate --group N``), type folds and detection precision, on a
tiny CoNLL slice (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ner_retriever.errors import ConfigError
from ner_retriever.evaluation.data import group_sentences, load_eval_set, type_folds
from ner_retriever.evaluation.vectors import detection_quality

# Seven sentences; politician in 0 and 3, city in 1, 3 and 6; 2, 4 and 5 have no mention.
CONLL = "\n\n".join([
    "Angela\tB-politician\nMerkel\tI-politician\nspoke\tO\n.\tO",
    "Paris\tB-city\nis\tO\nbig\tO\n.\tO",
    "Cats\tO\nsleep\tO\n.\tO",
    "Obama\tB-politician\nvisited\tO\nRome\tB-city\n.\tO",
    "Rain\tO\nfell\tO\n.\tO",
    "We\tO\nate\tO\n.\tO",
    "Tokyo\tB-city\nwoke\tO\n.\tO",
]) + "\n"


@pytest.fixture()
def sentences(tmp_path: Path):
    path = tmp_path / "tiny.bio"
    path.write_text(CONLL, encoding="utf-8")
    return path, load_eval_set([path])


def _mentions(eval_set):
    return sorted((d.text[s.start:s.end], s.label) for d in eval_set.docs for s in d.spans)


def test_grouped_documents_keep_every_sentence_span_and_relevance(sentences):
    _, es = sentences
    grouped = group_sentences(es, 3)
    assert len(grouped.docs) == 3  # 3 + 3 + 1 sentences
    assert sum(len(d.spans) for d in grouped.docs) == sum(len(d.spans) for d in es.docs)
    assert _mentions(grouped) == _mentions(es)  # every span still covers its own text
    joined = " ".join(d.text for d in grouped.docs)
    assert all(d.text in joined for d in es.docs)
    for t in es.types:  # relevant exactly when some sentence has a gold mention of t
        expected = [k for k, d in enumerate(grouped.docs) if any(s.label == t for s in d.spans)]
        assert grouped.relevant[t].tolist() == expected
    assert grouped.identity["group"] == 3 and "group" not in es.identity  # its own cache key


def test_grouping_is_seeded_and_one_sentence_is_the_set_itself(sentences):
    _, es = sentences
    first, again = group_sentences(es, 2), group_sentences(es, 2)
    assert [d.text for d in first.docs] == [d.text for d in again.docs]
    other = group_sentences(es, 2, seed=5)
    assert [d.text for d in other.docs] != [d.text for d in first.docs]
    assert group_sentences(es, 1) is es
    everything = group_sentences(es, 50)
    assert len(everything.docs) == 1
    assert all(v.tolist() == [0] for v in everything.relevant.values())
    with pytest.raises(ConfigError, match="at least 1"):
        group_sentences(es, 0)


def test_cli_evaluate_group_ranks_joined_documents(sentences, tmp_path, monkeypatch):
    from ner_retriever.cli.main import app

    path, _ = sentences
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["evaluate", str(path), "--methods", "bm25",
                                      "--group", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 3 and report["types"] == 2
    assert report["settings"]["group"] == 3
    bad = CliRunner().invoke(app, ["evaluate", str(path), "--methods", "bm25", "--group", "0"])
    assert bad.exit_code != 0


def test_type_folds_partition_types_the_same_way_every_time():
    types = [f"t{i}" for i in range(33)]
    folds = type_folds(types, 5, 0)
    assert sorted(t for f in folds for t in f) == sorted(types)
    assert [len(f) for f in folds] == [7, 7, 7, 6, 6]
    assert folds == type_folds(list(reversed(types)), 5, 0)  # input order does not matter
    assert folds != type_folds(types, 5, 1)
    with pytest.raises(ConfigError, match="folds"):
        type_folds(types[:3], 5, 0)


def test_detection_quality_counts_recall_and_precision(sentences):
    _, es = sentences
    gold = es.gold_spans
    spans = [list(s) for s in gold]
    a, b = gold[0][0]
    spans[0] = [(a, b - 2), (b + 1, b + 6)]  # "Angela Mer" overlaps; "spoke" is wrong
    spans[2] = [(0, 4)]  # "Cats": no gold mention in that sentence
    q = detection_quality(es, spans)
    n_gold = sum(len(s) for s in gold)
    assert q["gold"] == n_gold and q["detected"] == n_gold + 2
    assert q["exact"] == pytest.approx((n_gold - 1) / n_gold)
    assert q["overlap"] == 1.0
    assert q["precision_exact"] == pytest.approx((n_gold - 1) / (n_gold + 2))
    assert q["precision_overlap"] == pytest.approx(n_gold / (n_gold + 2))
    assert np.isfinite(q["exact"])
