"""The spaCy detector's candidate rules: token runs that look like names outside spaCy's
18 OntoNotes labels, and how a token run becomes a character span (rules listed in
``SpacyDetector``'s docstring; their measured effect in docs/DETECTION.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ner_retriever.detect.base import trim
from ner_retriever.types import Span

__all__ = ["candidate_token_runs", "doc_spans", "token_spans"]

# Years a leading number is dropped as ("2006 London Marathon" -> "London Marathon").
_FIRST_YEAR, _LAST_YEAR = 1500, 2099

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
    return len(t) == 4 and t.isdigit() and _FIRST_YEAR <= int(t) <= _LAST_YEAR


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


def token_spans(
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
        start, end = trim(text, seg[0].idx, seg[-1].idx + len(seg[-1].text))
        if end > start:
            out.append(Span(start, end))
    return out


def doc_spans(
    sdoc: Any, excluded: frozenset[str], candidates: bool
) -> tuple[list[Span], list[Span]]:
    """``(entity spans, candidate spans)`` of one parsed text, not yet de-overlapped."""
    text = sdoc.text
    ents: list[Span] = []
    for ent in sdoc.ents:
        if ent.label_ not in excluded:
            ents.extend(token_spans(text, ent, excluded, candidate=False))
    cands: list[Span] = []
    if candidates:
        for tokens in candidate_token_runs(sdoc):
            cands.extend(token_spans(text, tokens, excluded, candidate=True))
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


def candidate_token_runs(sdoc: Any) -> Iterator[Sequence[Any]]:
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
