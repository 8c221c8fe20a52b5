"""benchmarks/validation.py: fold reports merge into one macro over every type, and a head's
training.json tells which evaluated types it has seen (no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    from validation import merge, parse_args, seen_count
finally:
    sys.path.pop(0)


def _report(per_type: dict[str, float]) -> dict:
    return {"results": {"hybrid": {"r_precision": sum(per_type.values()) / len(per_type),
                                   "per_type": per_type}},
            "types": len(per_type), "settings": {"head": {"input_dim": 1}},
            "detection_recall": None}


def test_fold_reports_merge_into_a_macro_over_all_types():
    merged = merge([_report({"a": 1.0}), _report({"b": 0.5, "c": 0.0})])
    assert merged["types"] == 3
    assert merged["results"]["hybrid"]["per_type"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert merged["results"]["hybrid"]["r_precision"] == pytest.approx(0.5)  # not (1 + .25) / 2


def test_a_head_says_which_evaluated_types_it_was_trained_on(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps(
        {"train_types": ["person_politician", "location-GPE"], "val_types": ["art_film"]}))
    types = ["person-politician", "location_GPE", "building_hotel"]
    assert seen_count(str(tmp_path), types) == 2  # '-' and '_' spell the same tag
    assert seen_count(str(tmp_path / "no-such-head"), types) is None
    assert seen_count("none", types) == 0
    # the shipped head was trained on every Few-NERD INTER train type: it has seen them all
    assert seen_count("auto", ["person_politician", "organization_company"]) == 2


def test_defaults_are_the_issue_19_validation_settings():
    args = parse_args([])
    assert args.splits == "fewnerd,multiconer,wnut" and args.fewnerd_sample == 2000
    assert args.head == "auto" and args.group == 1 and args.detector_samples == "1000"
