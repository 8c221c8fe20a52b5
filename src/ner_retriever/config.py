"""Settings shared by indexing, search and evaluation, each with its bound checked in one place.

The ranking's constants were chosen by cross-validation over Few-NERD INTER *training* types
(``benchmarks/hybrid_cv.py``, docs/RESULTS.md), never on test types; search and evaluation
read them from :class:`FusionConfig` so both rank alike. Importing this module is cheap (no
torch), so the CLI can validate before loading a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ner_retriever.errors import ConfigError

MAX_K = 10_000  # most documents one search returns (and most feedback documents)
INVENTORY_TOP = 50  # entities an inventory lists by default

# Weight on the standardised mention score; the rest goes to the document score. 0.55 and 0.6
# tie in the cross-validation (0.5751 / 0.5752 vs 0.5717 for 0.5); 0.6 is the argmax.
HYBRID_WEIGHT = 0.6
# Temperature of the soft maximum over a document's mentions on the mention side.
MENTION_TEMPERATURE = 0.05
# Weight of the third side, the mention *names* (each mention's text embedded alone with the
# dense model, best name per document): + NAME_WEIGHT * z(name score) (+0.0139, 5 of 5 folds).
NAME_WEIGHT = 0.2
# Pseudo-relevance feedback (Rocchio): a first fused ranking's top FEEDBACK_DOCS documents lend
# each side their best-matching vector; each side's query becomes q + FEEDBACK_WEIGHT *
# mean(those), renormalised, and the ranking runs again (+0.038, 4 of 5 folds).
FEEDBACK_DOCS = 20
FEEDBACK_WEIGHT = 1.0
# A detected mention's vector is stored scaled by confidence ** CONFIDENCE_WEIGHT, so a doubtful
# span can still be found but rarely outranks a sure one (docs/DETECTION.md).
CONFIDENCE_WEIGHT = 0.5
MAX_CONFIDENCE_WEIGHT = 100  # exclusive: confidence ** 100 already rounds doubtful spans to 0
CALIBRATION_DOCS = 1024  # documents whose scores standardise each side of a query
# Documents fetched from each side before fusing: CANDIDATE_FACTOR * k, at least
# MIN_CANDIDATES; enough that the fused top k is almost always among them (checked against
# fusing every document, docs/RESULTS.md).
CANDIDATE_FACTOR = 4
MIN_CANDIDATES = 100
# Exhaustive mode (search --all, entities, several types): a document (or mention) counts when
# its fused score, in standard units of the calibration sample, is at least the cut-off of its
# encoder model: the macro-F1 maximum (grid 0-6 step 0.05, lowest on ties) over the Few-NERD
# INTER *training* types with detected mentions, default fusion, the model's shipped head and
# detector (benchmarks/features.py, docs/FEATURES.md), applied unchanged everywhere else.
# Gemma 3 270M (blocks 15+7): 2.60 (macro F1 0.532); SmolLM2-135M: 2.40 (0.507). Other models
# (and other blocks of these) take the default model's.
EXHAUSTIVE_THRESHOLDS = {"gemma3-270m": 2.60, "smollm2-135m": 2.40}
EXHAUSTIVE_THRESHOLD = EXHAUSTIVE_THRESHOLDS["gemma3-270m"]


def exhaustive_threshold(model: str) -> float:
    """The exhaustive-mode cut-off for an index built with ``model``.

    >>> exhaustive_threshold("smollm2-135m"), exhaustive_threshold("my/other-model")
    (2.4, 2.6)
    """
    return EXHAUSTIVE_THRESHOLDS.get(model, EXHAUSTIVE_THRESHOLD)

IfExists = Literal["error", "skip", "update"]
IF_EXISTS = ("error", "skip", "update")


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, not {k}")
    return k


def check_feedback(feedback: int) -> int:
    if not 0 <= feedback <= MAX_K:
        raise ConfigError(f"feedback must be between 0 and {MAX_K} documents, not {feedback}")
    return feedback


def check_weight(weight: float) -> float:
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"hybrid weight must be in [0, 1], got {weight}")
    return weight


def check_confidence_weight(weight: float) -> float:
    if not (isinstance(weight, (int, float)) and 0 <= weight < MAX_CONFIDENCE_WEIGHT):
        raise ConfigError(f"confidence_weight must be a number from 0 to below "
                          f"{MAX_CONFIDENCE_WEIGHT}, not {weight!r}")
    return weight


def check_query_template(template: str | None) -> str | None:
    if template is not None and template.count("{}") != 1:
        raise ConfigError("the query template must contain '{}' once, where the description "
                          "goes")
    return template


def check_if_exists(if_exists: str) -> str:
    if if_exists not in IF_EXISTS:
        raise ConfigError(f"if_exists must be error, skip or update, not {if_exists!r}")
    return if_exists


@dataclass(frozen=True)
class FusionConfig:
    """How the hybrid ranking fuses its sides; validated once, here."""

    weight: float = HYBRID_WEIGHT
    mention_temperature: float = MENTION_TEMPERATURE
    name_weight: float = NAME_WEIGHT
    feedback_docs: int = FEEDBACK_DOCS
    feedback_weight: float = FEEDBACK_WEIGHT
    calibration_docs: int = CALIBRATION_DOCS

    def __post_init__(self) -> None:
        check_weight(self.weight)
        check_feedback(self.feedback_docs)
        if not (self.mention_temperature > 0 and math.isfinite(self.mention_temperature)):
            raise ConfigError(f"mention temperature must be above 0, not "
                              f"{self.mention_temperature}")
        if self.calibration_docs < 1:
            raise ConfigError(f"calibration needs at least 1 document, not "
                              f"{self.calibration_docs}")

    def candidates(self, k: int) -> int:
        """Documents fetched from each side before fusing a top ``k``.

        >>> FusionConfig().candidates(10), FusionConfig().candidates(50)
        (100, 200)
        """
        return max(CANDIDATE_FACTOR * k, MIN_CANDIDATES)
