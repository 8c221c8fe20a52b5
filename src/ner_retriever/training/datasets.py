"""Training one head on several datasets: each file's tags become ``dataset:tag`` types, merged
where ``data/type_mapping.json`` says two are the same; a leave-one-dataset-out head drops a
dataset's judged types and every type the mapping relates to them (``TypeMapping.leave_out``).

Descriptions come per dataset: ``DATASET=MAP`` pairs (a JSON file or a shipped map name), else
the shipped map named like the dataset (``fewnerd``, ``multiconer2``, ``wnut17``), else derived
from the tag; a merged type gets every member's descriptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError
from ner_retriever.evaluation.descriptions import SHIPPED_MAPS, is_other_tag
from ner_retriever.training.mentions import MentionSet
from ner_retriever.training.type_mapping import TypeMapping


@dataclass(frozen=True)
class LeaveOut:
    """The dataset a head is judged on, and (optionally) the only tags of it that are judged
    (Few-NERD's test types: its other types stay, being disjoint by construction)."""

    dataset: str
    judged: tuple[str, ...] | None = None

    def summary(self) -> dict:
        return {"dataset": self.dataset,
                "judged_types": None if self.judged is None else list(self.judged)}


def parse_datasets(datasets: Sequence[str], n_files: int) -> list[str]:
    """One dataset name per training file (one name applies to all)."""
    names = [d.strip() for d in datasets]
    if len(names) == 1:
        names *= n_files
    if len(names) != n_files or not all(names) or any(":" in n for n in names):
        raise ConfigError(f"--datasets: give one name (no ':') for all files or one per file "
                          f"({n_files}), not {list(datasets)}")
    return names


def parse_description_maps(values: Sequence[str] | None, datasets: Sequence[str]
                           ) -> dict[str, str | None]:
    """``DATASET=MAP`` pairs -> the map of every dataset (default: its shipped map, if any)."""
    maps: dict[str, str | None] = {d: (d if d in SHIPPED_MAPS else None) for d in datasets}
    for value in values or ():
        name, sep, source = value.partition("=")
        if not sep or name not in maps or not source:
            raise ConfigError(f"--descriptions {value!r}: with --datasets give DATASET=MAP, "
                              f"DATASET one of {sorted(maps)}")
        maps[name] = source
    return maps


def judged_tags(path: str | Path) -> tuple[str, ...]:
    """The tags a CoNLL/BIO file holds (e.g. Few-NERD's test types, for ``LeaveOut.judged``)."""
    from ner_retriever.io.corpus import read_conll

    tags = {s.label for doc in read_conll(Path(path)) for s in doc.spans if s.label}
    if not tags:
        raise ConfigError(f"--judged-types: {path} holds no tagged mentions")
    return tuple(sorted(tags))


def merge_datasets(sets: Sequence[MentionSet], datasets: Sequence[str],
                   description_maps: dict[str, str | None], mapping: TypeMapping,
                   leave_out: LeaveOut | None = None
                   ) -> tuple[list[MentionSet], dict[str, list[str]], list[str]]:
    """Each set relabelled to merged ``dataset:tag`` types, catch-alls and left-out types
    dropped; the descriptions of every kept type; and the ``dataset:tag`` types left out."""
    from ner_retriever.training.validation import load_descriptions

    present = sorted({(d, t) for s, d in zip(sets, datasets) for t in s.types
                      if not is_other_tag(t)})
    kept = set(present) if leave_out is None else set(
        mapping.leave_out(present, leave_out.dataset, leave_out.judged))
    dropped = [f"{d}:{t}" for d, t in present if (d, t) not in kept]
    out, descriptions = [], {}
    for s, d in zip(sets, datasets):
        keep = np.array([(d, t) in kept for t in s.labels.tolist()], dtype=bool)
        part = s.subset(keep)
        own = load_descriptions(description_maps.get(d), part.types)
        for tag in part.types:
            label = mapping.training_label(d, tag)
            merged = descriptions.setdefault(label, [])
            merged += [x for x in own[tag] if x not in merged]
        part.labels = np.array([mapping.training_label(d, t) for t in part.labels.tolist()],
                               dtype=object).astype(str)
        out.append(part)
    return out, descriptions, dropped
