"""Negatives from what detection really proposes: the spans a detector finds on training data
that match no gold mention (generic nouns, type words, fragments such as "Government of").
They are negatives for every type in head training, so a type query learns to rank them below
real mentions. Spans that partly overlap a gold mention are kept apart (``partial``): they are
neither the mention nor clearly not one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_retriever.types import Span

NONE, PARTIAL, EXACT = "none", "partial", "exact"  # how a detected span matches the gold spans


def match_kind(span: tuple[int, int], gold: Sequence[Span]) -> str:
    """``exact`` (same boundaries as a gold span), ``partial`` (shares a character) or ``none``."""
    from ner_retriever.detect.base import overlaps

    probe = Span(span[0], span[1])
    if any((g.start, g.end) == span for g in gold):
        return EXACT
    return PARTIAL if any(overlaps(probe, g) for g in gold) else NONE


@dataclass
class DetectedSpans:
    """Raw vectors of a detector's spans on training documents, with how each matches gold."""

    vectors: np.ndarray  # (n, d) float32
    kinds: np.ndarray  # (n,) str: exact | partial | none
    docs: np.ndarray  # (n,) int64 document of each span
    texts: np.ndarray  # (n,) str

    def negatives(self, partial: bool = False) -> np.ndarray:
        """Vectors of spans matching no gold mention (and partial overlaps, if asked)."""
        keep = self.kinds == NONE
        if partial:
            keep |= self.kinds == PARTIAL
        return self.vectors[keep]


def detected_spans(paths: Sequence[str | Path], encoder, detector: str | dict,
                   sample: int | None = None, seed: int = 0,
                   cache_root: Path | None = None) -> DetectedSpans:
    """Run ``detector`` on (a seeded sample of) training files and encode every span it finds,
    through the evaluation's cached detection and encoding (one implementation of each)."""
    from ner_retriever.evaluation.data import load_eval_set
    from ner_retriever.evaluation.vectors import detect_spans, mention_vectors_for

    eval_set = load_eval_set(paths, sample=sample, seed=seed, include_other=True)
    spans, _, quality = detect_spans(eval_set, detector, cache_root, encoder=encoder)
    vectors, doc_index = mention_vectors_for(eval_set, encoder, spans, cache_root,
                                             quality["detector"])
    cfg = encoder.config
    kinds, texts = [], []
    for doc, found in zip(eval_set.docs, spans):
        gold = list(doc.spans or ())
        kinds += [match_kind(s, gold) for s in found]
        texts += [doc.text[s:e] for s, e in found]
    return DetectedSpans(vectors[(cfg.block, cfg.component)], np.array(kinds, dtype=str),
                         doc_index.astype(np.int64), np.array(texts, dtype=str))
