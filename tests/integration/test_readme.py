"""The README's Python examples run as written, and the public API they use is importable from
``ner_retriever`` itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
PUBLIC = ("Retriever", "Document", "Span", "Mention", "MentionHit", "SearchResult",
          "ConfigError", "CorpusError", "DuplicateDocumentError", "IndexStateError",
          "NerRetrieverError", "read_corpus", "build_detector", "TransformerEncoder",
          "EncoderConfig", "ProjectionHead", "DenseEncoder", "Index", "FaissStore",
          "FusionConfig", "Entity", "SearchFilter")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_public_api_is_importable_from_the_package():
    import ner_retriever

    missing = [name for name in PUBLIC if not hasattr(ner_retriever, name)]
    assert missing == []
    assert set(PUBLIC) <= set(ner_retriever.__all__)


def test_readme_has_python_examples():
    assert python_blocks()


@pytest.mark.slow  # the examples load the default models
def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
