"""IndexConfig's typed records: every existing config.json reads into them and writes back
the same JSON; a damaged record is an error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_retriever import IndexStateError
from ner_retriever.indexes.index import Index
from ner_retriever.indexes.schema import (CONFIG_NAME, DenseRecord, EncoderRecord, HeadRecord,
                                          IndexConfig, NamesRecord)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "index" / CONFIG_NAME


def test_the_golden_index_config_round_trips_byte_for_byte():
    text = GOLDEN.read_text(encoding="utf-8")
    config = IndexConfig.model_validate_json(text)
    assert isinstance(config.encoder, EncoderRecord) and isinstance(config.head, HeadRecord)
    assert config.dense == DenseRecord(model="minilm-l6", max_length=256, dim=384)
    assert config.names == NamesRecord(model="minilm-l6", dim=384)
    assert (config.encoder.block, config.encoder.component) == (22, "value")
    assert config.head.input_dim == config.raw_dim and len(config.head.checksum) == 64
    assert config.head.model_dump()["query_template"] == "mentions of {}"  # a HeadConfig field
    assert config.model_dump_json(indent=2) == text


def test_an_encoder_record_gives_the_encoders_own_settings():
    full = EncoderRecord(model="m", block=3, component="key", prepend_bos=False,
                         query_template="a {}")
    assert full.settings() == {"model": "m", "block": 3, "component": "key",
                               "prepend_bos": False, "query_template": "a {}"}
    assert EncoderRecord(model="hand-made").settings() == {"model": "hand-made"}


def test_records_from_plain_dicts_are_what_create_passes():
    config = IndexConfig(encoder={"model": "m", "block": None, "component": "value",
                                  "prepend_bos": True, "query_template": "mentions of {}"},
                         raw_dim=4, dim=4, head=None, detector={"name": "gold"},
                         dense={"model": "d", "max_length": 8, "dim": 4},
                         names={"model": "d", "dim": 4})
    again = IndexConfig.model_validate_json(config.model_dump_json())
    assert again == config and again.dense.dim == 4 and again.names.model == "d"


@pytest.mark.parametrize("field, value, message", [
    ("dense", {"model": "minilm-l6", "dim": 384}, "dense.max_length"),
    ("dense", {"model": "minilm-l6", "max_length": 256, "dim": 0}, "dense.dim"),
    ("names", {"model": "minilm-l6", "dim": 384, "extra": 1}, "names.extra"),
    ("encoder", {"model": "smollm2-135m", "component": "mystery"}, "encoder.component"),
    ("head", {"input_dim": 192}, "head.checksum"),
])
def test_a_damaged_record_is_an_error_naming_the_file_and_field(tmp_path, field, value, message):
    folder = tmp_path / "idx"
    folder.mkdir()
    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    data[field] = value
    (folder / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(IndexStateError, match="not a valid index config") as err:
        Index.read_config(folder)
    assert str(folder / CONFIG_NAME) in str(err.value) and message in str(err.value)
