"""The learned mention detector: BIO decoding, windows, training, save/load, joint pass, union.

Real SmolLM2 (the session's encoder) and real spaCy; no mocks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ner_retriever.detect import tagger as bio
from ner_retriever.detect.base import UnionDetector, resolve_overlaps
from ner_retriever.detect.registry import build_detector
from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.errors import ConfigError
from ner_retriever.detect.learned import JointUnionDetector, LearnedDetector
from ner_retriever.detect.tagger import (
    B,
    IGNORE,
    I,
    O,
    TaggerHead,
    repair_bio,
    spans_from_tags,
    tags_from_probs,
    token_labels,
)
from ner_retriever.training import detector as train_detect
from ner_retriever.training.detector import TrainDetectorConfig, train_detector
from ner_retriever.types import Document, Span


@pytest.fixture(scope="module")
def encoder(smol_encoder):
    return smol_encoder  # detectors get it: build_detector(..., encoder)


def tiny_llama(folder: Path) -> Path:
    """A randomly initialised 2-block Llama saved in ``folder`` (benchmarks/crash_trials.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from crash_trials import make_fixture
    finally:
        sys.path.pop(0)
    return make_fixture(folder, n_docs=1)[0]


def offsets_of(encoder, text: str) -> list[tuple[int, int]]:
    enc = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def texts(text: str, spans) -> list[str]:
    return [text[s.start: s.end] for s in spans]


# --------------------------------------------------------------------------- BIO decoding


def test_repair_bio() -> None:
    assert repair_bio([I, I, O, I, B, I, O, O]) == [B, I, O, B, B, I, O, O]
    assert repair_bio([]) == []
    assert repair_bio([O, B, I, I]) == [O, B, I, I]


def test_tags_from_probs_threshold() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    assert tags_from_probs(probs, 0.5) == [O, O, I]
    assert tags_from_probs(probs, 0.35) == [O, B, I]
    assert tags_from_probs(np.zeros((0, 3)), 0.5) == []


@pytest.mark.slow
def test_subword_tokens_to_characters(encoder) -> None:
    text = 'Obama visited New York and "Paris" with @nytimes.'
    offs = offsets_of(encoder, text)
    pieces = [text[s:e] for s, e in offs]
    assert pieces[:2] == ["Ob", "ama"] and " New" in pieces  # byte-level BPE: leading spaces

    def tag(*words: str) -> list[int]:
        tags = [O] * len(offs)
        for word in words:
            start = text.index(word)
            first = True
            for t, (s, e) in enumerate(offs):
                s = s + (len(text[s:e]) - len(text[s:e].lstrip()))
                if s < start + len(word) and start < e:
                    tags[t] = B if first else I
                    first = False
        return tags

    got = spans_from_tags(text, offs, tag("Obama", "New York", '"Paris"', "nytimes"))
    assert texts(text, got) == ["Obama", "New York", "Paris", "nytimes"]  # quotes trimmed
    # a span cut inside a word is widened to the word: only "Ob", or only "ama" (an I after O)
    only_ob = [B if i == 0 else O for i in range(len(offs))]
    assert texts(text, spans_from_tags(text, offs, only_ob)) == ["Obama"]
    only_ama = [I if i == 1 else O for i in range(len(offs))]
    assert texts(text, spans_from_tags(text, offs, only_ama)) == ["Obama"]
    # B B on "New" "York" gives two spans; I after I stays one
    t = [O] * len(offs)
    new, york = pieces.index(" New"), pieces.index(" York")
    t[new], t[york] = B, B
    assert texts(text, spans_from_tags(text, offs, t)) == ["New", "York"]
    with pytest.raises(ValueError):
        spans_from_tags(text, offs, [O])


@pytest.mark.slow
def test_token_labels_round_trip(encoder) -> None:
    text = "The Bank of America sued Procter & Gamble in New York ."
    gold = [Span(4, 19), Span(25, 41), Span(45, 53)]
    offs = offsets_of(encoder, text)
    labels = token_labels(text, offs, gold)
    assert texts(text, spans_from_tags(text, offs, labels)) == [
        "Bank of America", "Procter & Gamble", "New York"]
    # O tokens inside an "unknown" span carry no loss; gold tokens keep their tags
    masked = token_labels(text, offs, [Span(4, 19)], unknown=[Span(25, 41), Span(0, 8)])
    assert (masked == IGNORE).sum() > 0
    assert masked[np.nonzero(labels[:5] == B)[0][0]] == B


# --------------------------------------------------------------------------- one pass, windows


@pytest.mark.slow
def test_overlapping_windows_and_joint_vectors(encoder) -> None:
    small = TransformerEncoder(EncoderConfig(model="smollm2-135m", max_length=16, overlap=6), model=encoder.model,
                               tokenizer=encoder.tokenizer)
    width, step = small.window, small.window - 6  # 15 tokens a window, a new one every 9
    text = ("Marie Curie was born in Warsaw and moved to Paris, where she studied physics at "
            "the Sorbonne with Pierre Curie before the Nobel committee honoured them both.")
    offs = offsets_of(small, text)
    assert len(offs) > 2 * width
    seen = {}

    def decide(idx, feats, offsets):
        seen["feats"], seen["offsets"] = feats, offsets
        return [[(0, 11), (24, 30), (45, 50), (text.index("Nobel"), text.index("Nobel") + 5)]
                if i == 0 else [(0, 5)] for i in idx]  # spans inside each text

    feature = (4, "hidden")
    spans, vectors = small.detect_encode([text, "Paris"], [feature], decide)
    assert seen["offsets"][0] == offs and len(seen["feats"][0]) == len(offs)
    # each token's state comes from the window where it has most context on both sides
    for tok in (10, 12, 20):
        w = max((w for w in range(len(offs)) if w * step <= tok < w * step + width),
                key=lambda w: min(tok - w * step if w else 1 << 30,
                                  w * step + width - 1 - tok
                                  if w * step + width < len(offs) else 1 << 30))
        ids = small.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids[w * step: w * step + width]
        direct = small._capture([small._prefix + ids], [feature])[0][0, 1 + tok - w * step]
        np.testing.assert_allclose(seen["feats"][0][tok], direct.numpy(), rtol=1e-4, atol=1e-4)
    # span vectors are exactly what encode_spans reads (same token, same window)
    expected = small.encode_spans([text, "Paris"], spans)
    for got, want in zip(vectors, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # without vectors the pass stops at the feature block and returns None
    spans2, none = small.detect_encode([text], [feature], decide, vectors=False)
    assert none is None and spans2 == spans[:1]


@pytest.mark.slow
def test_a_long_document_goes_in_pieces_with_the_spans_and_vectors_of_one_pass(tmp_path):
    """A 300 KB document (73k tokens) is processed in pieces of windows, so the detector's
    working memory is bounded by ``max_tokens`` whatever the length; the spans and vectors are
    exactly those of one pass over the whole text (a tiny random Llama and a random tagger
    head, sharpened so that about 30% of the tokens are inside a mention)."""
    import torch

    model = tiny_llama(tmp_path)
    small = TransformerEncoder(EncoderConfig(model=str(model)))
    torch.manual_seed(0)
    head = TaggerHead(bio.TaggerConfig(model=str(model), features=[(0, "hidden")],
                                       input_dim=small.model.config.hidden_size,
                                       proj_dim=16,
                                       context_dim=8, threshold=0.905))
    with torch.no_grad():
        head.out.weight.mul_(60)
        head.out.bias.zero_()
    head.save(tmp_path / "det")
    det = LearnedDetector(tmp_path / "det")
    sentences = ["Angela Merkel met Emmanuel Macron in Paris.", "Toyota unveiled a car.",
                 "it rained all day, so the streets stayed empty."]
    long = " ".join(f"{sentences[i % 3]} ({i})" for i in range(8000))[:300_000]
    texts = [long, "Paris is nice.", long[:5000], "   "]
    assert len(small._tokenize(long)[0]) > 70_000

    def run(max_tokens: int):
        longest = []
        decide = det._decider(texts)

        def bounded(idx, feats, offsets):
            longest.append(max(len(f) for f in feats))
            return decide(idx, feats, offsets)

        spans, vectors = small.detect_encode(texts, det.features, bounded, max_tokens=max_tokens,
                                             token_head=det._project)
        return spans, vectors, max(longest)

    whole, whole_vectors, _ = run(10**9)  # one piece per document: the behaviour before pieces
    assert len(whole[0]) > 10_000 and len(whole[2]) > 100
    assert all(a[1] <= b[0] for a, b in zip(whole[0], whole[0][1:]))
    for max_tokens, pieces in ((4096, 30), (32768, 3)):
        assert len(small._detect_pieces(0, len(small._tokenize(long)[0]), max_tokens)) >= pieces
        spans, vectors, longest = run(max_tokens)
        assert longest <= max_tokens  # what the detector holds at once
        assert spans == whole
        for got, want in zip(vectors, whole_vectors):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    det = LearnedDetector(tmp_path / "det", encoder=small)  # its own path (default max_tokens)
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    assert [[(s.start, s.end) for s in sp] for sp in det.detect(docs)] == whole


# --------------------------------------------------------------------------- training, save/load


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory, encoder, shared_data):
    out = tmp_path_factory.mktemp("det") / "tiny"
    cfg = TrainDetectorConfig(max_sentences=24, heldout=0.25, epochs=2, proj_dim=32,
                              context_dim=16, batch_size=8, features=[(3, "hidden")])
    summary = train_detector([shared_data / "wnut17" / "wnut17train.conll"], out, config=cfg,
                             cache=False, encoder=encoder)
    return out, summary


@pytest.mark.slow
def test_training_on_a_tiny_slice(tiny_detector) -> None:
    out, summary = tiny_detector
    assert (out / "detector.json").is_file() and (out / "detector.safetensors").is_file()
    assert summary["sentences"] == 24 and summary["heldout_sentences"] == 6
    assert len(summary["history"]) == 2 and 1 <= summary["best_epoch"] <= 2
    assert summary["threshold"] in train_detect.THRESHOLDS
    assert "wnut17train.conll" in summary["heldout"]
    saved = json.loads((out / "detector.json").read_text())
    assert saved["features"] == [[3, "hidden"]] and saved["training"]["sentences"] == 24


@pytest.mark.slow
def test_a_fixed_threshold_replaces_the_recall_rule(tmp_path, encoder, shared_data) -> None:
    cfg = TrainDetectorConfig(max_sentences=24, heldout=0.25, epochs=1, proj_dim=32,
                              context_dim=16, batch_size=8, features=[(3, "hidden")],
                              threshold=0.37)
    summary = train_detector([shared_data / "wnut17" / "wnut17train.conll"], tmp_path / "d",
                             config=cfg, cache=False, encoder=encoder)
    assert summary["threshold"] == 0.37 and "wnut17train.conll" in summary["heldout"]
    assert LearnedDetector(tmp_path / "d", encoder=encoder).threshold == 0.37
    with pytest.raises(Exception):
        TrainDetectorConfig(threshold=1.0)


def test_evaluation_splits_refused(tmp_path, shared_data) -> None:
    test_file = shared_data / "wnut17" / "emerging.test.annotated"
    with pytest.raises(ConfigError, match="evaluation split"):
        train_detector([test_file], tmp_path / "x")


@pytest.mark.slow
def test_save_load_round_trip(tiny_detector, tmp_path, encoder) -> None:
    out, _ = tiny_detector
    head = TaggerHead.load(out)
    head.save(tmp_path / "copy")
    again = TaggerHead.load(tmp_path / "copy")
    assert again.checksum() == head.checksum() and again.config == head.config
    x = [np.random.default_rng(0).normal(size=(7, head.config.input_dim)).astype(np.float32)]
    np.testing.assert_array_equal(head.probabilities(x)[0], again.probabilities(x)[0])

    det = LearnedDetector(out, encoder=encoder)
    cfg = json.loads(json.dumps(det.config()))
    rebuilt = build_detector(cfg, encoder=encoder)
    assert isinstance(rebuilt, LearnedDetector) and rebuilt.config() == cfg
    docs = [Document("a", "Lionel Messi joined Inter Miami in 2023 .")]
    assert rebuilt.detect(docs) == det.detect(docs)
    with pytest.raises(ConfigError, match="must contain"):
        LearnedDetector(tmp_path, encoder=encoder)
    with pytest.raises(ConfigError, match="threshold"):
        LearnedDetector(out, threshold=1.5, encoder=encoder)


# --------------------------------------------------------------------------- shipped detector


DOCS = [
    Document("1", "Barack Obama visited Paris with executives of Toyota and Siemens."),
    Document("2", "She was treated with tetracycline at Johns Hopkins Hospital in Baltimore."),
    Document("3", "we watched the lord of the rings at the odeon in manchester"),
    Document("4", "   "),
]


def test_a_recorded_config_rebuilds_the_weights_of_its_model() -> None:
    """Without a path or an encoder (a Ray actor reading the index's detector config), the
    weights shipped for the recorded model run, not the default model's."""
    from ner_retriever.detect.learned import packaged_detector_path

    for model in ("smollm2-135m", "gemma3-270m"):
        shipped = LearnedDetector(path=packaged_detector_path(model)).config()
        rebuilt = build_detector({"name": "learned", "model": model})
        assert rebuilt.config()["checksum"] == shipped["checksum"]
        assert rebuilt.config()["model"] == model


@pytest.mark.slow
def test_packaged_detector_finds_names(encoder) -> None:
    det = build_detector("learned", encoder=encoder)
    assert isinstance(det, LearnedDetector) and det.config()["path"] is None
    spans = det.detect(DOCS)
    assert spans[3] == []
    found = [texts(d.text, s) for d, s in zip(DOCS, spans)]
    for doc, sp in zip(DOCS, spans):
        assert sp == sorted(sp, key=lambda s: s.start)
        assert all(a.end <= b.start for a, b in zip(sp, sp[1:]))
        assert all(doc.text[s.start: s.end] == doc.text[s.start: s.end].strip() for s in sp)
    joined = [" | ".join(f) for f in found]
    for name in ("Obama", "Paris", "Toyota"):
        assert name in joined[0], joined
    assert "Baltimore" in joined[1], joined
    assert "manchester" in joined[2], joined


@pytest.mark.slow
def test_joint_pass_equals_detect_then_encode(encoder) -> None:
    det = build_detector("learned", encoder=encoder)
    spans, vectors = det.detect_and_encode(DOCS, encoder)
    assert spans == det.detect(DOCS)
    expected = encoder.encode_spans([d.text for d in DOCS],
                                    [[(s.start, s.end) for s in sp] for sp in spans])
    for got, want in zip(vectors, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_union_detector_with_learned_member(encoder) -> None:
    union = build_detector("learned+spacy", encoder=encoder)
    assert isinstance(union, JointUnionDetector) and isinstance(union, UnionDetector)
    assert union.name == "learned+spacy"
    learned, spacy = union.detectors
    expected = [resolve_overlaps([a, b]) for a, b in zip(learned.detect(DOCS),
                                                         spacy.detect(DOCS))]
    assert union.detect(DOCS) == expected
    spans, vectors = union.detect_and_encode(DOCS, encoder)
    assert spans == expected and [len(v) for v in vectors] == [len(s) for s in spans]
    for sp in spans:  # de-duplicated: no overlaps
        assert all(a.end <= b.start for a, b in zip(sp, sp[1:]))
    cfg = json.loads(json.dumps(union.config()))
    assert type(build_detector(cfg, encoder=encoder)) is JointUnionDetector
    assert type(build_detector("spacy+gold")) is UnionDetector  # no learned member
    # gold first: its labels survive the shared pass
    gold_docs = [Document("g", "Ada Lovelace met Charles Babbage in London .",
                          spans=(Span(0, 12, "person"), Span(17, 32, "person")))]
    spans, _ = build_detector("gold+learned", encoder=encoder).detect_and_encode(gold_docs, encoder)
    labels = {gold_docs[0].text[s.start: s.end]: s.label for s in spans[0]}
    assert labels["Ada Lovelace"] == "person" and labels["Charles Babbage"] == "person"
    # a union nested in a union still works (without the shared pass)
    nested = build_detector({"name": "union", "detectors": [cfg, {"name": "gold"}]},
                            encoder=encoder)
    spans, vectors = nested.detect_and_encode(gold_docs, encoder)
    assert [len(v) for v in vectors] == [len(s) for s in spans] and spans[0]


@pytest.mark.slow
def test_retriever_uses_the_joint_pass(tmp_path, encoder) -> None:
    from ner_retriever.retrieve.retriever import Retriever

    with Retriever.create(tmp_path / "idx", encoder=encoder, detector="learned") as r:
        stats = r.add(DOCS[:3])
        assert stats.documents == 3 and stats.mentions >= 5
        hits = r.search("city", k=3)
        assert hits and r.info()["detector"]["name"] == "learned"


@pytest.mark.slow
def test_cli_indexes_with_weights_from_train_detector(tiny_detector, tmp_path, monkeypatch,
                                                     encoder) -> None:
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    out, _ = tiny_detector
    runner = CliRunner()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in DOCS[:3]))
    monkeypatch.chdir(out.parent)  # a relative folder, stored absolute
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"),
                                 "--detector", f"learned:{out.name}+spacy"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "idx"), "--json"]).stdout)
    learned = info["detector"]["detectors"][0]
    assert learned["path"] == str(out)
    assert learned["checksum"] == LearnedDetector(out, encoder=encoder).config()["checksum"]
    moved = out.parent / "moved"
    out.rename(moved)  # searching needs no detector; appending names the missing weights
    try:
        result = runner.invoke(app, ["search", str(tmp_path / "idx"), "city", "--json"])
        assert result.exit_code == 0 and json.loads(result.stdout)["results"], result.output
        more = tmp_path / "more.jsonl"
        more.write_text(json.dumps({"id": "new", "text": "Lionel Messi joined Inter Miami."}))
        result = runner.invoke(app, ["index", str(more), "--index", str(tmp_path / "idx")])
        assert result.exit_code == 1 and str(out) in result.stderr, result.output
        assert "Traceback" not in result.output
    finally:
        moved.rename(out)
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "bad"),
                                 "--detector", "learned:missing"])
    assert result.exit_code == 1 and "must contain detector.json" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_served_index_whose_detector_moved(tiny_detector, tmp_path, encoder) -> None:
    from fastapi.testclient import TestClient

    from ner_retriever.retrieve.retriever import Retriever
    from ner_retriever.serve.app import open_app
    from ner_retriever.serve.settings import ServeSettings

    out, _ = tiny_detector
    with Retriever.create(tmp_path / "idx", encoder=encoder, detector={"name": "learned",
                                                                        "path": str(out)}) as r:
        r.add(DOCS[:3])
    moved = out.parent / "moved-away"
    out.rename(moved)
    try:  # reads need no detector; a server that takes writes refuses to start without it
        with TestClient(open_app(tmp_path / "idx", encoder=encoder)) as client:
            assert client.get("/search", params={"q": "city"}).json()["results"]
        with pytest.raises(ConfigError, match="cannot rebuild its detector"):
            open_app(tmp_path / "idx", ServeSettings(write_token="t" * 32), encoder=encoder)
    finally:
        moved.rename(out)


@pytest.mark.slow
def test_train_detector_for_another_model_then_index_with_it(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    model, runner = tiny_llama(tmp_path), CliRunner()
    result = runner.invoke(app, ["train-detector", str(shared_data / "wnut17" / "wnut17train.conll"),
                                 "--model", str(model), "--max-sentences", "40", "--epochs", "1",
                                 "--mask-detector", "none", "--no-cache",
                                 "--out", str(tmp_path / "det")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert saved["model"] == str(model) and saved["features"] == [[0, "hidden"]]  # 30% of 2
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in DOCS[:3]))
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"),
                                 "--model", str(model), "--head", "none", "--no-hybrid",
                                 "--detector", f"learned:{tmp_path / 'det'}"])
    assert result.exit_code == 0, result.output
    assert "runs that model separately" not in result.stderr  # one shared pass
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "idx"), "--json"]).stdout)
    assert info["documents"] == 3 and info["detector"]["features"] == [[0, "hidden"]]
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "own"),
                                 "--model", str(model), "--head", "none", "--no-hybrid",
                                 "--detector", "learned"])  # SmolLM2's: its own pass, said so
    assert result.exit_code == 0 and "runs that model separately" in result.stderr, result.output
    assert train_detect.default_feature_block(30) == 9  # the shipped SmolLM2 block


def test_build_detector_options() -> None:
    det = build_detector({"name": "learned", "threshold": 0.3})
    assert det.threshold == 0.3
    with pytest.raises(ConfigError, match="unknown option"):
        build_detector({"name": "learned", "blocks": 3})
    with pytest.raises(ConfigError, match="'learned'"):
        build_detector("flair")


def test_cli_train_detector_refuses_bad_input(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    runner = CliRunner()
    test_file = str(shared_data / "fewnerd" / "inter_bio_structshot" / "big_test.txt")
    result = runner.invoke(app, ["train-detector", test_file, "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "evaluation split" in result.stderr
    train_file = str(shared_data / "wnut17" / "wnut17train.conll")
    result = runner.invoke(app, ["train-detector", train_file, "--out", str(tmp_path / "d"),
                                 "--features", "nine"])
    assert result.exit_code == 1 and "--features" in result.stderr
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- confidences
def test_span_confidences_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 30))
        starts = np.sort(rng.choice(300, n, replace=False))
        offsets = [(int(a), int(a + rng.integers(0, 6))) for a in starts]  # some empty tokens
        offsets = [(a, min(b, nxt)) for (a, b), nxt in zip(offsets, [*starts[1:], 10**6])]
        probs = rng.random((n, 3))
        spans = [Span(a, a + int(rng.integers(1, 25))) for a in rng.integers(0, 300, 5)]
        o = np.array(offsets)
        for sp, got in zip(spans, bio.span_confidences(offsets, probs, spans)):
            cover = (o[:, 0] < sp.end) & (o[:, 1] > sp.start) & (o[:, 1] > o[:, 0])
            want = (probs[cover, B] + probs[cover, I]).mean() if cover.any() else 1.0
            assert got == pytest.approx(min(max(want, 1e-6), 1.0))


@pytest.mark.slow
def test_union_spans_all_get_the_taggers_confidence(encoder) -> None:
    """Learned spans and the spaCy spans the union adds are scored by the tagger alike, the
    same way on the joint path and on the detection-only path."""
    docs = [*DOCS, Document("5", "Bill is from the labyrinth review"),  # spaCy finds "Bill",
            Document("6", "Hasan is a goat lol")]  # "Hasan": the tagger misses them
    union = build_detector("learned+spacy", encoder=encoder)
    alone = union.detect(docs)
    joint, _ = union.detect_and_encode(docs, encoder)
    assert alone == joint
    learned_only = {(i, s.start, s.end)
                    for i, sp in enumerate(build_detector("learned", encoder=encoder).detect(docs))
                    for s in sp}
    added = []
    for i, (a, b) in enumerate(zip(alone, joint)):
        for x, y in zip(a, b):
            assert 0 < x.confidence <= 1 and x.confidence == pytest.approx(y.confidence, abs=1e-5)
            if (i, x.start, x.end) not in learned_only:
                added.append(x.confidence)
    assert len(added) >= 2 and max(added) < 0.5  # spaCy's extra spans: scored, and doubtful
    assert all(s.confidence is None for sp in build_detector("spacy").detect(docs) for s in sp)


@pytest.mark.slow
def test_index_vectors_are_weighted_by_confidence(tmp_path, encoder) -> None:
    from ner_retriever.retrieve.retriever import Retriever

    norms = {}
    for weight in (0.0, 0.5):
        with Retriever.create(tmp_path / f"idx{weight}", encoder=encoder, hybrid=False,
                              confidence_weight=weight) as r:
            r.add(DOCS[:3])
            assert r.index.config.confidence_weight == weight
            rows = np.arange(r.index.num_mentions())  # in document, then span order
            norms[weight] = np.linalg.norm(r.index.vectors(rows), axis=1)
    spans = build_detector(None, encoder=encoder).detect(DOCS[:3])
    conf = np.array([s.confidence for sp in spans for s in sp])
    np.testing.assert_allclose(norms[0.0], 1.0, atol=1e-4)
    np.testing.assert_allclose(norms[0.5], np.sqrt(conf), rtol=1e-3)
    assert (conf < 0.99).any()  # some doubtful spans really were scaled down
    for bad in (-1.0, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match="confidence_weight"):
            Retriever.create(tmp_path / "bad", encoder=encoder, confidence_weight=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_the_tagger_head_splits_where_the_language_model_runs(encoder) -> None:
    """The joint pass runs the head's per-token part next to the language model (on a GPU:
    192 numbers per token leave it, not the 576-d state) and the convolutions on whole
    documents: the same probabilities as the head on the states, windows and all."""
    small = TransformerEncoder(EncoderConfig(model="smollm2-135m", max_length=64, overlap=16), model=encoder.model,
                               tokenizer=encoder.tokenizer)
    det = LearnedDetector(encoder=encoder)
    texts = [" ".join(["Angela Merkel met Emmanuel Macron in Paris.", "Bill is here."] * 20),
             "Toyota unveiled a car in Tokyo.", ""]
    got: dict = {}

    def grab(key):
        def decide(idx, rows, offsets):
            got.update({(key, i): r for i, r in zip(idx, rows)})
            return [[] for _ in idx]
        return decide

    small.detect_encode(texts, det.features, grab("states"), vectors=False)
    small.detect_encode(texts, det.features, grab("projected"), vectors=False,
                        token_head=det._project)
    small.detect_encode(texts[2:], det.features, grab("alone"), vectors=False,
                        token_head=det._project)  # a group of documents without tokens
    assert len(small._tokenize(texts[0])[0]) > 3 * small.window
    assert len(small._tokenize(texts[2])[0]) == 0
    assert got[("alone", 0)].shape == (0, det.tagger.proj_dim)
    with pytest.raises(ValueError, match="token_head"):  # raw states are refused, not misread
        small.detect_encode(texts[:2], det.features, det._decider(texts[:2]), vectors=False)
    for i in range(len(texts)):
        states, projected = got[("states", i)], got[("projected", i)]
        assert projected.shape == (len(states), det.tagger.proj_dim)
        np.testing.assert_allclose(det.head.probabilities([projected], projected=True)[0],
                                   det.head.probabilities([states])[0], atol=1e-5)


@pytest.mark.slow
def test_confidences_do_not_depend_on_how_a_long_document_is_cut(encoder) -> None:
    """A long document goes through the joint pass in pieces; each span keeps the confidence
    of a pass over the whole document, spaCy's spans included, and gold labels survive."""
    small = TransformerEncoder(EncoderConfig(model="smollm2-135m", max_length=64, overlap=16), model=encoder.model,
                               tokenizer=encoder.tokenizer)
    text = " ".join(["Angela Merkel met Emmanuel Macron in Paris before the summit.",
                     "The Danube flows through Vienna and Budapest.",
                     "Bill is from the labyrinth review."] * 14)
    docs = [Document("long", text)]
    union = build_detector("learned+spacy", encoder=encoder)
    learned, spacy = union.detectors
    others = [None, spacy.detect(docs)]
    runs = []
    for max_tokens in (10**6, 100):
        scores: dict = {}
        spans, _ = small.detect_encode([text], learned.features,
                                       learned._decider([text], others, scores),
                                       vectors=False, max_tokens=max_tokens,
                                       token_head=learned._project)
        runs.append((spans, learned._spans(spans, others, scores)))
    assert len(small._detect_pieces(0, len(small._tokenize(text)[0]), 100)) > 2
    (whole, whole_spans), (cut, cut_spans) = runs
    assert whole == cut and len(whole[0]) > 40
    for a, b in zip(whole_spans[0], cut_spans[0]):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    gold = [Document("g", "Ada Lovelace met Charles Babbage in London .",
                     spans=(Span(0, 12, "person"), Span(36, 42, "city")))]
    got = build_detector("gold+spacy+learned", encoder=encoder).detect(gold)[0]
    assert {(s.label, s.confidence) for s in got if s.label} == {("person", None), ("city", None)}
