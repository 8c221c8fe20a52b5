"""Document-level dense vectors: the ``dense`` baseline and the document side of hybrid ranking.

all-MiniLM-L6-v2 (the ``minilm-l6`` packaged model), mean pooling over the document's tokens
(attention-masked), L2-normalised. Loaded with plain ``transformers`` (no
sentence-transformers); any Hugging Face encoder folder or hub id works the same way.
``mpnet-base`` is all-mpnet-base-v2 (the ``dense-mpnet`` evaluation baseline), pooled alike,
from the split zip of the optional ``mpnet`` extra (:mod:`ner_retriever.models.split_zip`).
The token limit is the model folder's ``sentence_bert_config.json`` ``max_seq_length`` (256
for MiniLM, 384 for mpnet), as sentence-transformers truncates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError

DENSE_MODEL = "minilm-l6"
MPNET_MODEL = "mpnet-base"  # all-mpnet-base-v2, from the optional split-zip packages
DENSE_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers
ST_CONFIG = "sentence_bert_config.json"  # where sentence-transformers keeps max_seq_length
DENSE_BATCH = 64  # texts per forward pass
MASK_FLOOR = 1e-9  # an all-padding row averages to zero instead of dividing by zero


def dense_location(model: str) -> Path | str:
    """The folder (or hub id) of a dense model name; ``mpnet-base`` is assembled on first use."""
    from ner_retriever.models.loading import cache_dir, resolve_model

    if model == MPNET_MODEL:
        from ner_retriever.models.split_zip import MPNET, model_folder

        return model_folder(MPNET, cache_dir())
    location, gguf = resolve_model(model)
    if gguf is not None:
        raise ConfigError(f"dense model {model!r}: GGUF models are not supported here")
    return location


def sentence_max_length(location: Path | str) -> int:
    """``max_seq_length`` of a sentence-transformers folder, else DENSE_MAX_LENGTH."""
    path = Path(location) / ST_CONFIG
    if path.is_file():
        try:
            return int(json.loads(path.read_text())["max_seq_length"])
        except (ValueError, KeyError, TypeError):
            pass
    return DENSE_MAX_LENGTH


class DenseEncoder:
    """Mean-pooled sentence embeddings from a Hugging Face encoder folder or hub id."""

    def __init__(self, model: str = DENSE_MODEL, max_length: int | None = None,
                 device: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        location = dense_location(model)
        max_length = max_length or sentence_max_length(location)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModel.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"dense model {model!r} could not be loaded: {exc}") from exc
        self.name = model
        self.max_length = max_length
        self.device = torch.device(device or "cpu")
        self.model.to(self.device, dtype=torch.float32).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = DENSE_BATCH) -> np.ndarray:
        """``(n, dim)`` float32, L2-normalised."""
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=MASK_FLOOR)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return out
