"""A learned, type-agnostic mention detector on the encoder's own language model.

A small token-classification head (BIO over one label, "mention") reads the hidden states of an
early block of the *same* language model that produces the mention vectors.  The vectors are
read at a later block (SmolLM2: value, block 22), so every block the detector needs is computed
anyway: with :meth:`LearnedDetector.detect_and_encode` one forward pass per window yields both
the spans and their vectors (``TransformerEncoder.detect_encode``).

Pieces
------
``TaggerHead``         standardise -> Linear -> GELU -> 2 convolutions -> Linear(3): O / B / I
                       per token.  The language model is causal, so a token's state has seen
                       only its left context; the convolutions add the right context ("New"
                       before "York").
``token_labels``       gold character spans -> BIO tags of subword tokens.
``repair_bio``         invalid sequences (``I`` after ``O`` or at the start) -> a new ``B``.
``spans_from_tags``    BIO tags + token offsets -> character spans: leading spaces of byte-level
                       BPE tokens dropped, spans cut inside a word widened to the whole word,
                       edge punctuation trimmed, overlaps merged.
``LearnedDetector``    the ``Detector`` (name ``"learned"``); the packaged weights for
                       ``smollm2-135m`` live in ``data/detectors/smollm2-135m/``.
``JointUnionDetector`` a ``UnionDetector`` with a learned member that still runs one pass.
``train_detector``     ``ner-retriever train-detector``: gold spans of training splits, every
                       type collapsed to "mention"; hidden states cached on disk so epochs (and
                       reruns) do not rerun the language model.

Partial annotation.  Datasets label only their own type inventory: Few-NERD's INTER training
sentences, for instance, tag athletes, cars or sports events (test types) as ``O``.  Trained
naively the detector would learn to skip exactly the kinds of names it will be asked to find.
So an ``O`` token that a helper detector (default: spaCy's entities, ``spacy-ents``) places
inside a name is *unknown* during training (no loss), not a negative.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ner_retriever.detect.base import UnionDetector, _trim, match_spans, resolve_overlaps
from ner_retriever.errors import ConfigError
from ner_retriever.models.loading import DEFAULT_MODEL
from ner_retriever.types import Document, Span
from ner_retriever.io.weights import load_state, read_folder, save_folder, state_checksum

__all__ = [
    "CONFIG_NAME",
    "EVALUATION_FILES",
    "WEIGHTS_NAME",
    "JointUnionDetector",
    "LearnedDetector",
    "TaggerConfig",
    "TaggerHead",
    "TrainDetectorConfig",
    "packaged_detector_path",
    "register_encoder",
    "repair_bio",
    "spans_from_tags",
    "tags_from_probs",
    "token_labels",
    "train_detector",
]

CONFIG_NAME = "detector.json"
WEIGHTS_NAME = "detector.safetensors"
O, B, I = 0, 1, 2  # noqa: E741 - the BIO tags
IGNORE = -100
FEATURE_CACHE_VERSION = 1
# Evaluation splits of the datasets in ../shared/data: never train on them.
EVALUATION_FILES = frozenset({"big_test.txt", "en-dev.conll", "emerging.test.annotated",
                              "emerging.test.conll"})


def packaged_detector_path(model: str = DEFAULT_MODEL) -> Path:
    """Folder of the detector weights shipped for a packaged model alias."""
    folder = resources.files("ner_retriever") / "data" / "detectors" / model
    return Path(str(folder))


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
            x, lengths = _pad([features[i] for i in idx])
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


def _pad(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
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
        out.append(float(np.clip(inside[lo:hi][covering].mean(), 1e-6, 1.0))
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
    gives "Obama"), loses edge punctuation and quotes (``detect._trim``); spans that then
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
        start, end = _trim(text, start, end)
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


# --------------------------------------------------------------------------- the detector

_ENCODERS: dict[tuple[str, bool], Any] = {}


def register_encoder(encoder: Any) -> None:
    """Let learned detectors run on an already-loaded ``TransformerEncoder`` of the same model
    instead of loading their own copy (``detect_and_encode`` registers the encoder it gets)."""
    cfg = getattr(encoder, "config", None)
    if cfg is not None and hasattr(encoder, "detect_encode"):
        _ENCODERS.setdefault((cfg.model, cfg.prepend_bos), encoder)


def _encoder_for(model: str, prepend_bos: bool):
    """One ``TransformerEncoder`` per model for detection on its own (loaded once)."""
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    key = (model, prepend_bos)
    if key not in _ENCODERS:
        _ENCODERS[key] = TransformerEncoder(EncoderConfig(model=model, prepend_bos=prepend_bos))
    return _ENCODERS[key]


class LearnedDetector:
    """Type-agnostic BIO tagger on the language model's early-block states.

    ``path`` is a folder with ``detector.json`` + ``detector.safetensors`` (default: the weights
    shipped for ``smollm2-135m``); ``threshold`` overrides the one chosen at training time
    (lower finds more, less precisely).  ``detect`` runs the language model up to the feature
    block only; ``detect_and_encode`` shares the pass with the encoder."""

    name = "learned"

    def __init__(self, path: str | Path | None = None, threshold: float | None = None,
                 batch_size: int = 16) -> None:
        # absolute, so an index stores a config that works from any working directory
        # (not resolved: a link to the current weights stays a link)
        self.path = None if path is None else str(Path(path).expanduser().absolute())
        folder = packaged_detector_path() if self.path is None else Path(self.path)
        self.head = TaggerHead.load(folder)
        self.tagger = self.head.config
        if threshold is not None and not (isinstance(threshold, (int, float))
                                          and 0.0 < float(threshold) < 1.0):
            raise ConfigError(f"detector threshold must be between 0 and 1, got {threshold!r}")
        self.threshold = float(threshold) if threshold is not None else self.tagger.threshold
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self._checksum = self.head.checksum()[:16]
        self._heads: dict[torch.device, TaggerHead] = {}  # a copy per device the LM runs on

    def __repr__(self) -> str:
        return f"LearnedDetector(path={self.path!r}, threshold={self.threshold})"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "model": self.tagger.model,
                "features": [list(f) for f in self.tagger.features],
                "threshold": self.threshold, "checksum": self._checksum}

    @property
    def features(self) -> list[tuple[int, str]]:
        return [tuple(f) for f in self.tagger.features]  # type: ignore[misc]

    @torch.inference_mode()
    def _project(self, x: torch.Tensor, _lengths: torch.Tensor) -> torch.Tensor:
        """``token_head`` for ``detect_encode``: the tagger's per-token part, run on the
        language model's device (a GPU then sends ``proj_dim`` numbers per token to the CPU,
        not the token's state); ``_decider`` runs the rest on whole documents."""
        head = self._heads.get(x.device)
        if head is None:
            head = self._heads[x.device] = copy.deepcopy(self.head).to(x.device).eval()
        return head.project(x.float())

    def _decider(self, texts: Sequence[str], others: list[list[list[Span]] | None] | None = None,
                 scores: dict[tuple[int, int, int], float] | None = None):
        """``decide`` for ``detect_encode`` with ``token_head=self._project`` (it gets the
        projected states): this detector's spans, merged with ``others`` (per
        union member its spans per document, ``None`` where these go; earlier members win on
        overlap), each span's confidence recorded in ``scores[(doc, start, end)]``."""
        scores = {} if scores is None else scores
        margins: dict[tuple[int, int, int], int] = {}

        def decide(doc_idx, projected, offs):
            out = []
            if any(r.shape[-1] != self.tagger.proj_dim for r in projected):
                raise ValueError("the learned detector's decide needs detect_encode("
                                 "token_head=self._project): projected states, not raw ones")
            probs = self.head.probabilities(projected, projected=True)
            for i, o, p in zip(doc_idx, offs, probs, strict=True):
                spans = spans_from_tags(texts[i], o, tags_from_probs(p, self.threshold))
                if others is not None:
                    spans = resolve_overlaps([spans if g is None else g[i] for g in others])
                # a long document comes in pieces (overlapping runs of windows): score a span
                # in the piece where it sits farthest from the edges, where its tokens have the
                # states of a whole-document pass; a labelled (gold) span is certain: no score
                lo, hi = (o[0][0], o[-1][1]) if len(o) else (0, 0)
                held = [sp for sp in spans if sp.label is None and lo <= sp.start
                        and sp.end <= hi]
                for sp, c in zip(held, span_confidences(o, p, held), strict=True):
                    key, margin = (i, sp.start, sp.end), min(sp.start - lo, hi - sp.end)
                    if margin >= margins.get(key, -1):
                        scores[key], margins[key] = c, margin
                out.append([(sp.start, sp.end) for sp in spans])
            return out
        return decide

    @staticmethod
    def _spans(raw, others, scores) -> list[list[Span]]:
        """Spans with their confidence, keeping the other members' labels (a gold member's)."""
        out = []
        for i, sp in enumerate(raw):
            known: dict[tuple[int, int], Span] = {}
            for g in others or ():  # the earlier member's span (and label) wins
                for x in g[i] if g is not None else ():
                    known.setdefault((x.start, x.end), x)
            out.append([replace(known.get((s, e)) or Span(s, e), confidence=scores.get((i, s, e)))
                        for s, e in sp])
        return out

    def supports(self, encoder: Any) -> bool:
        """Can ``encoder`` share its forward pass with this detector?"""
        cfg = getattr(encoder, "config", None)
        return (hasattr(encoder, "detect_encode") and cfg is not None
                and cfg.model == self.tagger.model and cfg.prepend_bos == self.tagger.prepend_bos)

    def detect(self, docs: Sequence[Document],
               others: list[list[list[Span]] | None] | None = None) -> list[list[Span]]:
        """Spans with confidences; with ``others`` (see ``_decider``) the merged union's."""
        docs = list(docs)
        if not docs:
            return []
        encoder = _encoder_for(self.tagger.model, self.tagger.prepend_bos)
        return self._pass([d.text for d in docs], encoder, others, vectors=False)[0]

    def _pass(self, texts: list[str], encoder: Any,
              others: list[list[list[Span]] | None] | None, vectors: bool
              ) -> tuple[list[list[Span]], list[np.ndarray] | None]:
        """One ``detect_encode`` pass: spans with confidences (and, with ``vectors``, theirs)."""
        scores: dict[tuple[int, int, int], float] = {}
        raw, vecs = encoder.detect_encode(texts, self.features,
                                          self._decider(texts, others, scores),
                                          vectors=vectors, batch_size=self.batch_size,
                                          token_head=self._project)
        return self._spans(raw, others, scores), vecs

    def detect_and_encode(self, docs: Sequence[Document], encoder: Any,
                          others: list[list[list[Span]] | None] | None = None
                          ) -> tuple[list[list[Span]], list[np.ndarray]]:
        """Spans and their raw vectors from one forward pass (when ``supports(encoder)``).

        ``others`` (used by ``JointUnionDetector``): per union member, its spans per document,
        with ``None`` where this detector's spans go; overlaps resolved in that order."""
        docs = list(docs)
        texts = [d.text for d in docs]
        if not self.supports(encoder):
            spans = self.detect(docs, others)
            vectors = encoder.encode_spans(texts, [[(s.start, s.end) for s in sp]
                                                   for sp in spans])
            return spans, vectors
        register_encoder(encoder)
        return self._pass(texts, encoder, others, vectors=True)  # type: ignore[return-value]


class JointUnionDetector(UnionDetector):
    """A union with a learned member: the other members detect first, then one forward pass
    gives the learned spans, the union (earlier members win on overlap) and all vectors, and
    the tagger scores every span of the union (the other members' too)."""

    def _parts(self, docs: list[Document]):
        learned = next((d for d in self.detectors if isinstance(d, LearnedDetector)), None)
        others = None if learned is None else [
            None if d is learned else d.detect(docs) for d in self.detectors]
        return learned, others

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        docs = list(docs)
        learned, others = self._parts(docs)
        return super().detect(docs) if learned is None else learned.detect(docs, others)

    def detect_and_encode(self, docs: Sequence[Document], encoder: Any
                          ) -> tuple[list[list[Span]], list[np.ndarray]]:
        docs = list(docs)
        learned, others = self._parts(docs)
        if learned is None:  # e.g. a union nested in a union: no shared pass
            spans = super().detect(docs)
            return spans, encoder.encode_spans([d.text for d in docs],
                                               [[(s.start, s.end) for s in sp] for sp in spans])
        return learned.detect_and_encode(docs, encoder, others)


_LEARNED_KEYS = {"path", "threshold", "batch_size", "model", "features", "checksum"}


def build_learned(cfg: dict[str, Any]) -> LearnedDetector:
    """``build_detector`` hook: a ``LearnedDetector`` from the options of its ``config()``.

    ``model``, ``features`` and ``checksum`` are recorded for information; the weights found at
    ``path`` (or the packaged ones) are what runs, as with the spaCy detector's rules."""
    unknown = set(cfg) - _LEARNED_KEYS
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for detector 'learned'; valid: "
                          f"{sorted(_LEARNED_KEYS)}")
    return LearnedDetector(path=cfg.get("path"), threshold=cfg.get("threshold"),
                           batch_size=cfg.get("batch_size", 16))


# --------------------------------------------------------------------------- training


def default_feature_block(n_blocks: int) -> int:
    """The block at 30% of a model's depth: block 9 of SmolLM2-135M's 30, the block chosen on
    held-out loss (docs/DETECTION.md, "Block and sizes"); 9 of LLaMA-3.1-8B's 32, 0 of 2."""
    return n_blocks * 3 // 10


class TrainDetectorConfig(BaseModel):
    """Options of ``ner-retriever train-detector``."""

    model_config = ConfigDict(extra="forbid")

    # None: the output of ``default_feature_block`` of the model trained on
    features: list[tuple[int, str]] | None = None
    proj_dim: int = 192
    context_dim: int = 128
    dropout: float = 0.3
    max_sentences: int | None = Field(default=1000, description="seeded sample per file")
    heldout: float = Field(default=0.1, ge=0.0, lt=1.0,
                           description="share of each file's sample kept for threshold choice")
    mask_detector: str | None = "spacy-ents"
    epochs: int = Field(default=4, ge=1)
    lr: float = 2e-3
    batch_size: int = Field(default=32, ge=1)
    target_recall: float = Field(default=0.93, gt=0.0, le=1.0)
    # A threshold chosen elsewhere (end to end on validation data, docs/DETECTION.md) instead
    # of the held-out recall rule; the held-out figures are still reported at it.
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    seed: int = 0
    lm_batch_size: int = 16


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_training_docs(files: Sequence[Path], cfg: TrainDetectorConfig, allow_eval: bool
                        ) -> tuple[list[Document], list[int], list[bool], list[dict]]:
    """Seeded sample of each file: docs, their file index, held-out flags, file identities."""
    from ner_retriever.io.corpus import file_digest, read_conll
    from ner_retriever.errors import CorpusError

    docs: list[Document] = []
    file_of: list[int] = []
    heldout: list[bool] = []
    identity = []
    for f_idx, path in enumerate(files):
        path = Path(path)
        if path.name in EVALUATION_FILES and not allow_eval:
            raise ConfigError(f"{path} is an evaluation split; train on training splits only "
                              "(--allow-eval-files overrides)")
        if not path.is_file():
            raise CorpusError("no such file", str(path))
        identity.append({"file": path.name, "sha256": file_digest(path)})
        file_docs = [d for d in read_conll(path) if d.text.strip()]
        rng = random.Random(f"{cfg.seed}:{path.name}")
        idx = list(range(len(file_docs)))
        if cfg.max_sentences is not None and cfg.max_sentences < len(idx):
            idx = sorted(rng.sample(idx, cfg.max_sentences))
        n_held = int(round(len(idx) * cfg.heldout)) if len(idx) > 1 else 0
        held = set(rng.sample(idx, n_held)) if n_held else set()
        for i in idx:
            docs.append(file_docs[i])
            file_of.append(f_idx)
            heldout.append(i in held)
    if not docs:
        raise ConfigError("no training sentences")
    return docs, file_of, heldout, identity


def _cached_features(docs: Sequence[Document], encoder, features, key: dict, cache_root,
                     batch_size: int, log: Callable[[str], None]
                     ) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
    """Per-document float16 token states and offsets, from ``<cache>/detector/`` if present."""
    path = None
    if cache_root is not None:
        path = Path(cache_root) / "detector" / f"features-{_digest(key)}.npz"
        if path.is_file():
            data = np.load(path)
            cuts = np.cumsum(data["lengths"])[:-1]
            feats = np.split(data["features"], cuts)
            offs = [[tuple(map(int, o)) for o in chunk]
                    for chunk in np.split(data["offsets"], cuts)]
            log(f"hidden states from cache {path}")
            return feats, offs
    feats: list[np.ndarray] = []
    offs: list[list[tuple[int, int]]] = []

    def collect(_idx, f, o):
        feats.extend(x.astype(np.float16) for x in f)
        offs.extend(list(map(tuple, x)) for x in o)
        return [[] for _ in f]

    t0 = time.perf_counter()
    texts = [d.text for d in docs]
    step = 512
    for b in range(0, len(texts), step):
        encoder.detect_encode(texts[b: b + step], features, collect, vectors=False,
                              batch_size=batch_size)
        done = min(b + step, len(texts))
        rate = done / max(time.perf_counter() - t0, 1e-9)
        log(f"hidden states: {done}/{len(texts)} sentences ({rate:.1f}/s)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        dim = feats[0].shape[-1] if feats else 0
        np.savez(tmp, features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float16),
                 offsets=np.array([o for x in offs for o in x], np.int64).reshape(-1, 2),
                 lengths=np.array([len(x) for x in feats], np.int64))
        tmp.replace(path)
    return feats, offs


def _span_scores(texts, offsets, probs, gold, threshold) -> dict[str, float]:
    n_pred = n_gold = tp_pred_e = tp_gold_e = tp_pred_o = tp_gold_o = 0
    for t, o, p, g in zip(texts, offsets, probs, gold, strict=True):
        pred = spans_from_tags(t, o, tags_from_probs(p, threshold))
        n_pred += len(pred)
        n_gold += len(g)
        a, b = match_spans(pred, g, "exact")
        tp_pred_e, tp_gold_e = tp_pred_e + a, tp_gold_e + b
        a, b = match_spans(pred, g, "overlap")
        tp_pred_o, tp_gold_o = tp_pred_o + a, tp_gold_o + b
    return {"R_exact": tp_gold_e / max(n_gold, 1), "P_exact": tp_pred_e / max(n_pred, 1),
            "R_overlap": tp_gold_o / max(n_gold, 1), "P_overlap": tp_pred_o / max(n_pred, 1),
            "gold": n_gold, "pred": n_pred}


def fit_head(tagger: TaggerConfig, feats: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             train_idx: Sequence[int], held_idx: Sequence[int], cfg: TrainDetectorConfig,
             log: Callable[[str], None] = lambda m: None) -> tuple[TaggerHead, int, list[dict]]:
    """Train a head on cached token states; keep the epoch with the lowest held-out loss.

    Runs on one thread: the head's operations are small, and on busy shared cores a thread
    pool waiting for its second core made epochs ten times slower in our measurements."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log)
    finally:
        torch.set_num_threads(threads)


def _fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log):
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    stacked = np.concatenate([feats[i] for i in train_idx]).astype(np.float32)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    del stacked
    head = TaggerHead(tagger)
    head.mean.copy_(torch.from_numpy(mean))
    head.scale.copy_(torch.from_numpy(1.0 / np.maximum(std, 1e-3)))
    optim = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = cfg.epochs * math.ceil(len(train_idx) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=cfg.lr, total_steps=max(steps, 1),
                                                pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def batches(indices: Sequence[int], shuffle: bool):
        # buckets of similar length keep padding small
        order = sorted(indices, key=lambda i: len(feats[i]))
        chunks = [order[b: b + cfg.batch_size] for b in range(0, len(order), cfg.batch_size)]
        if shuffle:
            rng.shuffle(chunks)
        for chunk in chunks:
            x, lengths = _pad([feats[i] for i in chunk])
            y = torch.full(x.shape[:2], IGNORE, dtype=torch.long)
            for row, i in enumerate(chunk):
                y[row, : len(labels[i])] = torch.from_numpy(labels[i])
            yield x, lengths, y

    def held_loss() -> float:
        head.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for x, lengths, y in batches(held_idx, False):
                n = int((y != IGNORE).sum())
                if n:
                    total += float(loss_fn(head(x, lengths).reshape(-1, 3), y.reshape(-1))) * n
                    count += n
        head.train()
        return total / max(count, 1)

    best_state, best_loss, best_epoch, history = None, float("inf"), 0, []
    head.train()
    for epoch in range(1, cfg.epochs + 1):
        t0, running, seen = time.perf_counter(), 0.0, 0
        for x, lengths, y in batches(train_idx, True):
            loss = loss_fn(head(x, lengths).reshape(-1, 3), y.reshape(-1))
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optim.step()
            sched.step()
            running += float(loss.detach()) * len(lengths)
            seen += len(lengths)
        val = held_loss() if held_idx else float("nan")
        secs = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": round(running / max(seen, 1), 5),
                        "heldout_loss": round(val, 5), "seconds": round(secs, 1)})
        log(f"epoch {epoch}: train loss {running / max(seen, 1):.4f}, held-out loss {val:.4f} "
            f"({secs:.1f} s)")
        if not held_idx or val < best_loss:
            best_loss, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.eval()
    return head, best_epoch, history


THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.05, 0.951, 0.05))


def choose_threshold(head: TaggerHead, docs: Sequence[Document], feats: Sequence[np.ndarray],
                     offs: Sequence[Sequence[tuple[int, int]]], groups: dict[str, list[int]],
                     target_recall: float, fixed: float | None = None
                     ) -> tuple[float, dict[str, dict[str, float]], dict[str, dict]]:
    """The highest (most precise) threshold whose overlap recall reaches ``target_recall`` in
    every group of held-out documents; else the one with the best worst-group recall; or
    ``fixed`` when given. Returns it, the per-group scores at that threshold and the whole
    curve (per threshold and group: overlap recall, overlap precision)."""
    probs = dict(zip([i for g in groups.values() for i in g],
                     head.probabilities([feats[i] for g in groups.values() for i in g])))
    grid = sorted(set(THRESHOLDS) | ({fixed} if fixed is not None else set()))
    table = {th: {name: _span_scores([docs[i].text for i in rows], [offs[i] for i in rows],
                                     [probs[i] for i in rows], [docs[i].spans or () for i in rows],
                                     th)
                  for name, rows in groups.items()} for th in grid}
    if fixed is not None:
        chosen = fixed
    else:
        worst = {th: min(v["R_overlap"] for v in table[th].values()) for th in THRESHOLDS}
        ok = [th for th in THRESHOLDS if worst[th] >= target_recall]
        chosen = max(ok) if ok else max(THRESHOLDS, key=lambda th: (worst[th], -th))
    curve = {str(th): {name: [round(v["R_overlap"], 3), round(v["P_overlap"], 3)]
                       for name, v in table[th].items()} for th in THRESHOLDS}
    return chosen, table[chosen], curve


def train_detector(files: Sequence[str | Path], out_dir: str | Path | None,
                   model: str | None = None, config: TrainDetectorConfig | None = None,
                   allow_eval: bool = False, cache: bool = True,
                   log: Callable[[str], None] = lambda m: None,
                   encoder: Any = None) -> dict[str, Any]:
    """Train a ``TaggerHead`` on gold spans of CoNLL/BIO training files (all types ->
    "mention"), choose the decoding threshold on held-out sentences, save to ``out_dir``.

    Returns the training summary (also stored in ``detector.json`` under ``training``)."""
    from ner_retriever.detect.base import build_detector
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.models.loading import cache_dir

    cfg = config or TrainDetectorConfig()
    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("give at least one CoNLL/BIO training file")
    t_start = time.perf_counter()
    docs, file_of, held, identity = _load_training_docs(files, cfg, allow_eval)
    log(f"{len(docs)} sentences from {len(files)} files ({sum(held)} held out)")

    model_name = model or (encoder.config.model if encoder is not None else DEFAULT_MODEL)
    if encoder is None or encoder.config.model != model_name:
        encoder = TransformerEncoder(EncoderConfig(model=model_name))
    features = ([tuple(f) for f in cfg.features] if cfg.features is not None
                else [(default_feature_block(encoder.n_blocks), "hidden")])
    cfg = cfg.model_copy(update={"features": features})  # the summary records the block used
    key = {"v": FEATURE_CACHE_VERSION, "files": identity, "seed": cfg.seed,
           "max_sentences": cfg.max_sentences, "model": model_name, "features": features,
           "bos": encoder.config.prepend_bos, "max_length": encoder.config.max_length,
           "overlap": encoder.config.overlap, "n": len(docs)}
    from ner_retriever.models.loading import resolve_model

    try:
        location, gguf = resolve_model(model_name)
        key["model_files"] = str(location) + (f"/{gguf}" if gguf else "")
    except ConfigError:
        pass
    cache_root = cache_dir() if cache else None
    feats, offs = _cached_features(docs, encoder, features, key, cache_root, cfg.lm_batch_size,
                                   log)
    t_lm = time.perf_counter() - t_start

    unknown: list[list[Span]] = [[] for _ in docs]
    if cfg.mask_detector:
        helper = build_detector(cfg.mask_detector)
        mkey = {"v": 1, "data": key, "detector": helper.config()}
        mpath = None if cache_root is None else \
            Path(cache_root) / "detector" / f"mask-{_digest(mkey)}.json"
        if mpath is not None and mpath.is_file():
            unknown = [[Span(s, e) for s, e in doc] for doc in json.loads(mpath.read_text())]
        else:
            unknown = helper.detect([Document(d.id, d.text) for d in docs])
            if mpath is not None:
                mpath.parent.mkdir(parents=True, exist_ok=True)
                mpath.write_text(json.dumps([[(s.start, s.end) for s in sp] for sp in unknown]))
    labels = [token_labels(d.text, o, d.spans or (), u)
              for d, o, u in zip(docs, offs, unknown, strict=True)]
    n_ignored = int(sum((lab == IGNORE).sum() for lab in labels))
    n_tokens = int(sum(len(lab) for lab in labels))
    log(f"{n_tokens} tokens, {n_ignored} O tokens inside {cfg.mask_detector or '-'} spans ignored")

    train_idx = [i for i in range(len(docs)) if not held[i] and len(feats[i])]
    held_idx = [i for i in range(len(docs)) if held[i] and len(feats[i])]
    if not train_idx:
        raise ConfigError("no training sentences left after holding some out")
    tagger = TaggerConfig(model=model_name, features=features,
                          prepend_bos=encoder.config.prepend_bos, input_dim=feats[0].shape[-1],
                          proj_dim=cfg.proj_dim, context_dim=cfg.context_dim,
                          dropout=cfg.dropout)
    head, best_epoch, history = fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log)
    chosen, per_file, curve = cfg.threshold or 0.5, {}, {}
    if held_idx:
        groups: dict[str, list[int]] = {}
        for i in held_idx:
            groups.setdefault(files[file_of[i]].name, []).append(i)
        chosen, per_file, curve = choose_threshold(head, docs, feats, offs, groups,
                                                   cfg.target_recall, cfg.threshold)
        for name, v in per_file.items():
            log(f"held-out {name} at threshold {chosen}: overlap R {v['R_overlap']:.3f} "
                f"P {v['P_overlap']:.3f}, exact R {v['R_exact']:.3f} P {v['P_exact']:.3f}")
    summary = {
        "files": [f.name for f in files], "sentences": len(docs),
        "heldout_sentences": len(held_idx),
        "tokens": n_tokens, "ignored_tokens": n_ignored, "mask_detector": cfg.mask_detector,
        "options": cfg.model_dump(), "best_epoch": best_epoch, "history": history,
        "threshold": chosen, "heldout": per_file, "heldout_curve (overlap R, P)": curve,
        "seconds": {"hidden_states": round(t_lm, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    head.config = tagger.model_copy(update={"threshold": chosen, "training": summary})
    if out_dir is not None:
        head.save(out_dir)
    return summary
