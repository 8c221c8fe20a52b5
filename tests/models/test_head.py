"""The projection head on its own: shapes, the query offset, save/load bit for bit, the
paper's ``.pth`` format, and clear errors for every broken file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ner_retriever.errors import ConfigError
from ner_retriever.models.head import (CONFIG_NAME, WEIGHTS_NAME, HeadConfig, ProjectionHead,
                                       describe, normalize, per_document, to_index_space)

IN, HIDDEN, OUT = 12, 16, 8


def make_head(**fields) -> ProjectionHead:
    torch.manual_seed(0)
    head = ProjectionHead(HeadConfig(input_dim=IN, hidden_dim=HIDDEN, output_dim=OUT, **fields))
    if head.config.query_bias:  # zeros at init: give the offset a value to see
        torch.nn.init.normal_(head.query_bias)
    return head


def vectors(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, IN)).astype(np.float32)


@pytest.mark.parametrize("fields", [{}, {"residual": True, "skip_bias": True},
                                    {"query_bias": True}])
def test_projects_to_unit_vectors_of_the_output_size(fields):
    out = make_head(**fields).project(vectors())
    assert out.shape == (5, OUT) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_the_query_offset_moves_queries_only():
    head = make_head(query_bias=True)
    x = vectors()
    assert not np.allclose(head.project_queries(x), head.project(x))
    np.testing.assert_array_equal(head.project_queries(x), head.project(x, queries=True))
    plain = make_head()
    np.testing.assert_array_equal(plain.project_queries(x), plain.project(x))


def test_project_runs_in_eval_mode_and_restores_training():
    head = make_head(dropout=0.5)
    head.train()
    x = vectors()
    np.testing.assert_array_equal(head.project(x), head.project(x))  # no dropout noise
    assert head.training


@pytest.mark.parametrize("fields", [{}, {"residual": True, "skip_bias": True, "query_bias": True,
                                         "model": "m", "block": 3, "component": "value",
                                         "query_template": "mentions of {}"}])
def test_save_and_load_are_bit_exact(tmp_path, fields):
    head = make_head(**fields)
    folder = head.save(tmp_path / "head")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    loaded = ProjectionHead.load(folder)
    assert loaded.config == head.config and loaded.checksum() == head.checksum()
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = vectors()
    np.testing.assert_array_equal(loaded.project(x), head.project(x))
    np.testing.assert_array_equal(loaded.project_queries(x), head.project_queries(x))


def test_checksum_follows_the_weights():
    a, b = make_head(), make_head()
    assert a.checksum() == b.checksum() and len(a.checksum()) == 64
    with torch.no_grad():
        b.net[0].weight[0, 0] += 1e-3
    assert a.checksum() != b.checksum()


def test_the_papers_state_dict_loads_with_its_dims(tmp_path):
    head = make_head()
    torch.save(head.state_dict(), tmp_path / "head.pth")
    save_file(head.state_dict(), str(tmp_path / "head.safetensors"))
    for name in ("head.pth", "head.safetensors"):
        loaded = ProjectionHead.load(tmp_path / name)
        assert (loaded.config.input_dim, loaded.config.hidden_dim, loaded.config.output_dim) \
            == (IN, HIDDEN, OUT)
        np.testing.assert_array_equal(loaded.project(vectors()), head.project(vectors()))
    overridden = ProjectionHead.load(tmp_path / "head.pth", model="m", block=2)
    assert (overridden.config.model, overridden.config.block) == ("m", 2)


def test_broken_files_are_clear_errors_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="no such file or directory"):
        ProjectionHead.load(tmp_path / "absent")
    folder = make_head().save(tmp_path / "head")
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "output_dim": OUT + 1}))
    with pytest.raises(ConfigError, match="do not match its config") as err:
        ProjectionHead.load(folder)
    assert str(folder) in str(err.value)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        ProjectionHead.load(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(ConfigError, match=f"must contain {CONFIG_NAME} and {WEIGHTS_NAME}"):
        ProjectionHead.load(folder)
    torch.save({"other.weight": torch.zeros(2, 2)}, tmp_path / "odd.pth")
    with pytest.raises(ConfigError, match="has no 'net.0.weight' tensor"):
        ProjectionHead.load(tmp_path / "odd.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="does not hold a state dict"):
        ProjectionHead.load(tmp_path / "list.pth")


def test_describe_records_checksum_and_config():
    head = make_head(residual=True)
    record = describe(head)
    assert record["checksum"] == head.checksum()
    assert {k: v for k, v in record.items() if k != "checksum"} == head.config.model_dump()
    assert describe(None) is None


def test_index_space_without_a_head_is_plain_normalisation():
    x = vectors()
    x[0] = 0.0  # a zero vector stays zero
    out = to_index_space(None, x)
    np.testing.assert_array_equal(out, normalize(x))
    assert not out[0].any()
    np.testing.assert_allclose(np.linalg.norm(out[1:], axis=1), 1.0, rtol=1e-6)
    head = make_head()
    docs = per_document(head, [x[:2], np.zeros((0, IN), np.float32)], OUT)
    assert docs[0].shape == (2, OUT) and docs[1].shape == (0, OUT)
