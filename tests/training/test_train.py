"""Head training: the loss goes down on a tiny slice, heads save and reload bit-exact, the
paper's ``.pth`` layout loads, and the shipped default head matches its config."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from ner_retriever.errors import ConfigError
from ner_retriever.models.head import HeadConfig, ProjectionHead
from ner_retriever.models.head import normalize
from ner_retriever.evaluation.descriptions import is_other_tag
from ner_retriever.training.fit import identity_init
from ner_retriever.training.mentions import MentionSet, extract_mentions
from ner_retriever.training.train import TrainConfig, split_types, train_head
from ner_retriever.training.validation import encode_descriptions, load_descriptions, r_precision

# (tokens with inline tags) -> BIO lines; four types, a few mentions each
SENTENCES = [
    "[Paris|location_GPE] and [Berlin|location_GPE] signed a pact with [Rome|location_GPE] .",
    "[Angela Merkel|person_politician] met [Barack Obama|person_politician] in [Madrid|location_GPE] .",
    "[Apple|organization_company] sued [Samsung|organization_company] over phones .",
    "The film [Titanic|art_film] beat [Avatar|art_film] at the box office .",
    "[Google|organization_company] opened an office in [Tokyo|location_GPE] .",
    "[Emmanuel Macron|person_politician] praised [Microsoft|organization_company] .",
    "Critics loved [Casablanca|art_film] and [Vertigo|art_film] .",
    "[Boris Johnson|person_politician] visited [Toronto|location_GPE] and [Lima|location_GPE] .",
    "[Intel|organization_company] and [Nvidia|organization_company] make chips .",
    "[Jaws|art_film] was shot near [Boston|location_GPE] .",
    "[Justin Trudeau|person_politician] and [Narendra Modi|person_politician] spoke .",
    "She watched [Inception|art_film] , [Alien|art_film] and [Heat|art_film] .",
    "The [Ballarat Reform League|organization_other] met in [Sydney|location_GPE] .",
]


def to_bio(sentences: list[str]) -> str:
    lines = []
    for s in sentences:
        for chunk in s.replace("[", "\x00[").replace("]", "]\x00").split("\x00"):
            if chunk.startswith("["):
                text, tag = chunk[1:-1].split("|")
                for i, tok in enumerate(text.split()):
                    lines.append(f"{tok}\t{'B' if i == 0 else 'I'}-{tag}")
            else:
                lines.extend(f"{tok}\tO" for tok in chunk.split())
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def bio_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train") / "tiny.bio"
    path.write_text(to_bio(SENTENCES))
    return path


@pytest.fixture(scope="module")
def tiny(smol_encoder, bio_file, tmp_path_factory):
    """Mention vectors and description vectors of the tiny slice (cache in a temp folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NER_RETRIEVER_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        ms = extract_mentions(bio_file, smol_encoder, progress=False)
        again = extract_mentions(bio_file, smol_encoder, progress=False)  # from the .npz cache
    finally:
        mp.undo()
    desc = load_descriptions(None, ms.types)
    desc["location_GPE"] = ["city", "country"]
    return ms, again, encode_descriptions(smol_encoder, desc)


@pytest.mark.slow
def test_extract_matches_encoder_and_cache(tiny, smol_encoder, bio_file):
    ms, again, _ = tiny
    assert len(ms) == 30 and ms.n_docs == len(SENTENCES)
    assert ms.vectors.shape == (30, smol_encoder.dim)
    assert ms.texts[0] == "Paris" and ms.labels[0] == "location_GPE"
    assert np.array_equal(ms.vectors, again.vectors) and np.array_equal(ms.labels, again.labels)
    # the first sentence's vectors equal a direct encode_spans call
    text = SENTENCES[0].replace("[", "").replace("]", "")
    text = " ".join(w.split("|")[0] if "|" in w else w for w in text.split())
    spans = [(text.index(w), text.index(w) + len(w)) for w in ("Paris", "Berlin", "Rome")]
    direct = smol_encoder.encode_spans([text], [spans])[0]
    np.testing.assert_allclose(ms.vectors[:3], direct, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_identity_init_starts_at_centred_raw(tiny):
    ms, _, _ = tiny
    head = ProjectionHead(HeadConfig(input_dim=ms.vectors.shape[1], residual=True, skip_bias=True))
    mean = ms.vectors.mean(0)
    identity_init(head, mean)
    out = head.project(ms.vectors)
    expected = normalize(ms.vectors - mean)
    np.testing.assert_allclose(out[:, : ms.vectors.shape[1]], expected, atol=1e-5)
    assert np.abs(out[:, ms.vectors.shape[1]:]).max() == 0


@pytest.fixture()
def one_thread():
    """Tiny matrices: one thread avoids oversubscription on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_training_lowers_loss_and_reloads_bit_exact(tiny, tmp_path, one_thread):
    ms, _, desc = tiny
    cfg = TrainConfig(epochs=5, batch_size=24, types_per_batch=4, steps_per_epoch=6, lr=1e-3,
                      temperature=0.1, val_fraction=0, cv_folds=0, seed=3)
    result = train_head(ms, desc, cfg, progress=False)
    assert "organization_other" not in result.train_types  # catch-all types are left out
    assert len(result.train_types) == 4
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8, losses

    # reproducible: same seed, same weights
    again = train_head(ms, desc, cfg, progress=False)
    assert again.head.checksum() == result.head.checksum()

    result.head.save(tmp_path / "head")
    loaded = ProjectionHead.load(tmp_path / "head")
    assert loaded.config == result.head.config
    a, b = result.head.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(loaded.project(ms.vectors), result.head.project(ms.vectors))
    assert loaded.checksum() == result.head.checksum()


@pytest.mark.slow
def test_held_out_types_and_triplet(tiny, one_thread):
    ms, _, desc = tiny
    cfg = TrainConfig(epochs=2, batch_size=16, types_per_batch=2, steps_per_epoch=3,
                      val_types=["art_film"], loss="triplet", seed=1)
    result = train_head(ms, desc, cfg, progress=False)
    assert result.val_types == ["art_film"] and "art_film" not in result.train_types
    assert 0 <= result.best_val <= 1 and 0 <= result.best_epoch <= 2  # 0 = initial head kept
    assert all("val_r_precision" in h for h in result.history)
    cv = train_head(ms, desc, TrainConfig(epochs=2, batch_size=16, types_per_batch=2,
                                          steps_per_epoch=2, cv_folds=2), progress=False)
    assert len(cv.train_types) == 4 and cv.val_types == [] and 0 <= cv.best_epoch <= 2
    assert sum(1 for h in cv.history if h.get("final")) == cv.best_epoch
    with pytest.raises(ConfigError, match="validation types"):
        train_head(ms, desc, TrainConfig(val_types=["person_actor"]), progress=False)


def test_official_pth_layout_loads(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {"net.0.weight": torch.randn(500, 1024, generator=gen) * 0.03,
             "net.0.bias": torch.randn(500, generator=gen) * 0.01,
             "net.3.weight": torch.randn(500, 500, generator=gen) * 0.04,
             "net.3.bias": torch.randn(500, generator=gen) * 0.01}
    path = tmp_path / "contrastive_projection_head.pth"
    torch.save(state, path)
    head = ProjectionHead.load(path)
    assert (head.config.input_dim, head.config.hidden_dim, head.config.output_dim) == (1024, 500, 500)
    x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    out = head.project(x)
    assert out.shape == (4, 500)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    # eval mode: no dropout, same result as the formula
    h = torch.nn.functional.silu(torch.from_numpy(x) @ state["net.0.weight"].T + state["net.0.bias"])
    ref = torch.nn.functional.normalize(h @ state["net.3.weight"].T + state["net.3.bias"], dim=-1)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)


@pytest.mark.slow
def test_shipped_head_matches_config(smol_encoder):
    folder = resources.files("ner_retriever") / "data" / "heads" / "smollm2-135m"
    with resources.as_file(folder) as path:
        head = ProjectionHead.load(path)
        config = json.loads((path / "head.json").read_text())
        training = json.loads((path / "training.json").read_text())
    assert head.config.model_dump() == config
    assert head.config.model == smol_encoder.config.model
    assert head.config.block == smol_encoder.config.block
    assert head.config.component == smol_encoder.config.component
    assert head.config.input_dim == smol_encoder.dim
    # zero-shot discipline: nothing evaluated on Few-NERD INTER test was trained on
    test_types = {"organization_government/governmentagency", "person_actor", "event_election",
                  "location_bodiesofwater", "art_music", "event_sportsevent",
                  "organization_politicalparty", "building_theater", "other_educationaldegree",
                  "art_writtenart", "person_athlete", "other_medical", "other_livingthing",
                  "building_hospital", "product_weapon", "location_other", "product_car"}
    assert not test_types & set(training["train_types"] + training["val_types"])
    assert all("big_test" not in d["file"] for d in training["data"])
    q = head.project(smol_encoder.encode_queries(["politician"]))
    assert q.shape == (1, head.config.output_dim)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_r_precision_hand_cases():
    # 4 documents; doc 2 has no mentions; doc 0 has two mentions (max counts once)
    m = normalize(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8]], np.float32))
    docs = np.array([0, 0, 1, 3])
    q = normalize(np.array([[1, 0], [0, 1]], np.float32))
    per = r_precision(q, m, docs, 4, [{0, 3}, {1}])
    assert per.tolist() == [1.0, 1.0]
    # a tie between docs 0 and 1 at the cut counts in expectation (evaluate's metric)
    m2 = normalize(np.array([[1, 0], [1, 0]], np.float32))
    assert r_precision(q[:1], m2, np.array([0, 1]), 2, [{1}]).tolist() == [0.5]
    # mentions need not be grouped by document
    assert r_precision(q, m[[3, 0, 2, 1]], docs[[3, 0, 2, 1]], 4, [{0, 3}, {1}]).tolist() == \
        [1.0, 1.0]
    assert np.isnan(r_precision(q[:1], m2, np.array([0, 1]), 2, [set()])[0])


def test_descriptions_and_types(tmp_path):
    assert is_other_tag("location_other") and is_other_tag("art-other") and not is_other_tag("person_actor")
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"GPE": ["country", "city"], "person_actor": "actor"}))
    d = load_descriptions(path, ["location_GPE", "person_actor", "art_film"])
    assert d == {"location_GPE": ["country", "city"], "person_actor": ["actor"],
                 "art_film": ["film"]}
    assert load_descriptions("fewnerd", ["location_GPE"])["location_GPE"][0].lower() == \
        "geopolitical entity"
    path.write_text(json.dumps({"GPE": []}))
    with pytest.raises(ConfigError):
        load_descriptions(path, ["location_GPE"])
    train, val = split_types([f"t{i}" for i in range(10)], 0.2, seed=0)
    assert len(val) == 2 and not set(train) & set(val)
    assert split_types([f"t{i}" for i in range(10)], 0.2, seed=0) == (train, val)


def test_mention_set_concat_shifts_documents():
    a = MentionSet(np.ones((2, 3), np.float32), np.array(["x", "y"]), np.array([0, 1]), 3,
                   np.array(["a", "b"]))
    b = MentionSet(np.zeros((1, 3), np.float32), np.array(["x"]), np.array([0]), 2, np.array(["c"]))
    c = MentionSet.concat([a, b])
    assert c.docs.tolist() == [0, 1, 3] and c.n_docs == 5 and c.types == ["x", "y"]


def test_cli_train_reports_bad_input(tmp_path):
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.bio"), "--out",
                                      str(tmp_path / "head")])
    assert result.exit_code == 1
    assert "no such file" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--val-types" in result.output


@pytest.mark.slow
def test_train_with_detected_negatives(smol_encoder, bio_file, tmp_path, monkeypatch, one_thread):
    """``run_training(negatives="default")`` (``train --negatives default``): the default
    detector's non-mention spans on the same sample enter the loss, their count is recorded in
    training.json, the loss goes down and the head reloads bit-exact."""
    from ner_retriever.training.train import run_training, training_negatives

    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(epochs=5, batch_size=24, types_per_batch=4, steps_per_epoch=6, lr=1e-3,
                      temperature=0.1, val_fraction=0, cv_folds=0, seed=3, negatives_per_batch=8)
    summary = run_training([bio_file], tmp_path / "head", encoder=smol_encoder, config=cfg,
                           max_sentences=12, negatives="default", progress=False)
    neg = summary["negatives"]
    assert neg["detector"] == "learned+spacy" and neg["partial"] is False
    (row,) = neg["files"]
    assert row["sample"] == 12 and row["sentences"] == 12 and row["left_out"] == 0
    assert neg["count"] == row["negatives"] == row["none"] > 0
    assert row["spans"] == row["exact"] + row["partial"] + row["none"]
    saved = json.loads((tmp_path / "head" / "training.json").read_text())
    assert saved["negatives"] == neg and saved["config"]["negatives_per_batch"] == 8
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0], losses

    with_partial = run_training([bio_file], tmp_path / "partial", encoder=smol_encoder,
                                config=cfg, max_sentences=12, negatives="default",
                                negatives_partial=True, progress=False)["negatives"]
    assert with_partial["count"] == row["none"] + row["partial"]
    plain = run_training([bio_file], tmp_path / "plain", encoder=smol_encoder, config=cfg,
                         max_sentences=12, progress=False)
    assert plain["negatives"] is None
    assert [h["loss"] for h in plain["history"]] != losses  # the negatives enter the loss

    # the same head trained in memory (seeded, cached vectors) equals the saved one bit for bit
    ms = extract_mentions(bio_file, smol_encoder, max_sentences=12, progress=False)
    vectors, _ = training_negatives([bio_file], [12], smol_encoder, "default", False, 0,
                                    lambda _m: None)
    assert len(vectors) == neg["count"]
    desc = encode_descriptions(smol_encoder, load_descriptions(None, ms.types))
    direct = train_head(ms, desc, cfg, progress=False, negatives=vectors).head
    loaded = ProjectionHead.load(tmp_path / "head")
    a, b = direct.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(loaded.project(ms.vectors), direct.project(ms.vectors))
    assert np.array_equal(loaded.project(vectors), direct.project(vectors))


def test_detector_training_sentences_left_out(bio_file, tmp_path):
    """The sentences a learned detector's record says it sampled from a training file are what
    training negatives leave out (the rule validation.py --detector-samples applies)."""
    from ner_retriever.io.corpus import read_conll
    from ner_retriever.training.detector import training_sentences
    from ner_retriever.training.negatives import detector_training_texts

    folder = tmp_path / "det"
    folder.mkdir()
    (folder / "detector.json").write_text(json.dumps({"training": {
        "files": [bio_file.name, "other.conll"], "options": {"max_sentences": 5, "seed": 0}}}))
    texts = detector_training_texts([bio_file], f"learned:{folder}+spacy")
    assert len(texts) == 5 and texts == training_sentences([bio_file], 5, 0)
    assert texts <= {d.text for d in read_conll(bio_file)}
    assert detector_training_texts([bio_file], "spacy") == set()
    other = tmp_path / "elsewhere.bio"
    other.write_text(bio_file.read_text())
    assert detector_training_texts([other], f"learned:{folder}") == set()  # not its file


@pytest.mark.slow
def test_the_default_model_ships_its_head_and_detector(default_encoder):
    """Gemma 3 270M (the default): its head matches the encoder's settings and was trained on
    Few-NERD INTER train types only; its learned detector reads an early block of the same
    model, so the two share one forward pass."""
    from ner_retriever.detect.registry import build_detector
    from ner_retriever.models.shipped import packaged_head

    cfg = default_encoder.config
    assert (cfg.model, cfg.block, cfg.extra_blocks, cfg.component) == \
        ("gemma3-270m", 15, (7,), "value")  # blocks 15 and 7 side by side
    head = packaged_head(cfg)
    assert head is not None and head.config.input_dim == default_encoder.dim == 512
    assert head.config.extra_blocks == (7,)
    assert packaged_head(cfg.model_copy(update={"extra_blocks": ()})) is None
    folder = resources.files("ner_retriever") / "data" / "heads" / "gemma3-270m"
    with resources.as_file(folder) as path:
        training = json.loads((path / "training.json").read_text())
    assert [Path(d["file"]).name for d in training["data"]] == ["dev.txt", "test.txt"]
    assert training["encoder"]["model"] == "gemma3-270m"
    assert not {"person_actor", "event_election", "product_car"} & set(training["train_types"])
    union = build_detector("learned+spacy", encoder=default_encoder)
    learned = union.detectors[0]
    assert learned.tagger.model == "gemma3-270m" and learned.supports(default_encoder)
    assert learned.tagger.input_dim == default_encoder.model.config.hidden_size
