"""Training on several datasets (training/datasets.py): tags become dataset:tag types, merged
where the mapping says 'same', descriptions per dataset, and a leave-one-dataset-out head
drops the judged dataset's types and every related one; train --datasets end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.training.datasets import (LeaveOut, judged_tags, merge_datasets,
                                             parse_datasets, parse_description_maps)
from ner_retriever.training.mentions import MentionSet
from ner_retriever.training.type_mapping import TypeMapping
from tests.training.test_train import SENTENCES, to_bio

MAPPING = TypeMapping([["a:city", "b:town"]], [["b:singer", "a:person_politician"]])


def mentions(labels: list[str]) -> MentionSet:
    n = len(labels)
    return MentionSet(np.arange(2 * n, dtype=np.float32).reshape(n, 2), np.array(labels),
                      np.arange(n), n)


def test_types_are_merged_where_the_mapping_says_same():
    a = mentions(["city", "river", "city", "organization_other"])
    b = mentions(["town", "singer"])
    sets, desc, dropped = merge_datasets([a, b], ["a", "b"], {"a": None, "b": None}, MAPPING)
    assert sets[0].labels.tolist() == ["a:city", "a:river", "a:city"]  # catch-all dropped
    assert sets[1].labels.tolist() == ["a:city", "b:singer"]
    assert sorted(desc) == ["a:city", "a:river", "b:singer"]
    assert desc["a:city"][0] == "city" and "town" in desc["a:city"]
    assert dropped == []
    np.testing.assert_array_equal(sets[1].vectors, b.vectors)


def test_a_left_out_dataset_takes_its_related_types_along():
    a = mentions(["city", "river", "person_politician"])
    b = mentions(["town", "singer", "band"])
    sets, desc, dropped = merge_datasets([a, b], ["a", "b"], {"a": None, "b": None}, MAPPING,
                                         LeaveOut("b"))
    assert sets[0].labels.tolist() == ["a:river"] and len(sets[1]) == 0
    assert sorted(desc) == ["a:river"]
    assert sorted(dropped) == ["a:city", "a:person_politician", "b:band", "b:singer",
                               "b:town"]
    # only some judged types: the dataset's other types stay
    sets, _, dropped = merge_datasets([a, b], ["a", "b"], {"a": None, "b": None}, MAPPING,
                                      LeaveOut("a", ("river",)))
    assert sets[0].labels.tolist() == ["a:city", "a:person_politician"]
    assert sets[1].labels.tolist() == ["a:city", "b:singer", "b:band"] and dropped == ["a:river"]


def test_names_and_maps_are_checked():
    assert parse_datasets(["fewnerd"], 3) == ["fewnerd"] * 3
    with pytest.raises(ConfigError, match="one per file"):
        parse_datasets(["a", "b"], 3)
    maps = parse_description_maps(["mine=x.json"], ["fewnerd", "mine"])
    assert maps == {"fewnerd": "fewnerd", "mine": "x.json"}
    with pytest.raises(ConfigError, match="DATASET=MAP"):
        parse_description_maps(["x.json"], ["fewnerd"])


def test_judged_tags_come_from_a_file(tmp_path):
    path = tmp_path / "t.bio"
    path.write_text(to_bio(SENTENCES[:3]))
    assert judged_tags(path) == ("location_GPE", "organization_company", "person_politician")


def test_cli_trains_a_leave_one_dataset_out_head(tiny_encoder, tmp_path, monkeypatch):
    from ner_retriever.training.train import TrainConfig, run_training

    monkeypatch.setenv("NER_RETRIEVER_CACHE", str(tmp_path / "cache"))
    first, second = tmp_path / "a.bio", tmp_path / "b.bio"
    first.write_text(to_bio(SENTENCES))
    second.write_text(to_bio(SENTENCES).replace("location_GPE", "HumanSettlement")
                      .replace("art_film", "VisualWork"))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"same": [["b:HumanSettlement", "a:location_GPE"]],
                                   "overlap": [["b:VisualWork", "a:art_film"]]}))
    cfg = TrainConfig(epochs=2, batch_size=16, types_per_batch=4, steps_per_epoch=2,
                      val_fraction=0, cv_folds=0, min_mentions=2)
    summary = run_training([first, second], tmp_path / "all", encoder=tiny_encoder, config=cfg,
                           datasets=["a", "b"], mapping=mapping, progress=False)
    assert "a:location_GPE" in summary["train_types"]
    assert not any(t.startswith("b:HumanSettlement") for t in summary["train_types"])
    lodo = run_training([first, second], tmp_path / "lodo", encoder=tiny_encoder, config=cfg,
                        datasets=["a", "b"], mapping=mapping, leave_out=LeaveOut("b"),
                        progress=False)
    assert all(t.startswith("a:") for t in lodo["train_types"])
    assert "a:location_GPE" not in lodo["train_types"] and "a:art_film" not in lodo["train_types"]
    saved = json.loads((tmp_path / "lodo" / "training.json").read_text())
    assert saved["multi_dataset"]["leave_out"] == {"dataset": "b", "judged_types": None}
    assert "a:art_film" in saved["multi_dataset"]["left_out_types"]
    with pytest.raises(ConfigError, match="--datasets"):
        run_training([first], tmp_path / "x", encoder=tiny_encoder, config=cfg,
                     leave_out=LeaveOut("b"), progress=False)


def test_cli_refuses_a_leave_out_without_datasets(tmp_path):
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    path = tmp_path / "a.bio"
    path.write_text(to_bio(SENTENCES[:2]))
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "h"),
                                      "--leave-out", "wnut17"])
    assert result.exit_code == 1 and "--datasets" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "h"),
                                      "--judged-types", str(path)])
    assert result.exit_code == 1 and "--leave-out" in result.output
