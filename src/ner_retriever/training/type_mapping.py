"""Which types of different training datasets are one type, and which a leave-one-dataset-out
head must not see: read from the checked-in ``data/type_mapping.json`` (``dataset:tag`` keys),
so merging and held-out judging follow one written-down decision."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from ner_retriever.errors import ConfigError

MAPPING_FILE = "type_mapping.json"


def _key(dataset: str, tag: str) -> str:
    return f"{dataset}:{tag}"


class TypeMapping:
    """``same`` pairs are merged into one training type; ``same`` and ``overlap`` pairs both
    mark a type as overlapping the other for leave-one-dataset-out selection."""

    def __init__(self, same: Iterable[Iterable[str]], overlap: Iterable[Iterable[str]] = ()):
        self.canonical: dict[str, str] = {}
        self.related: dict[str, set[str]] = {}
        for group in same:
            group = sorted(group)
            for member in group:
                if member in self.canonical:
                    raise ConfigError(f"type mapping: {member} is in two 'same' groups")
                self.canonical[member] = group[0]
            self._relate(group)
        for pair in overlap:
            self._relate(list(pair))

    def _relate(self, group: list[str]) -> None:
        for member in group:
            if ":" not in member:
                raise ConfigError(f"type mapping: {member!r} is not dataset:tag")
            self.related.setdefault(member, set()).update(m for m in group if m != member)

    @staticmethod
    def load(path: str | Path | None = None) -> TypeMapping:
        """The shipped mapping, or one at ``path``."""
        text = (Path(path).read_text() if path is not None else
                (resources.files("ner_retriever") / "data" / MAPPING_FILE).read_text())
        data = json.loads(text)
        return TypeMapping(data.get("same", ()), data.get("overlap", ()))

    def training_label(self, dataset: str, tag: str) -> str:
        """The merged training label: the group's first key where the mapping says 'same'."""
        key = _key(dataset, tag)
        return self.canonical.get(key, key)

    def overlaps(self, dataset: str, tag: str, other: str) -> bool:
        """Whether ``dataset:tag`` is the same as or overlaps a type of dataset ``other``."""
        return any(r.startswith(other + ":") for r in self.related.get(_key(dataset, tag), ()))

    def leave_out(self, types: Iterable[tuple[str, str]], held_out: str,
                  held_out_types: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """The ``(dataset, tag)`` training types of a head judged on ``held_out``: every type the
        mapping relates to one of its types dropped, and its own types too, unless
        ``held_out_types`` names the judged tags (Few-NERD's 17 test types): then its other
        types stay, being disjoint from those by construction."""
        targets = None if held_out_types is None else \
            {_key(held_out, t) for t in held_out_types}
        kept = []
        for dataset, tag in types:
            if dataset == held_out and (targets is None or _key(dataset, tag) in targets):
                continue
            rel = self.related.get(_key(dataset, tag), set())
            hit = any(r.startswith(held_out + ":") for r in rel) if targets is None \
                else bool(rel & targets)
            if not hit:
                kept.append((dataset, tag))
        return kept
