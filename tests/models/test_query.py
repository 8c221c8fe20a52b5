"""The query pass (models/query.py) on the tiny random Llama: with the template prefix's keys
and values cached it gives the document pass's vectors (the exact path it replaces), alone or
batched; fp16 and int8 weights are a switch (fp32 / fp16 / int8 / auto), deterministic per
query, recorded nowhere in the documents' vectors; an index records the precision its vectors
were made in."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.models.quantize import quantized_available

QUERIES = ["politician", "river", "football club", "musical instrument of the baroque era",
           "a", "mentions"]


def document_pass(encoder, queries):
    """What encode_queries computed before the query pass: the templated text's span."""
    template = encoder.config.query_template
    start = template.index("{}")
    texts = [template.replace("{}", q, 1) for q in queries]
    spans = [[(start, start + len(q))] for q in queries]
    return np.stack([v[0] for v in encoder.encode_spans(texts, spans)])


def test_cached_prefix_pass_equals_the_document_pass(tiny_encoder):
    tiny_encoder.set_query_precision("fp32")
    want = document_pass(tiny_encoder, QUERIES)
    assert len(tiny_encoder.query_pass._stable) > 1  # the prefix really is cached
    np.testing.assert_allclose(tiny_encoder.encode_queries(QUERIES), want, atol=1e-5)
    one_by_one = np.stack([tiny_encoder.encode_queries([q])[0] for q in QUERIES])
    np.testing.assert_allclose(one_by_one, want, atol=1e-5)
    assert tiny_encoder.query_pass.precision == "fp32"


NO_ENGINE = not quantized_available(__import__("torch").device("cpu"))


@pytest.mark.skipif(NO_ENGINE, reason="no fbgemm / x86 quantized engine on this CPU")
def test_fp16_weights_are_within_float_tolerance_and_batch(tiny_encoder):
    exact = document_pass(tiny_encoder, QUERIES)
    try:
        tiny_encoder.set_query_precision("fp16")
        got = tiny_encoder.encode_queries(QUERIES)
        assert tiny_encoder.query_pass.precision == "fp16"
        assert not np.array_equal(got, exact)  # really the fp16 copy
        np.testing.assert_allclose(got, exact, rtol=2e-3, atol=2e-3)
        alone = np.stack([tiny_encoder.encode_queries([q])[0] for q in QUERIES])
        np.testing.assert_allclose(alone, got, atol=1e-5)  # batched: no neighbour dependence
        tiny_encoder.set_query_precision("auto")
        tiny_encoder.encode_queries(QUERIES[:1])
        assert tiny_encoder.query_pass.precision in ("fp32", "fp16")
        fp32_ms, fp16_ms = tiny_encoder.query_pass.probe_ms
        assert fp32_ms > 0 and fp16_ms > 0
    finally:
        tiny_encoder.set_query_precision("fp32")


@pytest.mark.skipif(NO_ENGINE, reason="no fbgemm / x86 quantized engine on this CPU")
def test_int8_is_a_switch_and_each_query_is_embedded_alone(tiny_encoder):
    exact = document_pass(tiny_encoder, QUERIES)
    try:
        tiny_encoder.set_query_precision("int8")
        got = tiny_encoder.encode_queries(QUERIES)
        assert tiny_encoder.query_pass.precision == "int8"
        assert got.shape == exact.shape and np.isfinite(got).all()
        assert not np.allclose(got, exact, atol=1e-6)  # really another computation
        alone = np.stack([tiny_encoder.encode_queries([q])[0] for q in QUERIES])
        np.testing.assert_array_equal(alone, got)  # no dependence on the batch
        cos = (got * exact).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(exact, axis=1)
        assert cos.min() > 0.9
    finally:
        tiny_encoder.set_query_precision("fp32")
    np.testing.assert_allclose(tiny_encoder.encode_queries(QUERIES), exact, atol=1e-5)


def test_bad_precision_is_refused(tiny_encoder):
    with pytest.raises(ConfigError, match="query precision"):
        tiny_encoder.set_query_precision("bf16")


def test_index_records_precision_and_open_switches_it(tmp_path, tiny_encoder):
    from ner_retriever import Document, Retriever
    from ner_retriever.indexes.index import Index
    from ner_retriever.types import Span

    with Retriever.create(tmp_path / "idx", encoder=tiny_encoder, detector="gold",
                          head=None, hybrid=False) as r:
        r.add([Document("a", "Paris is in France.", spans=(Span(0, 5),))])
    assert Index.read_config(tmp_path / "idx").precision == "fp32"
    try:
        with Retriever.open(tmp_path / "idx", encoder=tiny_encoder, precision="fp32") as r:
            assert r.encoder.query_pass.requested == "fp32"
        with pytest.raises(ConfigError, match="query precision"):
            Retriever.open(tmp_path / "idx", encoder=tiny_encoder, precision="fast")
    finally:
        tiny_encoder.set_query_precision("fp32")


EXAMPLES = [("They sailed down the Danube to Vienna.", 21, 27),
            ("Paris is in France.", 0, 5), ("a", 0, 1)]


def test_an_example_mention_is_its_document_pass_vector(tiny_encoder):
    tiny_encoder.set_query_precision("fp32")
    for text, start, end in EXAMPLES:
        want = tiny_encoder.encode_spans([text], [[(start, end)]])[0][0]
        np.testing.assert_array_equal(tiny_encoder.encode_example(text, start, end), want)


@pytest.mark.skipif(NO_ENGINE, reason="no fbgemm / x86 quantized engine on this CPU")
def test_an_int8_example_is_close_to_the_document_pass(tiny_encoder):
    try:
        tiny_encoder.set_query_precision("int8")
        for text, start, end in EXAMPLES:
            exact = tiny_encoder.encode_spans([text], [[(start, end)]])[0][0]
            got = tiny_encoder.encode_example(text, start, end)
            assert not np.allclose(got, exact, atol=1e-6)  # the int8 layers ran
            cos = float(got @ exact / np.linalg.norm(got) / np.linalg.norm(exact))
            assert cos > 0.9
            np.testing.assert_array_equal(tiny_encoder.encode_example(text, start, end), got)
    finally:
        tiny_encoder.set_query_precision("fp32")
