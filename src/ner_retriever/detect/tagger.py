"""The learned detector's tagger: a small BIO head over the language model's token states, and
the conversions between character spans and BIO tags of subword tokens.

``TaggerHead``         standardise -> Linear -> GELU -> 2 convolutions -> Linear(3): O / B / I
                       per token.  The language model is causal, so a token's state has seen
                       only its left context; the convolutions add the right context ("New"
                       before "York").
``token_labels``       gold character spans -> BIO tags of subword tokens.
``repair_bio``         invalid sequences (``I`` after ``O`` or at the start) -> a new ``B``.
``spans_from_tags``    BIO tags + token offsets -> character spans: leading spaces of byte-level
                       BPE tokens dropped, spans cut inside a word widened to the whole word,
                       edge punctuation trimmed, overlaps merged.
``span_confidences``   how sure the tagger is that a span (any detector's) is a mention.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ner_retriever.detect.base import trim
from ner_retriever.io.weights import load_state, read_folder, save_folder, state_checksum
from ner_retriever.models.loading import DEFAULT_MODEL
from ner_retriever.types import Span

__all__ = [
    "B",
    "CONFIG_NAME",
    "I",
    "IGNORE",
    "O",
    "WEIGHTS_NAME",
    "TaggerConfig",
    "TaggerHead",
    "pad",
    "repair_bio",
    "span_confidences",
    "spans_from_tags",
    "tags_from_probs",
    "token_labels",
]

CONFIG_NAME = "detector.json"
WEIGHTS_NAME = "detector.safetensors"
O, B, I = 0, 1, 2  # noqa: E741 - the BIO tags
IGNORE = -100
# Confidences are clipped to [CONFIDENCE_FLOOR, 1]: a vector scaled by confidence ** w never
# becomes zero.
CONFIDENCE_FLOOR = 1e-6

# --------------------------------------------------------------------------- the head


class TaggerConfig(BaseModel):
    """Architecture, the LM states it reads and the decoding threshold."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    features: list[tuple[int, str]] = Field(default_factory=lambda: [(9, "hidden")])
    prepend_bos: bool = True
    input_dim: int
    proj_dim: int = 192
    context_dim: int = 128
    dropout: float = 0.1
    threshold: float = 0.5  # a token is inside a mention when P(B) + P(I) >= threshold
    training: dict[str, Any] = Field(default_factory=dict)


class TaggerHead(nn.Module):
    """standardise -> Linear -> GELU -> two 1-D convolutions -> Linear(3) over a document's
    token states.  The language model is causal, so a token's state has seen only its left
    context; the convolutions (3 tokens each side) add the right context ("New" before "York").
    Convolutions, not a recurrent layer: a few large operations stay fast on 2 busy cores."""

    def __init__(self, config: TaggerConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.input_dim))
        self.register_buffer("scale", torch.ones(config.input_dim))
        self.proj = nn.Linear(config.input_dim, config.proj_dim)
        self.drop = nn.Dropout(config.dropout)
        self.conv1 = nn.Conv1d(config.proj_dim, config.context_dim, 5, padding=2)
        self.conv2 = nn.Conv1d(config.context_dim, config.context_dim, 3, padding=1)
        self.out = nn.Linear(config.proj_dim + config.context_dim, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, tokens, input_dim)`` right-padded; returns logits ``(b, t, 3)``."""
        return self.context(self.project(x), lengths)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The per-token part (standardise -> Linear -> GELU): ``(..., input_dim)`` ->
        ``(..., proj_dim)``. It needs no neighbours, so it can run where the language model
        runs, and only ``proj_dim`` numbers per token travel from there."""
        return self.drop(nn.functional.gelu(self.proj((x - self.mean) * self.scale)))

    def context(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The rest, over whole documents: ``project``'s output ``(batch, tokens, proj_dim)``,
        right-padded, -> logits ``(b, t, 3)``."""
        positions = torch.arange(h.shape[1], device=h.device)
        mask = (positions[None, :] < lengths[:, None]).unsqueeze(-1).to(h.dtype)
        h = h * mask
        c = nn.functional.gelu(self.conv1(h.transpose(1, 2))) * mask.transpose(1, 2)
        c = nn.functional.gelu(self.conv2(c)).transpose(1, 2)
        return self.out(self.drop(torch.cat([h, c], dim=-1)))

    @torch.inference_mode()
    def probabilities(self, features: Sequence[np.ndarray], batch_size: int = 64,
                      projected: bool = False) -> list[np.ndarray]:
        """Per-document ``(n_tokens, 3)`` softmax probabilities, in eval mode, of the language
        model's states or, with ``projected``, of what ``project`` made of them."""
        was_training = self.training
        self.eval()
        out: list[np.ndarray | None] = [None] * len(features)
        order = sorted(range(len(features)), key=lambda i: len(features[i]))
        for b in range(0, len(order), batch_size):
            idx = [i for i in order[b: b + batch_size] if len(features[i])]
            for i in order[b: b + batch_size]:
                if not len(features[i]):
                    out[i] = np.zeros((0, 3), np.float32)
            if not idx:
                continue
            x, lengths = pad([features[i] for i in idx])
            logits = self.context(x, lengths) if projected else self(x, lengths)
            probs = torch.softmax(logits, dim=-1).numpy()
            for row, i in enumerate(idx):
                out[i] = probs[row, : len(features[i])]
        self.train(was_training)
        return out  # type: ignore[return-value]

    def checksum(self) -> str:
        return state_checksum(self)

    def save(self, path: str | Path) -> Path:
        return save_folder(path, self, self.config, CONFIG_NAME, WEIGHTS_NAME, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> TaggerHead:
        path = Path(path)
        config, state = read_folder(path, TaggerConfig, CONFIG_NAME, WEIGHTS_NAME, "detector")
        head = cls(config)
        load_state(head, {k: v.float() for k, v in state.items()}, path, "detector")
        return head


def pad(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    x = torch.zeros((len(rows), int(lengths.max()), rows[0].shape[-1]), dtype=torch.float32)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.float32))
    return x, lengths


# --------------------------------------------------------------------------- BIO <-> spans


def _core(text: str, start: int, end: int) -> tuple[int, int]:
    """A token's characters without the leading whitespace byte-level BPE glues to it; a
    whitespace-only token keeps its range."""
    s = start
    while s < end and text[s].isspace():
        s += 1
    return (s, end) if s < end else (start, end)


def token_labels(text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[Span],
                 unknown: Sequence[Span] = ()) -> np.ndarray:
    """BIO tags (``O``=0, ``B``=1, ``I``=2) of tokens from gold character spans.

    A token is inside a span when its characters (leading whitespace excluded) overlap it; the
    first such token is ``B``.  ``O`` tokens overlapping an ``unknown`` span get ``IGNORE``."""
    labels = np.zeros(len(offsets), np.int64)
    cores = [_core(text, s, e) for s, e in offsets]
    for span in sorted(spans, key=lambda x: (x.start, x.end)):
        first = True
        for t, (s, e) in enumerate(cores):
            if s < span.end and span.start < e and e > s:
                labels[t] = B if first else I
                first = False
    for span in unknown:
        for t, (s, e) in enumerate(cores):
            if labels[t] == O and s < span.end and span.start < e:
                labels[t] = IGNORE
    return labels


def tags_from_probs(probs: np.ndarray, threshold: float = 0.5) -> list[int]:
    """A token is inside a mention when ``P(B) + P(I) >= threshold``; then ``B`` or ``I``,
    whichever is likelier."""
    if not len(probs):
        return []
    inside = probs[:, B] + probs[:, I] >= threshold
    tags = np.where(inside, np.where(probs[:, B] >= probs[:, I], B, I), O)
    return [int(t) for t in tags]


def span_confidences(offsets: Sequence[tuple[int, int]], probs: np.ndarray,
                     spans: Sequence[Span]) -> list[float]:
    """Per span, the mean ``P(B) + P(I)`` over the tokens covering its characters: how sure
    the tagger is that it is a mention, for its own spans and any other detector's (1 for a
    span no token covers). Linear in tokens + spans (offsets are in text order)."""
    o = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    real = o[:, 1] > o[:, 0]
    o, inside = o[real], (probs[:, B] + probs[:, I])[real]
    ends_so_far = np.maximum.accumulate(o[:, 1]) if len(o) else o[:, 1]
    out = []
    for sp in spans:  # every covering token lies in [lo, hi); the mask drops the others
        lo = int(np.searchsorted(ends_so_far, sp.start, side="right"))
        hi = int(np.searchsorted(o[:, 0], sp.end, side="left"))
        covering = o[lo:hi, 1] > sp.start
        out.append(float(np.clip(inside[lo:hi][covering].mean(), CONFIDENCE_FLOOR, 1.0))
                   if covering.any() else 1.0)
    return out


def repair_bio(tags: Sequence[int]) -> list[int]:
    """Make a BIO sequence valid: an ``I`` that follows ``O`` (or starts) becomes ``B``."""
    out, prev = [], O
    for t in tags:
        t = int(t)
        if t == I and prev == O:
            t = B
        out.append(t)
        prev = t
    return out


def spans_from_tags(text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[int]
                    ) -> list[Span]:
    """Character spans of BIO-tagged subword tokens (the tags are repaired first).

    A span runs from its first token's first non-space character to its last token's end, is
    widened to whole words when a boundary falls inside a word ("Ob|ama" tagged on "Ob" only
    gives "Obama"), loses edge punctuation and quotes (``detect.base.trim``); spans that then
    overlap are merged.  Returns sorted, non-overlapping spans."""
    if len(tags) != len(offsets):
        raise ValueError(f"{len(tags)} tags for {len(offsets)} tokens")
    runs: list[list[int]] = []
    for t, tag in enumerate(repair_bio(tags)):
        if tag == B:
            runs.append([t, t])
        elif tag == I:
            runs[-1][1] = t
    raw: list[tuple[int, int]] = []
    n = len(text)
    for first, last in runs:
        start = _core(text, *offsets[first])[0]
        end = offsets[last][1]
        while start > 0 and start < n and text[start - 1].isalnum() and text[start].isalnum():
            start -= 1
        while 0 < end < n and text[end].isalnum() and text[end - 1].isalnum():
            end += 1
        start, end = trim(text, start, end)
        if end > start:
            raw.append((start, end))
    raw.sort()
    merged: list[list[int]] = []
    for s, e in raw:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [Span(s, e) for s, e in merged]
