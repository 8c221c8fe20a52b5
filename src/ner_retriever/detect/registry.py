"""Detector names and configs -> detectors.

``build_detector`` turns a name (``"spacy"``, ``"spacy-ents"``, ``"gold"``, ``"learned"``,
``"learned:<folder>"``, ``"llm"``, ``"llm:<model>"``, ``"gold+spacy"``) or a ``config()`` dict
back into a detector.  The learned and LLM detectors need torch, so their modules are imported
only when such a detector is built (``ner-retriever --help`` stays light).
"""

from __future__ import annotations

from typing import Any

from ner_retriever.detect.base import Detector, GoldDetector, JointDetector, UnionDetector
from ner_retriever.detect.spacy import SPACY_RULES_VERSION, SpacyDetector
from ner_retriever.errors import ConfigError

__all__ = ["DEFAULT_DETECTOR", "DETECTOR_NAMES", "OPTIONAL_DETECTOR_NAMES", "build_detector"]

# The learned tagger (detect.learned) with spaCy's spans where it has none: recall from
# both, and the tagger's confidence in every span weights its vector (config.CONFIDENCE_WEIGHT).
# Chosen end to end on validation data (docs/DETECTION.md, "Choosing the default").
DEFAULT_DETECTOR = "learned+spacy"
DETECTOR_NAMES: tuple[str, ...] = ("spacy", "spacy-ents", "gold")
# Detectors defined in other modules (detect.learned, detect.llm), built on demand.
# "llm:<model>" names the instruction model (case kept).
OPTIONAL_DETECTOR_NAMES: tuple[str, ...] = ("learned", "llm", "llm:<model>")

_SPACY_KEYS = {"model", "candidates", "exclude_labels", "batch_size", "rules"}
_LLM_PREFIX, _LEARNED_PREFIX = "llm:", "learned:"


def _valid_names() -> str:
    names = DETECTOR_NAMES + OPTIONAL_DETECTOR_NAMES
    return ", ".join(repr(n) for n in names) + " (or 'a+b' for a union)"


def _union(members: list[Detector]) -> Detector:
    """A union; with a learned member, one that can share the encoder's forward pass."""
    if any(isinstance(m, JointDetector) for m in members):
        from ner_retriever.detect.learned import JointUnionDetector

        return JointUnionDetector(members)
    return UnionDetector(members)


def build_detector(name_or_config: str | dict[str, Any] | None = None,
                   encoder: Any = None) -> Detector:
    """Build a detector from a name (``"spacy"``, ``"spacy-ents"``, ``"gold"``, ``"learned"``,
    ``"learned:<folder>"`` (weights from ``train-detector``), ``"llm"``, ``"llm:<model>"``,
    ``"learned+spacy"``) or from a dict returned by ``Detector.config()``.

    ``encoder``: an already-loaded ``TransformerEncoder`` that learned detectors run on when
    they detect on their own (without it each loads its own copy of its model, once)."""
    if name_or_config is None:
        name_or_config = DEFAULT_DETECTOR
    if isinstance(name_or_config, str):
        return _from_name(name_or_config, encoder)
    if not isinstance(name_or_config, dict):
        raise ConfigError(
            f"a detector is a name or a config dict, got {type(name_or_config).__name__}"
        )
    return _from_config(name_or_config, encoder)


def _from_name(name: str, encoder: Any) -> Detector:
    raw = name.strip().lower()
    parts = [p.strip() for p in raw.split("+")]
    if len(parts) > 1:
        if any(not p for p in parts):
            raise ConfigError(
                f"bad detector {name!r}: empty part in union; valid names: " + _valid_names()
            )
        return _union([build_detector(p.strip(), encoder) for p in name.strip().split("+")])
    if raw.startswith(_LLM_PREFIX):  # the model name keeps its case
        model = name.strip()[len(_LLM_PREFIX):].strip()
        return build_detector({"name": "llm", "model": model}, encoder)
    if raw.startswith(_LEARNED_PREFIX):  # weights from train-detector; the path keeps its case
        folder = name.strip()[len(_LEARNED_PREFIX):].strip()
        if not folder:
            raise ConfigError("'learned:' needs a folder: learned:PATH (from train-detector)")
        return build_detector({"name": "learned", "path": folder}, encoder)
    return build_detector({"name": raw}, encoder)


def _from_config(config: dict[str, Any], encoder: Any) -> Detector:
    cfg = dict(config)
    name = cfg.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"detector config {config!r} has no 'name'")
    name = name.strip().lower()
    if name in ("spacy", "spacy-ents"):
        return _spacy(name, cfg)
    if name == "gold":
        if cfg:
            raise ConfigError(f"the gold detector takes no options, got {sorted(cfg)}")
        return GoldDetector()
    if name == "learned":
        from ner_retriever.detect.learned import build_learned

        return build_learned(cfg, encoder)
    if name == "llm":
        from ner_retriever.detect.llm import build_llm

        return build_llm(cfg)
    if name == "union":
        members = cfg.pop("detectors", None)
        if cfg:
            raise ConfigError(f"unknown option(s) {sorted(cfg)} for a union detector")
        if not isinstance(members, list) or not members:
            raise ConfigError("a union detector config needs a non-empty 'detectors' list")
        return _union([build_detector(m, encoder) for m in members])
    raise ConfigError(f"unknown detector {name!r}; valid names: " + _valid_names())


def _spacy(name: str, cfg: dict[str, Any]) -> SpacyDetector:
    unknown = set(cfg) - _SPACY_KEYS
    if unknown:
        raise ConfigError(
            f"unknown option(s) {sorted(unknown)} for detector {name!r}; valid: "
            f"{sorted(_SPACY_KEYS)}"
        )
    rules = cfg.pop("rules", SPACY_RULES_VERSION)
    if not isinstance(rules, int) or isinstance(rules, bool) or rules < 0:
        raise ConfigError(f"detector option 'rules' must be a version number, got {rules!r}")
    cfg.setdefault("candidates", name == "spacy")
    return SpacyDetector(**cfg)
