"""Two-block vectors (``EncoderConfig.extra_blocks``, ``--layer 2+1``): one forward pass reads
the same component of several blocks, and every pass (documents, the joint detect+encode pass
resumed or not, the cached-prefix query pass, int8 queries) gives the vectors side by side,
main block first."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ner_retriever.errors import ConfigError
from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.models.quantize import quantized_available
from tests.models.test_encode import SPANS, TEXT, tiny
from tests.models.test_query import QUERIES, document_pass


@pytest.fixture
def two_block(minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer)).eval()
    return TransformerEncoder(EncoderConfig(model="tiny", block="2+1", max_length=24, overlap=8),
                              model=model, tokenizer=minilm_tokenizer)


def test_block_spec_parses_and_is_checked():
    cfg = EncoderConfig(block="15+7")
    assert (cfg.block, cfg.extra_blocks) == (15, (7,))
    assert cfg.identity()["extra_blocks"] == [7]
    assert "extra_blocks" not in EncoderConfig(block=15).identity()  # older records match
    assert EncoderConfig(block="12").block == 12
    for bad in ("15+x", "+", "15,7"):
        with pytest.raises(ValidationError, match="numbers joined by"):
            EncoderConfig(block=bad)
    with pytest.raises(ValidationError, match="distinct"):
        EncoderConfig(block=3, extra_blocks=(1, 1))


def test_extra_blocks_are_checked_against_the_model(minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer)).eval()
    for spec, message in (("2+3", "block 3 is out of range"), ("2+2", "repeat the main block")):
        with pytest.raises(ConfigError, match=message):
            TransformerEncoder(EncoderConfig(model="tiny", block=spec), model=model,
                               tokenizer=minilm_tokenizer)
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=2), model=model,
                             tokenizer=minilm_tokenizer)
    assert enc.config.extra_blocks == () and enc.config.targets == [(2, "value")]


def test_document_vectors_are_the_blocks_side_by_side(two_block):
    assert two_block.config.targets == [(2, "value"), (1, "value")]
    assert two_block.dim == 32  # 16-d values of two blocks
    got = two_block.encode_spans([TEXT], [SPANS])[0]
    main, extra = (t[0] for t in two_block.encode_targets([TEXT], [SPANS], two_block.config.targets))
    np.testing.assert_array_equal(got, np.concatenate([main, extra], axis=1))
    assert not np.allclose(main, extra)


@pytest.mark.parametrize("feature_block", [0, 1])
def test_joint_pass_gives_the_document_vectors(two_block, feature_block):
    """Features at block 0: resumed from it (both vector blocks come later); at block 1 (a
    vector block itself): one pass reads everything."""
    assert two_block._resume_block([(feature_block, "hidden")]) == \
        (0 if feature_block == 0 else None)
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = [TEXT, "nothing to see here", long_text]
    wanted = [[(0, 12), (35, 40)], [],
              [(0, 5), (long_text.index("word40"), long_text.index("word40") + 6)]]
    spans, vectors = two_block.detect_encode(texts, [(feature_block, "hidden")],
                                             lambda idx, _f, _o: [wanted[i] for i in idx])
    assert spans == wanted
    for got, want in zip(vectors, two_block.encode_spans(texts, wanted)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_query_pass_gives_the_document_vectors(two_block):
    two_block.set_query_precision("fp32")
    np.testing.assert_allclose(two_block.encode_queries(QUERIES),
                               document_pass(two_block, QUERIES), atol=1e-5)
    assert len(two_block.query_pass._stable) > 1  # the cached prefix covers both blocks


@pytest.mark.skipif(not quantized_available(__import__("torch").device("cpu")),
                    reason="no fbgemm / x86 quantized engine on this CPU")
def test_int8_queries_keep_the_read_projections_in_fp32(two_block):
    exact = document_pass(two_block, QUERIES)
    two_block.set_query_precision("int8")
    got = two_block.encode_queries(QUERIES)
    assert two_block.query_pass.precision == "int8" and got.shape == exact.shape
    cos = (got * exact).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(exact, axis=1)
    assert cos.min() > 0.9
    quantised = [name for name, m in two_block.query_pass._model.named_modules()
                 if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert quantised and not any(n.endswith(("1.self_attn.v_proj", "2.self_attn.v_proj"))
                                 for n in quantised)
