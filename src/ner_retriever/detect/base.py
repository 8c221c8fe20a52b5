"""Detector protocols and the span helpers every detector shares.

Retrieval only searches mentions that a detector proposed, so detection recall
caps end-to-end recall.  Detectors do not assign types (except the gold
detector, which passes labels through); typing happens at query time.

``Detector``       proposes spans for documents (``detect``) and describes itself (``config``).
``JointDetector``  a detector that also returns the spans' vectors from the encoder's own
                   forward pass (``detect_and_encode``; the learned tagger and unions with it).
``GoldDetector``   the corpus's own gold spans (CoNLL/BIO corpora only).
``UnionDetector``  several detectors; on overlap the earlier detector wins.

The spaCy detector is in ``detect.spacy`` (its rules in ``detect.candidates``), the learned
tagger in ``detect.tagger`` / ``detect.learned``, the LLM extractor in ``detect.llm``, and
``detect.registry.build_detector`` turns names and ``config()`` dicts into detectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ner_retriever.errors import ConfigError
from ner_retriever.types import Document, Span

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Detector",
    "GoldDetector",
    "JointDetector",
    "UnionDetector",
    "match_spans",
    "overlaps",
    "resolve_overlaps",
    "trim",
]


@runtime_checkable
class Detector(Protocol):
    """Proposes mention spans for documents.

    ``detect`` returns one list per document, each sorted by ``start``, with
    character offsets into ``Document.text`` and no overlapping spans.
    ``config`` is JSON-able and ``build_detector(config)`` rebuilds the detector.
    """

    name: str

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]: ...

    def config(self) -> dict[str, Any]: ...


@runtime_checkable
class JointDetector(Protocol):
    """A ``Detector`` whose spans come from the encoder's own forward pass.

    ``detect_and_encode(docs, encoder)`` returns the spans (as ``detect`` would) and one raw
    ``(n_spans, dim)`` vector array per document, from one pass of ``encoder`` when it runs
    the detector's language model (else detect, then ``encoder.encode_spans``)."""

    name: str

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]: ...

    def config(self) -> dict[str, Any]: ...

    def detect_and_encode(self, docs: Sequence[Document], encoder: Any
                          ) -> tuple[list[list[Span]], list[np.ndarray]]: ...


# --------------------------------------------------------------------------- helpers


# Characters trimmed off span edges.  Token-level trimming (spaCy detector) has
# already dropped whole punctuation tokens, so this only has to catch stray
# characters glued to a word; it leaves a final "." alone ("U.S.", "Inc.").
_QUOTES = frozenset("\"'`´‘’‚‛“”„‟«»‹›")
_EDGE_PUNCT = frozenset(",;:")
_LEADING_ONLY = frozenset("@#")  # "@nytimes" -> "nytimes", "#MeToo" -> "MeToo"
_OPEN, _CLOSE = "([{", ")]}"


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge whitespace, quotes, ``,;:``, a leading
    ``@``/``#`` and unbalanced brackets."""
    changed = True
    while changed and start < end:
        changed = False
        while start < end and (
            text[start].isspace()
            or text[start] in _QUOTES
            or text[start] in _EDGE_PUNCT
            or text[start] in _LEADING_ONLY
        ):
            start, changed = start + 1, True
        while end > start and (
            text[end - 1].isspace() or text[end - 1] in _QUOTES or text[end - 1] in _EDGE_PUNCT
        ):
            end, changed = end - 1, True
        if start < end and text[start] in _OPEN:
            close = _CLOSE[_OPEN.index(text[start])]
            if close not in text[start:end]:
                start, changed = start + 1, True
        if start < end and text[end - 1] in _CLOSE:
            opening = _OPEN[_CLOSE.index(text[end - 1])]
            if opening not in text[start:end]:
                end, changed = end - 1, True
    return start, end


def overlaps(a: Span, b: Span) -> bool:
    """Whether two spans share at least one character."""
    return a.start < b.end and b.start < a.end


def resolve_overlaps(groups: Iterable[Iterable[Span]]) -> list[Span]:
    """Merge span groups in priority order into one non-overlapping, sorted list.

    Exact duplicates (same start and end) are dropped first; then a span is kept
    only if it overlaps nothing already kept.  Within a group longer spans win,
    ties broken by position, so the result is deterministic.
    """
    kept: list[Span] = []
    seen: set[tuple[int, int]] = set()
    # Sorted starts of kept spans would make this O(n log n); n is per document
    # and small (tens), so a linear scan is simpler and fast enough.
    for group in groups:
        ordered = sorted(group, key=lambda s: (-(s.end - s.start), s.start))
        for span in ordered:
            key = (span.start, span.end)
            if key in seen:
                continue
            seen.add(key)
            if any(overlaps(span, k) for k in kept):
                continue
            kept.append(span)
    kept.sort(key=lambda s: (s.start, s.end))
    return kept


def match_spans(
    pred: Sequence[Span], gold: Sequence[Span], mode: str = "exact"
) -> tuple[int, int]:
    """Count matches between predicted and gold spans of one document (labels ignored).

    Returns ``(tp_pred, tp_gold)``: how many predicted spans match at least one
    gold span, and how many gold spans are matched by at least one predicted
    span.  Precision is ``tp_pred / len(pred)``, recall ``tp_gold / len(gold)``.

    ``mode="exact"``: same start and end.  ``mode="overlap"``: share at least one
    character.  Duplicates are counted as often as they occur.
    """
    if mode == "exact":
        gold_keys = {(g.start, g.end) for g in gold}
        pred_keys = {(p.start, p.end) for p in pred}
        tp_pred = sum(1 for p in pred if (p.start, p.end) in gold_keys)
        tp_gold = sum(1 for g in gold if (g.start, g.end) in pred_keys)
        return tp_pred, tp_gold
    if mode == "overlap":
        tp_pred = sum(1 for p in pred if any(overlaps(p, g) for g in gold))
        tp_gold = sum(1 for g in gold if any(overlaps(g, p) for p in pred))
        return tp_pred, tp_gold
    raise ConfigError(f"unknown match mode {mode!r}; valid modes: 'exact', 'overlap'")


# --------------------------------------------------------------------------- gold / union


class GoldDetector:
    """Returns each document's gold spans (with labels), for evaluation and oracles."""

    name = "gold"

    def __repr__(self) -> str:
        return "GoldDetector()"

    def config(self) -> dict[str, Any]:
        return {"name": "gold"}

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        out: list[list[Span]] = []
        for doc in docs:
            if doc.spans is None:
                where = f" ({doc.source})" if doc.source else ""
                raise ConfigError(
                    "the gold detector needs documents with gold spans (a CoNLL/BIO "
                    f"corpus); document {doc.id!r}{where} has none"
                )
            outside = next((s for s in doc.spans if s.end > len(doc.text)), None)
            if outside is not None:  # (Span itself refuses empty and negative spans)
                where = f" ({doc.source})" if doc.source else ""
                raise ConfigError(
                    f"document {doc.id!r}{where}: gold span [{outside.start}, {outside.end}) "
                    f"is outside its text ({len(doc.text)} characters)"
                )
            out.append(sorted(doc.spans, key=lambda s: (s.start, s.end)))
        return out


class UnionDetector:
    """Union of several detectors; on overlap, spans of earlier detectors win."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        detectors = list(detectors)
        if not detectors:
            raise ConfigError("a union detector needs at least one detector")
        self.detectors = detectors
        self.name = "+".join(d.name for d in detectors)

    def __repr__(self) -> str:
        return f"UnionDetector({self.detectors!r})"

    def config(self) -> dict[str, Any]:
        return {"name": "union", "detectors": [d.config() for d in self.detectors]}

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        docs = list(docs)
        results = [d.detect(docs) for d in self.detectors]
        return [resolve_overlaps(r[i] for r in results) for i in range(len(docs))]
