"""Document-level dense vectors: the ``dense`` baseline and the document side of hybrid ranking.

all-MiniLM-L6-v2 (the ``minilm-l6`` packaged model), mean pooling over the document's tokens
(attention-masked), L2-normalised. Loaded with plain ``transformers`` (no
sentence-transformers); any Hugging Face encoder folder or hub id works the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ner_retriever.errors import ConfigError

DENSE_MODEL = "minilm-l6"
DENSE_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers
DENSE_BATCH = 64  # texts per forward pass
MASK_FLOOR = 1e-9  # an all-padding row averages to zero instead of dividing by zero


class DenseEncoder:
    """Mean-pooled sentence embeddings from a Hugging Face encoder folder or hub id."""

    def __init__(self, model: str = DENSE_MODEL, max_length: int = DENSE_MAX_LENGTH,
                 device: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ner_retriever.models.loading import resolve_model

        location, gguf = resolve_model(model)
        if gguf is not None:
            raise ConfigError(f"dense model {model!r}: GGUF models are not supported here")
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
