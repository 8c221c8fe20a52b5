"""Type descriptions on their own: tags -> readable descriptions, the shipped maps, the
lenient lookup, and a user's JSON file with clear errors."""

from __future__ import annotations

import json

import pytest

from ner_retriever.errors import ConfigError
from ner_retriever.evaluation.descriptions import (SHIPPED_MAPS, Descriptions, describe_tag,
                                                   is_other_tag, load_descriptions)


@pytest.mark.parametrize("tag, words", [
    ("person-politician", "politician"),
    ("location_GPE", "geopolitical entity"),
    ("CreativeWork", "creative work"),
    ("OtherPER", "person"),
    ("location-other", "location"),
    ("Medication/Vaccine", "medication or vaccine"),
])
def test_a_tag_alone_gives_a_readable_description(tag, words):
    assert describe_tag(tag) == words


def test_an_empty_tag_is_refused():
    with pytest.raises(ConfigError, match="empty tag"):
        describe_tag("  ")


@pytest.mark.parametrize("tag, other", [("location-other", True), ("OtherPER", True), ("O", True),
                                        ("person", False), ("person-politician", False)])
def test_other_tags_are_recognised(tag, other):
    assert is_other_tag(tag) is other


@pytest.mark.parametrize("name", SHIPPED_MAPS)
def test_every_shipped_map_loads_with_non_empty_descriptions(name):
    d = load_descriptions(name)
    assert d.source == name and d.mapping
    assert all(v and all(s.strip() == s and s for s in v) for v in d.mapping.values())


def test_lookup_is_lenient_and_falls_back_to_the_tag():
    d = Descriptions({"person-politician": "politician", "city": ["city", "town"]})
    assert d.get("person-politician") == d.get("PERSON-POLITICIAN") == "politician"
    assert d("person_politician") == "politician"  # the other separator
    assert d.get("location-city") == "city"  # the fine part alone
    assert d.get_all("city") == ["city", "town"]
    assert d.covers("Person-Politician") and not d.covers("person-athlete")
    assert d.get("person-athlete") == "athlete"  # derived from the tag
    assert d.for_tags(["city", "OtherPER"]) == {"city": "city", "OtherPER": "person"}


def test_no_map_derives_every_description():
    d = load_descriptions(None)
    assert d.mapping == {} and d.get("art-film") == "film"


def test_a_users_file_loads_and_skips_comments(tmp_path):
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"_comment": "ignored", "PER": " person ", "LOC": ["place", "site"]}))
    d = load_descriptions(path)
    assert d.source == str(path) and d.mapping == {"PER": ["person"], "LOC": ["place", "site"]}


@pytest.mark.parametrize("text, message", [
    ('{"PER": "person",\n "LOC": }', r"not valid JSON: .* \(line 2\)"),
    ('["person"]', "must hold a JSON object"),
    ('{"PER": ""}', "tag 'PER' needs a non-empty string"),
    ('{"PER": []}', "tag 'PER' needs a non-empty string"),
    ('{"PER": ["person", 3]}', "tag 'PER' needs a non-empty string"),
])
def test_a_bad_file_is_a_clear_error_naming_it(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_descriptions(path)
    assert str(path) in str(err.value)


def test_a_missing_file_names_the_shipped_maps(tmp_path):
    with pytest.raises(ConfigError, match="no such file .*fewnerd"):
        load_descriptions(tmp_path / "absent.json")
