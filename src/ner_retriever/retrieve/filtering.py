"""The documents a search may return: metadata conditions (``where``) and a keyword
(``must``), turned into the sorted document keys that the ranking takes as ``allowed``.

The filter is applied inside candidate generation (``retrieve/fusion.py``), not to the
results, so a filtered search returns ``k`` documents whenever ``k`` documents pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ner_retriever.indexes.filters import Condition, matching_keys, parse_where
from ner_retriever.indexes.index import Index
from ner_retriever.indexes.lexical import LexicalIndex, check_term


@dataclass(frozen=True)
class SearchFilter:
    """A validated filter: every condition must hold and the text must contain ``must``."""

    where: tuple[Condition, ...] = ()
    must: str | None = None

    @classmethod
    def of(cls, where: str | Sequence[str] | Sequence[Condition] | None = None,
           must: str | None = None) -> SearchFilter:
        """Parse and check both parts (a ``ConfigError`` names the bad one)."""
        return cls(tuple(parse_where(where)), None if must is None else check_term(must))

    @property
    def active(self) -> bool:
        return bool(self.where) or self.must is not None


@dataclass
class Filterer:
    """Computes allowed keys for one open index (the keyword table is opened once)."""

    index: Index
    _lexical: LexicalIndex | None = field(default=None, repr=False)

    def allowed(self, flt: SearchFilter) -> np.ndarray | None:
        """Sorted keys passing ``flt``; None when it filters nothing."""
        if not flt.active:
            return None
        keys = None
        if flt.where:
            with self.index.lock:
                keys = matching_keys(self.index, flt.where)
        if flt.must is not None:
            if self._lexical is None:
                self._lexical = LexicalIndex(self.index)
            lexical = self._lexical.keys(flt.must)
            keys = lexical if keys is None else np.intersect1d(keys, lexical)
        return np.asarray(keys, np.int64)
