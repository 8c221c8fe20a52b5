from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder, transformer_blocks
from ner_retriever.errors import ConfigError

TEXT = "Barack Obama visited the Louvre in Paris with Michelle."
SPANS = [(0, 12), (25, 31), (35, 40), (46, 54)]


def tiny(kind: str, vocab: int):
    """Tiny randomly initialised models, one per architecture family we support."""
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    if kind == "llama":
        return tf.LlamaModel(tf.LlamaConfig(num_key_value_heads=2, **common))
    if kind == "qwen2":
        return tf.Qwen2Model(tf.Qwen2Config(num_key_value_heads=2, **common))
    if kind == "mistral":
        return tf.MistralModel(tf.MistralConfig(num_key_value_heads=2, **common))
    if kind == "gemma":
        return tf.GemmaModel(tf.GemmaConfig(num_key_value_heads=2, head_dim=8, **common))
    if kind == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4,
                                          n_positions=256))
    if kind == "bert":
        return tf.BertModel(tf.BertConfig(**common))
    raise ValueError(kind)


EXPECTED_DIMS = {"llama": 16, "qwen2": 16, "mistral": 16, "gemma": 16, "gpt2": 32, "bert": 32}


@pytest.mark.parametrize("kind", list(EXPECTED_DIMS))
@pytest.mark.parametrize("component", ["query", "key", "value", "hidden"])
def test_every_architecture_and_component(kind, component, minilm_tokenizer):
    model = tiny(kind, len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model=f"tiny-{kind}", block=1, component=component),
                             model=model, tokenizer=minilm_tokenizer)
    vecs = enc.encode_spans([TEXT, "Paris."], [SPANS, [(0, 5)]])
    assert vecs[0].shape == (4, enc.dim) and vecs[1].shape == (1, enc.dim)
    assert np.isfinite(vecs[0]).all()
    if component in ("key", "value"):
        assert enc.dim == EXPECTED_DIMS[kind]  # grouped-query attention shrinks k/v
    assert enc.encode_queries(["politician"]).shape == (1, enc.dim)


def test_hooked_value_matches_recomputation(minilm_tokenizer):
    """Reference check: v_proj read by the hook equals v_proj(norm(hidden state in))."""
    model = tiny("llama", len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=2, component="value"),
                             model=model, tokenizer=minilm_tokenizer)
    got = enc.encode_spans([TEXT], [SPANS])[0]
    ids = minilm_tokenizer(TEXT, return_offsets_mapping=True)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids["input_ids"]]), output_hidden_states=True)
        block = model.layers[2]
        expected_all = block.self_attn.v_proj(block.input_layernorm(out.hidden_states[2]))[0]
    offsets = ids["offset_mapping"]
    for row, (s, e) in enumerate(SPANS):
        last = max(i for i, (a, b) in enumerate(offsets) if b > a and a < e and b > s)
        np.testing.assert_allclose(got[row], expected_all[last].numpy(), rtol=1e-4, atol=1e-5)


def test_batching_and_padding_do_not_change_vectors(minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=1), model=model,
                             tokenizer=minilm_tokenizer)
    texts = [TEXT, "Paris.", "A much longer sentence about Angela Merkel and the Bundestag."]
    spans = [SPANS, [(0, 5)], [(29, 42), (51, 60)]]
    together = enc.encode_spans(texts, spans, batch_size=3)
    alone = [enc.encode_spans([t], [s])[0] for t, s in zip(texts, spans)]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_long_documents_are_windowed_with_left_context(minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer)).eval()
    cfg = EncoderConfig(model="tiny", block=1, max_length=24, overlap=8)
    small = TransformerEncoder(cfg, model=model, tokenizer=minilm_tokenizer)
    text = " ".join(f"word{i}" for i in range(200)) + " Paris"
    span = (len(text) - 5, len(text))
    vec = small.encode_spans([text], [[span, (0, 5)]])[0]
    assert vec.shape == (2, small.dim) and np.isfinite(vec).all()
    # the window holding the last span starts after the document start
    pieces = list(small._pieces(0, text, [span]))
    ids, items = pieces[0]
    assert len(ids) <= 24 and items[0][2] >= 8


def test_block_out_of_range_and_unknown_component(minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer))
    with pytest.raises(ConfigError, match="out of range"):
        TransformerEncoder(EncoderConfig(model="tiny", block=3), model=model,
                           tokenizer=minilm_tokenizer)
    with pytest.raises(Exception):
        EncoderConfig(component="attention")


def test_empty_query_is_an_error(minilm_tokenizer):
    model = tiny("bert", len(minilm_tokenizer))
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=0), model=model,
                             tokenizer=minilm_tokenizer)
    with pytest.raises(ConfigError, match="empty"):
        enc.encode_queries(["  "])


def test_unknown_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        TransformerEncoder(EncoderConfig(model=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        TransformerEncoder(EncoderConfig(model=str(tmp_path / "empty")))


def test_local_model_folder_loads(tmp_path, minilm_tokenizer):
    model = tiny("llama", len(minilm_tokenizer))
    model.save_pretrained(tmp_path)
    minilm_tokenizer.save_pretrained(tmp_path)
    enc = TransformerEncoder(EncoderConfig(model=str(tmp_path)))
    assert enc.config.block == 1  # middle block by default
    assert enc.encode_queries(["city"]).shape == (1, 16)


@pytest.mark.slow
def test_smollm2_default(smol_encoder):
    assert smol_encoder.config.block == 22 and smol_encoder.dim == 192
    assert len(transformer_blocks(smol_encoder.model)) == 30
    other = "The mayor of Paris met Angela Merkel."
    vecs = smol_encoder.encode_spans([TEXT, other], [SPANS, [(13, 18), (23, 36)]])
    v = np.concatenate(vecs)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = v @ v.T
    paris, paris2, obama, merkel = 2, 4, 0, 5
    assert sims[paris, paris2] > sims[paris, obama]  # same entity, other context: close
    assert sims[obama, merkel] > sims[obama, paris2]  # two politicians beat a city
    again = smol_encoder.encode_spans([TEXT], [SPANS])[0]
    np.testing.assert_array_equal(again, vecs[0])  # deterministic


CAUSAL = {"llama": True, "qwen2": True, "mistral": True, "gemma": True, "gpt2": True,
          "bert": False}


@pytest.mark.parametrize("kind", list(CAUSAL))
def test_causality_is_probed(kind, minilm_tokenizer):
    model = tiny(kind, len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model=f"tiny-{kind}", block=2), model=model,
                             tokenizer=minilm_tokenizer)
    assert enc.causal is CAUSAL[kind]


def _cut_and_full(enc, texts, spans):
    cut = enc.encode_spans(texts, spans)
    enc.causal = False  # the whole window, as a bidirectional model needs
    try:
        full = enc.encode_spans(texts, spans)
    finally:
        enc.causal = True
    return cut, full


def test_causal_windows_stop_at_the_last_span_token(minilm_tokenizer):
    """Cutting a window after its last span token changes no vector, long documents included."""
    model = tiny("llama", len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=1, max_length=24, overlap=8),
                             model=model, tokenizer=minilm_tokenizer)
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = [TEXT, long_text]
    spans = [[(0, 12)], [(0, 5), (long_text.index("word30"), long_text.index("word30") + 6)]]
    (ids, _), = enc._pieces(0, TEXT, spans[0])
    assert len(ids) < len(minilm_tokenizer(TEXT)["input_ids"])  # "Obama" ends it, no [SEP]
    cut, full = _cut_and_full(enc, texts, spans)
    for a, b in zip(cut, full):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_smollm2_cut_windows_give_the_same_vectors(smol_encoder):
    assert smol_encoder.causal
    cut, full = _cut_and_full(smol_encoder, [TEXT], [SPANS[:2]])
    np.testing.assert_allclose(cut[0], full[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", list(CAUSAL))
def test_joint_pass_resumes_after_the_feature_block(kind, minilm_tokenizer):
    """Causal models stop after the detector's block and run the later blocks only for windows
    with a span, cut after it; the spans and vectors are those of ``encode_spans``."""
    model = tiny(kind, len(minilm_tokenizer)).eval()
    enc = TransformerEncoder(EncoderConfig(model=f"tiny-{kind}", block=2, max_length=24,
                                           overlap=8), model=model, tokenizer=minilm_tokenizer)
    assert enc._resume_block([(0, "hidden")]) == (0 if CAUSAL[kind] else None)
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = [TEXT, "nothing to see here", long_text]
    wanted = [[(0, 12), (35, 40)], [], [(0, 5), (long_text.index("word40"),
                                                 long_text.index("word40") + 6)]]
    rows = []
    hook = enc._blocks[2].register_forward_pre_hook(lambda _m, args, kwargs: rows.append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    try:
        spans, vectors = enc.detect_encode(texts, [(0, "hidden")],
                                           lambda idx, _f, _o: [wanted[i] for i in idx])
    finally:
        hook.remove()
    assert spans == wanted
    expected = enc.encode_spans(texts, wanted)
    for got, want in zip(vectors, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if CAUSAL[kind]:  # block 2 saw the windows holding a span only: 1 + 0 + 2 of 1 + 1 + 5
        assert sum(rows) == 3


def test_a_model_that_runs_fewer_blocks_than_it_lists(minilm_tokenizer):
    """``config.num_hidden_layers`` below the length of the block list (a shortened model):
    the blocks that never run are not needed, by the probes either."""
    model = tiny("llama", len(minilm_tokenizer)).eval()
    model.config.num_hidden_layers = 2
    enc = TransformerEncoder(EncoderConfig(model="tiny", block=1), model=model,
                             tokenizer=minilm_tokenizer)
    assert enc.causal and enc.encode_spans([TEXT], [SPANS])[0].shape == (4, enc.dim)
