"""The entity inventory: the distinct entities of a type in the whole index,
``Retriever.entities("river")``.

Mentions come from the exhaustive ranking (every document past the cut-off) and count only when
their own fused score (:attr:`Candidates.row_fused`: the mention in place of its document's
best) passes the same cut-off, so a document about rivers that also names a city does not list
the city. Mentions group by normalised text (case-folded, whitespace collapsed); a group shows
its most frequent surface form and scores as its best mention.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ner_retriever.config import INVENTORY_TOP
from ner_retriever.retrieve.fusion import Candidates

EXAMPLE_DOCS = 3  # documents listed per entity, best first
DEFAULT_TOP = INVENTORY_TOP


def normalise_name(text: str) -> str:
    """The grouping key of a mention text.

    >>> normalise_name("  The   DANUBE ")
    'the danube'
    """
    return " ".join(text.casefold().split())


@dataclass(frozen=True)
class Entity:
    """One distinct entity: how many documents and mentions name it, its best mention score,
    and the documents of its best mentions."""

    text: str
    documents: int
    mentions: int
    score: float
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "documents": self.documents, "mentions": self.mentions,
                "score": self.score, "examples": list(self.examples)}


@dataclass
class _Group:
    score: float = -np.inf
    forms: Counter = field(default_factory=Counter)
    docs: dict[int, float] = field(default_factory=dict)  # doc key -> best mention score
    mentions: int = 0

    def add(self, text: str, key: int, score: float) -> None:
        self.forms[text] += 1
        self.mentions += 1
        self.score = max(self.score, score)
        self.docs[key] = max(self.docs.get(key, -np.inf), score)


def entity_groups(ranked: Candidates, texts: Mapping[int, str], threshold: float
                  ) -> dict[str, _Group]:
    """Passing mentions (``texts``: row -> mention text) grouped by normalised text."""
    groups: dict[str, _Group] = {}
    scores = ranked.row_fused
    for j in np.flatnonzero(scores >= threshold):
        text = texts[int(ranked.rows[j])]
        groups.setdefault(normalise_name(text), _Group()).add(
            text, int(ranked.keys[ranked.doc_index[j]]), float(scores[j]))
    return groups


def inventory(ranked: Candidates, texts: Mapping[int, str], threshold: float, top: int,
              doc_ids: Callable[[list[int]], Mapping[int, str]]) -> list[Entity]:
    """The ``top`` entities by best mention score (ties: more documents, then text);
    ``doc_ids`` maps document keys to ids (called once, for the examples shown)."""
    groups = entity_groups(ranked, texts, threshold)
    best = sorted(groups.items(), key=lambda kv: (-kv[1].score, -len(kv[1].docs), kv[0]))[:top]
    examples = {name: [k for k, _ in sorted(g.docs.items(), key=lambda kv: (-kv[1], kv[0]))
                       ][:EXAMPLE_DOCS] for name, g in best}
    ids = doc_ids(sorted({k for keys in examples.values() for k in keys}))
    return [Entity(_surface(g.forms), len(g.docs), g.mentions, g.score,
                   [ids[k] for k in examples[name]]) for name, g in best]


def _surface(forms: Counter) -> str:
    """The most frequent surface form (ties: the first in sort order, for determinism)."""
    most = max(forms.values())
    return min(f for f, n in forms.items() if n == most)
