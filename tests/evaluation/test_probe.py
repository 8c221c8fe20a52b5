"""The layer/component probe on a tiny random-initialised Llama (real model code, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.errors import ConfigError
from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.evaluation.evaluate import EvalOptions, evaluate
from ner_retriever.evaluation.probe import draw_heatmap, parse_blocks, run_probe

from tests.evaluation.test_evaluate import CONLL  # noqa: E402  (same tiny corpus)

LAYERS = 3


@pytest.fixture(scope="module")
def tiny_llama(minilm_tokenizer):
    torch.manual_seed(0)
    return tf.LlamaModel(tf.LlamaConfig(
        vocab_size=len(minilm_tokenizer), hidden_size=32, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=256)).eval()


@pytest.fixture()
def conll(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.bio"
    path.write_text(CONLL, encoding="utf-8")
    return path


def test_probe_grid_in_two_forward_passes(tiny_llama, minilm_tokenizer, conll):
    enc = TransformerEncoder(EncoderConfig(model="tiny-llama", block=0), model=tiny_llama,
                             tokenizer=minilm_tokenizer)
    calls = []
    handle = tiny_llama.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        result = run_probe(load_eval_set([conll]), enc, batch_size=32)
    finally:
        handle.remove()
    # One pass over the documents and one over the queries give all 3 x 4 cells.
    assert len(calls) == 2
    assert result["blocks"] == [0, 1, 2]
    assert result["components"] == ["query", "key", "value", "hidden"]
    for component, row in result["grid"].items():
        assert len(row) == LAYERS
        assert all(0.0 <= v <= 1.0 for v in row), (component, row)
    best = result["best"]
    assert best["r_precision"] == max(v for row in result["grid"].values() for v in row)
    assert result["mentions"] == 9 and result["types"] == 3
    assert set(result["per_type"]) == {f"{b}-{c}" for b in range(LAYERS)
                                       for c in result["components"]}


def test_probe_cell_equals_evaluate(tiny_llama, minilm_tokenizer, conll, tmp_path, monkeypatch):
    """A probe cell is the same number ``evaluate`` gives for that block and component."""
    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path / "cache"))
    es = load_eval_set([conll])
    enc = TransformerEncoder(EncoderConfig(model="tiny-llama", block=1, component="key"),
                             model=tiny_llama, tokenizer=minilm_tokenizer)
    grid = run_probe(es, enc, blocks=[1, 2], components=["key", "hidden"])
    assert grid["blocks"] == [1, 2] and set(grid["grid"]) == {"key", "hidden"}
    report = evaluate(es, EvalOptions(methods=["ner-retriever"], block=1, component="key",
                                      cache=False), encoder=enc)
    assert grid["grid"]["key"][0] == pytest.approx(
        report["results"]["ner-retriever"]["r_precision"], abs=1e-4)


def test_parse_blocks():
    assert parse_blocks(None, 4) == [0, 1, 2, 3]
    assert parse_blocks("all", 2) == [0, 1]
    assert parse_blocks("0-2,5,2", 8) == [0, 1, 2, 5]
    with pytest.raises(ConfigError):
        parse_blocks("9", 4)
    with pytest.raises(ConfigError):
        parse_blocks("a-b", 4)


def test_heatmap_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = {"model": "m", "dataset": "d", "documents": 3, "types": 2, "blocks": [0, 1, 2],
              "components": ["value", "hidden"],
              "grid": {"value": [0.1, 0.5, 0.3], "hidden": [0.2, 0.25, 1.0]}}
    path = draw_heatmap(result, tmp_path / "sub" / "grid.png", mark=(1, "value"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_probe(tmp_path, conll, minilm_tokenizer, tiny_llama):
    folder = tmp_path / "tiny-llama"
    tiny_llama.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    from ner_retriever.cli.main import app

    out = tmp_path / "probe.json"
    args = ["probe", str(conll), "--model", str(folder), "--blocks", "0-1",
            "--components", "value,hidden", "-o", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["grid"] == json.loads(out.read_text())["grid"]
    assert list(printed["grid"]) == ["value", "hidden"] and printed["blocks"] == [0, 1]
    assert np.isfinite(printed["grid"]["value"]).all()
    bad = CliRunner().invoke(app, ["probe", str(conll), "--model", str(folder), "--blocks", "7"])
    assert bad.exit_code == 1 and "out of range" in bad.output
