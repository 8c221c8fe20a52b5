"""``ner-retriever delete`` and ``compact``: the one-object JSON contract, the text output and
the errors (one line, exit code 1, no traceback)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ner_retriever.cli.main import app
from ner_retriever.indexes.base import store_settings
from ner_retriever.indexes.index import Index
from tests.indexes.test_delete import PER_DOC, build

runner = CliRunner()


def test_delete_then_compact_json_contract(tmp_path):
    path = tmp_path / "idx"
    build(path, store_settings(), n_docs=30).close()
    result = runner.invoke(app, ["delete", str(path), "d1", "d2", "nope", "d1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 2, "missing": ["nope"]}
    again = runner.invoke(app, ["delete", str(path), "d1", "--json"])  # idempotent
    assert json.loads(again.stdout) == {"deleted": 0, "missing": ["d1"]}
    result = runner.invoke(app, ["compact", str(path), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert set(stats) == {"bytes_before", "bytes_after", "rows_before", "rows_after",
                          "documents", "seconds"}
    assert stats["bytes_after"] < stats["bytes_before"]
    assert (stats["rows_before"], stats["rows_after"], stats["documents"]) == \
        (30 * PER_DOC, 28 * PER_DOC, 28)
    with Index.open(path) as index:
        assert len(index) == 28 and index.get_document("d1") is None


def test_text_output_and_errors(tmp_path):
    path = tmp_path / "idx"
    build(path, store_settings(), n_docs=5).close()
    result = runner.invoke(app, ["delete", str(path), "d0", "zz"])
    assert result.exit_code == 0
    assert "deleted 1 document from" in result.stdout and "not in the index: zz" in result.stdout
    assert "MB ->" in runner.invoke(app, ["compact", str(path)]).stdout
    missing = runner.invoke(app, ["delete", str(tmp_path / "none"), "d1"])
    assert missing.exit_code == 1 and "no index at" in missing.stderr
    assert "Traceback" not in missing.output
    with Index.open(path, writable=True):  # another writer holds the lock
        locked = runner.invoke(app, ["compact", str(path)])
    assert locked.exit_code == 1 and "being written by another process" in locked.stderr
