"""The dense document encoder on its own: mean pooling over real tokens only, unit vectors,
batching that does not change a vector, the max length read from a sentence-transformers
folder. Fast tests use a tiny random BERT saved to a folder; one slow test loads MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ner_retriever.models.dense import (DENSE_MAX_LENGTH, DENSE_MODEL, ST_CONFIG, DenseEncoder,
                                        sentence_max_length)

TEXTS = ["Paris", "Angela Merkel visited Paris in the spring of that year.", "a", "Tokyo hosted"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, minilm_tokenizer):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=24,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=48, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("tiny-dense")
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    (folder / ST_CONFIG).write_text(json.dumps({"max_seq_length": 12}))
    return folder


def test_vectors_are_unit_length_with_the_models_width(tiny_folder):
    dense = DenseEncoder(str(tiny_folder))
    assert (dense.dim, dense.max_length) == (24, 12)
    out = dense.encode(TEXTS)
    assert out.shape == (len(TEXTS), 24) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert dense.encode([]).shape == (0, 24)


def test_a_vector_does_not_depend_on_its_batch(tiny_folder):
    dense = DenseEncoder(str(tiny_folder))
    together = dense.encode(TEXTS, batch_size=3)
    alone = np.vstack([dense.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding is masked out


def test_text_past_max_length_is_cut(tiny_folder):
    dense = DenseEncoder(str(tiny_folder), max_length=6)
    head = "one two three four five"
    np.testing.assert_allclose(dense.encode([head + " six seven eight"]),
                               dense.encode([head + " nine ten"]), atol=1e-6)


def test_max_length_comes_from_the_sentence_transformers_config(tmp_path):
    assert sentence_max_length(tmp_path) == DENSE_MAX_LENGTH  # no file
    (tmp_path / ST_CONFIG).write_text('{"max_seq_length": 128}')
    assert sentence_max_length(tmp_path) == 128
    (tmp_path / ST_CONFIG).write_text('{"other": 1}')
    assert sentence_max_length(tmp_path) == DENSE_MAX_LENGTH


@pytest.mark.slow
def test_minilm_places_related_texts_closer():
    dense = DenseEncoder(DENSE_MODEL)
    assert (dense.dim, dense.max_length) == (384, 256)
    a, b, c = dense.encode(["The chancellor met the president.",
                            "The prime minister talked with the head of state.",
                            "Bake the bread for forty minutes."])
    assert a @ b > a @ c + 0.2


def test_query_precision_fp16_is_within_float_tolerance_and_fp32_is_exact(tiny_folder):
    from ner_retriever.errors import ConfigError
    from ner_retriever.models.quantize import quantized_available

    exact = DenseEncoder(str(tiny_folder)).encode(TEXTS)
    np.testing.assert_array_equal(DenseEncoder(str(tiny_folder)).encode_queries(TEXTS), exact)
    if quantized_available(__import__("torch").device("cpu")):
        half = DenseEncoder(str(tiny_folder), query_precision="fp16")
        got = half.encode_queries(TEXTS)
        assert not np.array_equal(got, exact)  # the fp16 copy ran
        np.testing.assert_allclose(got, exact, atol=2e-3)
        np.testing.assert_array_equal(half.encode(TEXTS), exact)  # documents stay fp32
        auto = DenseEncoder(str(tiny_folder), query_precision="auto")
        np.testing.assert_allclose(auto.encode_queries(TEXTS), exact, atol=2e-3)
    with pytest.raises(ConfigError, match="query precision"):
        DenseEncoder(str(tiny_folder), query_precision="bf16")
