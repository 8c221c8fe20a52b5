"""Negatives from what detection really proposes: the spans a detector finds on training data
that match no gold mention (generic nouns, type words, fragments such as "Government of").
They are negatives for every type in head training, so a type query learns to rank them below
real mentions. Spans that partly overlap a gold mention are kept apart (``partial``): they are
neither the mention nor clearly not one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Sequence
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
    n_docs: int = 0  # sentences the detector ran on
    left_out: int = 0  # sentences of the sample left out (``exclude_texts``)

    def negatives(self, partial: bool = False) -> np.ndarray:
        """Vectors of spans matching no gold mention (and partial overlaps, if asked)."""
        keep = self.kinds == NONE
        if partial:
            keep |= self.kinds == PARTIAL
        return self.vectors[keep]


    def counts(self) -> dict[str, int]:
        """Detected spans by how they match gold: ``{"exact": n, "partial": n, "none": n}``."""
        return {k: int((self.kinds == k).sum()) for k in (EXACT, PARTIAL, NONE)}


def detected_spans(paths: Sequence[str | Path], encoder, detector: str | dict,
                   sample: int | None = None, seed: int = 0,
                   cache_root: Path | None = None,
                   exclude_texts: Collection[str] = ()) -> DetectedSpans:
    """Run ``detector`` on (a seeded sample of) training files and encode every span it finds,
    through the evaluation's cached detection and encoding (one implementation of each).

    ``exclude_texts``: sentences left out *after* sampling (so the sample stays the one the
    gold mentions of ``training.mentions.sample_documents`` come from), e.g. those the learned
    detector was trained on (:func:`detector_training_texts`)."""
    from ner_retriever.evaluation.data import load_eval_set
    from ner_retriever.evaluation.vectors import (detect_spans, encoder_vectors,
                                                  mention_vectors_for)
    from ner_retriever.io.cache import digest

    eval_set = load_eval_set(paths, sample=sample, seed=seed, include_other=True)
    excluded = set(exclude_texts)
    sampled = len(eval_set.docs)
    if excluded:
        eval_set = dataclasses.replace(
            eval_set, docs=[d for d in eval_set.docs if d.text not in excluded],
            identity={**eval_set.identity, "left_out": digest(sorted(excluded))})
    spans, _, quality = detect_spans(eval_set, detector, cache_root, encoder=encoder)
    vectors, doc_index = mention_vectors_for(eval_set, encoder, spans, cache_root,
                                             quality["detector"])
    cfg = encoder.config
    kinds, texts = [], []
    for doc, found in zip(eval_set.docs, spans):
        gold = list(doc.spans or ())
        kinds += [match_kind(s, gold) for s in found]
        texts += [doc.text[s:e] for s, e in found]
    return DetectedSpans(encoder_vectors(vectors, cfg), np.array(kinds, dtype=str),
                         doc_index.astype(np.int64), np.array(texts, dtype=str),
                         len(eval_set.docs), sampled - len(eval_set.docs))


def _learned_folders(detector: str) -> list[Path]:
    """Weight folders of the learned members of a detector name (``learned``, ``learned:DIR``,
    unions such as ``learned+spacy``)."""
    from ner_retriever.detect.learned import packaged_detector_path

    folders = []
    for part in detector.split("+"):
        name = part.strip()
        if name.lower() == "learned":
            folders.append(packaged_detector_path())
        elif name.lower().startswith("learned:"):
            folders.append(Path(name[len("learned:"):].strip()).expanduser())
    return folders


def detector_training_texts(paths: Sequence[str | Path], detector: str | dict) -> set[str]:
    """Sentences of ``paths`` that a learned member of ``detector`` was trained on: for each
    file its ``detector.json`` lists, the seeded sample ``train-detector`` drew at its recorded
    ``max_sentences`` and ``seed`` (``training.detector.training_sentences``, the rule
    ``benchmarks/validation.py --detector-samples`` leaves out too). A detector there finds
    its own training mentions too well, so its spans on them are not what it proposes on new
    text. Detectors given as config dicts or without a learned member: none."""
    from ner_retriever.training.detector import training_sentences

    if not isinstance(detector, str):
        return set()
    texts: set[str] = set()
    for folder in _learned_folders(detector):
        record = json.loads((folder / "detector.json").read_text()).get("training") or {}
        options = record.get("options") or {}
        trained = set(record.get("files") or ())
        mine = [Path(p) for p in paths if Path(p).name in trained]
        if mine:
            texts |= training_sentences(mine, options.get("max_sentences"),
                                        options.get("seed", 0))
    return texts
