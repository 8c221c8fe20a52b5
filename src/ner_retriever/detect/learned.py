"""A learned, type-agnostic mention detector on the encoder's own language model.

A small token-classification head (``detect.tagger.TaggerHead``, BIO over one label, "mention")
reads the hidden states of an early block of the *same* language model that produces the mention
vectors.  The vectors are read at a later block (SmolLM2: value, block 22), so every block the
detector needs is computed anyway: with :meth:`LearnedDetector.detect_and_encode` one forward
pass per window yields both the spans and their vectors (``models.joint``).

``LearnedDetector``    the ``Detector`` (name ``"learned"``); the packaged weights for
                       ``smollm2-135m`` live in ``data/detectors/smollm2-135m/``.  Training is
                       ``training.detector.train_detector``.
``JointUnionDetector`` a ``UnionDetector`` with a learned member that still runs one pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ner_retriever.detect.base import UnionDetector, resolve_overlaps
from ner_retriever.detect.tagger import (TaggerHead, span_confidences, spans_from_tags,
                                         tags_from_probs)
from ner_retriever.errors import ConfigError
from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.models.loading import DEFAULT_MODEL, PACKAGED_MODELS
from ner_retriever.types import Document, Span

__all__ = ["JointUnionDetector", "LearnedDetector", "build_learned", "packaged_detector_path"]


def packaged_detector_path(model: str = DEFAULT_MODEL) -> Path:
    """Folder of the detector weights shipped for a packaged model alias."""
    folder = resources.files("ner_retriever") / "data" / "detectors" / model
    return Path(str(folder))



def _shipped_for(encoder: Any, recorded: str | None = None) -> Path:
    """The weights shipped for the encoder's packaged model (without an encoder: for the
    ``recorded`` model of a detector's config), else for the default model."""
    model = getattr(getattr(encoder, "config", None), "model", None) or recorded
    if model in PACKAGED_MODELS:
        folder = packaged_detector_path(model)
        if (folder / "detector.json").is_file():
            return folder
    return packaged_detector_path()


class LearnedDetector:
    """Type-agnostic BIO tagger on the language model's early-block states.

    ``path`` is a folder with ``detector.json`` + ``detector.safetensors`` (default: the weights
    shipped for the encoder's packaged model, e.g. ``data/detectors/gemma3-270m/``, else for
    the default model); ``threshold`` overrides the one chosen at training time
    (lower finds more, less precisely).  ``detect`` runs the language model up to the feature
    block only; ``detect_and_encode`` shares the pass with the encoder."""

    name = "learned"

    def __init__(self, path: str | Path | None = None, threshold: float | None = None,
                 batch_size: int = 16, encoder: Any = None, model: str | None = None) -> None:
        """``model``: without ``path`` or ``encoder``, the packaged model whose shipped weights
        run (what a detector's recorded config names)."""
        # absolute, so an index stores a config that works from any working directory
        # (not resolved: a link to the current weights stays a link)
        self.path = None if path is None else str(Path(path).expanduser().absolute())
        folder = _shipped_for(encoder, model) if self.path is None else Path(self.path)
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
        # what ``detect`` runs on: given, adopted from the first joint pass, or loaded once
        self._encoder = encoder if encoder is not None and self.supports(encoder) else None

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

    @property
    def encoder(self) -> TransformerEncoder:
        """The encoder ``detect`` runs the language model with (loaded on first use)."""
        if self._encoder is None:
            self._encoder = TransformerEncoder(EncoderConfig(
                model=self.tagger.model, prepend_bos=self.tagger.prepend_bos))
        return self._encoder

    def detect(self, docs: Sequence[Document],
               others: list[list[list[Span]] | None] | None = None) -> list[list[Span]]:
        """Spans with confidences; with ``others`` (see ``_decider``) the merged union's."""
        docs = list(docs)
        if not docs:
            return []
        return self._pass([d.text for d in docs], self.encoder, others, vectors=False)[0]

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
        if self._encoder is None:  # later ``detect`` calls reuse the loaded model
            self._encoder = encoder
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


def build_learned(cfg: dict[str, Any], encoder: Any = None) -> LearnedDetector:
    """``build_detector`` hook: a ``LearnedDetector`` from the options of its ``config()``.

    ``features`` and ``checksum`` are recorded for information; the weights found at ``path``
    (or those shipped for the encoder's model, else for the recorded ``model``) are what runs,
    as with the spaCy detector's rules."""
    unknown = set(cfg) - _LEARNED_KEYS
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for detector 'learned'; valid: "
                          f"{sorted(_LEARNED_KEYS)}")
    return LearnedDetector(path=cfg.get("path"), threshold=cfg.get("threshold"),
                           batch_size=cfg.get("batch_size", 16), encoder=encoder,
                           model=cfg.get("model"))
