"""Document-level dense vectors: the ``dense`` baseline and the document side of hybrid ranking.

all-MiniLM-L6-v2 (the ``minilm-l6`` packaged model), mean pooling over the document's tokens
(attention-masked), L2-normalised. Loaded with plain ``transformers`` (no
sentence-transformers); any Hugging Face encoder folder or hub id works the same way.
``mpnet-base`` is all-mpnet-base-v2 (the ``dense-mpnet`` evaluation baseline), pooled alike,
from the split zip of the optional ``mpnet`` extra (:mod:`ner_retriever.models.split_zip`).
The token limit is the model folder's ``sentence_bert_config.json`` ``max_seq_length`` (256
for MiniLM, 384 for mpnet), as sentence-transformers truncates.

Queries (:meth:`DenseEncoder.encode_queries`) may run through a copy with fp16 weights
(``models.quantize``): on this project's CPU a MiniLM query took 4.4 ms instead of 7.7, within
8e-5 of fp32; documents always run in fp32.
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
PROBE_TEXTS = ("river", "politician")  # what the query precision probe times


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
                 device: str | None = None, query_precision: str = "fp32"):
        """``query_precision``: fp32, or auto / fp16 / int8 = fp16 weights for queries (auto:
        where a probe on first use measures them faster; there is no int8 dense copy)."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ner_retriever.models.quantize import check_precision

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
        self.query_precision = check_precision(query_precision)
        self._query_model = None  # chosen on the first query

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`encode` for short query texts, through the fp16 copy where chosen."""
        if self._query_model is None:
            self._query_model = self._choose_query_model()
        return self._encode(self._query_model, texts, DENSE_BATCH)

    def _choose_query_model(self):
        from ner_retriever.models.quantize import faster, half_copy, quantized_available

        if self.query_precision == "fp32" or not quantized_available(self.device):
            return self.model
        twin = half_copy(self.model)
        if self.query_precision == "auto":
            probe = list(PROBE_TEXTS)
            win, _, _ = faster(lambda: self._encode(self.model, probe, DENSE_BATCH),
                               lambda: self._encode(twin, probe, DENSE_BATCH))
            if not win:
                return self.model
        return twin

    def encode(self, texts: Sequence[str], batch_size: int = DENSE_BATCH) -> np.ndarray:
        """``(n, dim)`` float32, L2-normalised."""
        return self._encode(self.model, texts, batch_size)

    def _encode(self, model, texts: Sequence[str], batch_size: int) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=MASK_FLOOR)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return out
