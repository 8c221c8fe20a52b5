"""Entity-type tags -> natural-language type descriptions (the text a user would search for).

A query is a short description such as "politician", never a raw tag such as
``person_politician``. :func:`describe_tag` derives a readable description from any tag;
shipped maps (``data/descriptions/*.json``) give the curated names for the datasets we
evaluate on, and users can pass their own JSON map ``{tag: description}``.

Tags are looked up leniently: ``location_GPE``, ``location-GPE`` and ``GPE`` find the same
entry, and case is ignored when there is no exact match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from ner_retriever.errors import ConfigError

# Few-NERD's coarse types: a tag "coarse-fine" (or "coarse_fine") is described by its fine part.
COARSE_TYPES = frozenset(
    {"art", "building", "event", "location", "organization", "other", "person", "product"}
)

# Abbreviations used as tags or tag parts (CoNLL, OntoNotes, MultiCoNER, Few-NERD).
ABBREVIATIONS = {
    "gpe": "geopolitical entity",
    "loc": "location",
    "per": "person",
    "pers": "person",
    "org": "organization",
    "corp": "corporation",
    "grp": "group",
    "prod": "product",
    "cw": "creative work",
    "fac": "facility",
    "norp": "nationality, religious or political group",
    "misc": "miscellaneous",
    "evt": "event",
    "event": "event",
    "art": "work of art",
    "work_of_art": "work of art",
    "geo": "geographical entity",
    "tim": "time",
    "nat": "natural phenomenon",
}

# Tags that are not a type of their own: catch-alls that are skipped in evaluation.
_OTHER_WORDS = frozenset({"o", "other", "others", "misc", "miscellaneous"})
_OTHER_CAMEL = re.compile(r"^Other[A-Z]")  # MultiCoNER: OtherPER, OtherLOC, OtherPROD, ...

SHIPPED_MAPS = ("fewnerd", "multiconer2", "wnut17")


def _split_coarse(tag: str) -> tuple[str | None, str]:
    """``person_politician`` -> (``person``, ``politician``); other tags -> (None, tag)."""
    for sep in ("-", "_"):
        if sep in tag:
            coarse, fine = tag.split(sep, 1)
            if coarse.lower() in COARSE_TYPES and fine:
                return coarse.lower(), fine
    return None, tag


def is_other_tag(tag: str) -> bool:
    """True for "O" and catch-all tags (``location-other``, ``MISC``, ``OtherPER``)."""
    coarse, fine = _split_coarse(tag)
    if fine.lower() in _OTHER_WORDS:
        return True
    return coarse is None and _OTHER_CAMEL.match(tag) is not None


def _words(part: str) -> list[str]:
    """Split CamelCase / ACRONYM / snake / kebab parts into lower-case words, expanding
    abbreviations: ``MusicalGRP`` -> ["musical", "group"], ``HumanSettlement`` ->
    ["human", "settlement"], ``creative-work`` -> ["creative", "work"]."""
    if part.lower() in ABBREVIATIONS:
        return [ABBREVIATIONS[part.lower()]]
    pieces = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", part)
    out = []
    for piece in pieces:
        low = piece.lower()
        if piece.isupper() and len(piece) > 1 and low in ABBREVIATIONS:
            out.append(ABBREVIATIONS[low])
        else:
            out.append(low)
    return out


def describe_tag(tag: str) -> str:
    """A readable description derived from a tag alone.

    >>> describe_tag("person-politician"), describe_tag("location_GPE")
    ('politician', 'geopolitical entity')
    >>> describe_tag("CreativeWork"), describe_tag("OtherPER"), describe_tag("Medication/Vaccine")
    ('creative work', 'person', 'medication or vaccine')
    """
    tag = tag.strip()
    if not tag:
        raise ConfigError("cannot describe an empty tag")
    coarse, fine = _split_coarse(tag)
    if coarse is not None and fine.lower() in _OTHER_WORDS:
        return " ".join(_words(coarse))  # "location-other" -> "location"
    alternatives = []
    for alt in fine.split("/"):
        words: list[str] = []
        for part in re.split(r"[\s_\-]+", alt):
            if part:
                words.extend(_words(part))
        if len(words) > 1 and words[0] in ("other", "others"):
            words = words[1:]  # "OtherPER" -> "person"
        if words:
            alternatives.append(" ".join(words))
    # Drop alternatives that repeat an earlier one ("government/governmentagency").
    kept: list[str] = []
    for alt in alternatives:
        if not any(alt.replace(" ", "") == k.replace(" ", "") for k in kept):
            kept.append(alt)
    if not kept:
        return tag
    if len(kept) == 1:
        return kept[0]
    return ", ".join(kept[:-1]) + " or " + kept[-1]


def _lookup_keys(tag: str) -> list[str]:
    coarse, fine = _split_coarse(tag)
    keys = [tag]
    if coarse is not None:
        keys += [f"{coarse}-{fine}", f"{coarse}_{fine}", fine]
    return keys


class Descriptions:
    """A tag -> description mapping with lenient lookup and a derived fallback."""

    def __init__(self, mapping: Mapping[str, str | list[str]] | None = None,
                 source: str | None = None):
        self.mapping = {k: [v] if isinstance(v, str) else list(v)
                        for k, v in (mapping or {}).items()}
        self.source = source
        self._folded = {k.lower(): v for k, v in self.mapping.items()}

    def __call__(self, tag: str) -> str:
        return self.get(tag)

    def get(self, tag: str) -> str:
        """The canonical description (the first one when the map lists several)."""
        return self.get_all(tag)[0]

    def get_all(self, tag: str) -> list[str]:
        """Every description of the tag (a map value may be a string or a list of strings)."""
        for key in _lookup_keys(tag):
            if key in self.mapping:
                return list(self.mapping[key])
        for key in _lookup_keys(tag):
            if key.lower() in self._folded:
                return list(self._folded[key.lower()])
        return [describe_tag(tag)]

    def covers(self, tag: str) -> bool:
        """Whether the map names the tag (rather than falling back to ``describe_tag``)."""
        return any(k in self.mapping or k.lower() in self._folded for k in _lookup_keys(tag))

    def for_tags(self, tags: Iterable[str]) -> dict[str, str]:
        return {t: self.get(t) for t in tags}


def load_descriptions(path_or_name: str | Path | None) -> Descriptions:
    """A user's JSON file ``{tag: description}``, a shipped map by name, or none (derived)."""
    if path_or_name is None:
        return Descriptions()
    name = str(path_or_name)
    if name in SHIPPED_MAPS:
        ref = resources.files("ner_retriever") / "data" / "descriptions" / f"{name}.json"
        return Descriptions(_parse(ref.read_text(encoding="utf-8"), name), source=name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"descriptions: no such file {name!r} (or use one of the shipped maps: "
                          f"{', '.join(SHIPPED_MAPS)})")
    return Descriptions(_parse(path.read_text(encoding="utf-8"), name), source=str(path))


def _parse(text: str, where: str) -> dict[str, list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"descriptions: {where} is not valid JSON: {exc.msg} "
                          f"(line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"descriptions: {where} must hold a JSON object {{tag: description}}")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if key.startswith("_"):  # "_comment" keys
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(
                isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"descriptions: {where}: tag {key!r} needs a non-empty string "
                              "or a list of them")
        out[key] = [v.strip() for v in values]
    return out
