"""The checked-in type mapping and the leave-one-dataset-out selection it drives."""

import json
from importlib import resources

import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.training.type_mapping import TypeMapping


def test_shipped_mapping_loads_and_merges():
    m = TypeMapping.load()
    assert m.training_label("multiconer2", "Politician") == \
        m.training_label("fewnerd", "person_politician")
    assert m.training_label("multiconer2", "Cleric") == "multiconer2:Cleric"
    assert m.overlaps("wnut17", "person", "fewnerd")
    assert not m.overlaps("multiconer2", "Cleric", "fewnerd")


def test_shipped_mapping_keys_are_dataset_tags():
    data = json.loads((resources.files("ner_retriever") / "data" / "type_mapping.json")
                      .read_text())
    for pair in data["same"] + data["overlap"]:
        for key in pair:
            dataset, tag = key.split(":", 1)
            assert dataset in {"fewnerd", "multiconer2", "wnut17"} and tag


def test_leave_one_dataset_out():
    m = TypeMapping([["a:x", "b:x"]], [["c:p", "b:y"]])
    types = [("a", "x"), ("a", "z"), ("b", "x"), ("b", "y"), ("b", "w"), ("c", "p"), ("c", "q")]
    # judged on b: b's data gone, and what the mapping relates to b
    assert m.leave_out(types, "b") == [("a", "z"), ("c", "q")]
    # judged on b's test tag y only: b's other types stay (disjoint by construction)
    assert m.leave_out(types, "b", ["y"]) == [("a", "x"), ("a", "z"), ("b", "x"), ("b", "w"),
                                              ("c", "q")]


def test_bad_mapping_is_a_config_error():
    with pytest.raises(ConfigError, match="two 'same' groups"):
        TypeMapping([["a:x", "b:x"], ["a:x", "c:x"]])
    with pytest.raises(ConfigError, match="dataset:tag"):
        TypeMapping([], [["nodataset", "b:x"]])
