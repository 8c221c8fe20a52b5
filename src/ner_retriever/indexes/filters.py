"""Metadata filters: the ``--where`` grammar (``field=value``, ``field>=n``, ``field<=n``),
parsed once into typed conditions and run as one SQL query over the catalog's
``documents.metadata`` JSON (SQLite ``json_extract``), giving the sorted document keys the
ranking may return (``hybrid_rank(..., allowed=)``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ner_retriever.errors import ConfigError

# A field is a JSONL key other than id/text; dots reach into nested objects (``a.b``).
FIELD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
# ">=" and "<=" before "=", so "year>=2000" is not read as field "year>" equal to "2000".
OPERATORS = (">=", "<=", "=")
RESERVED_FIELDS = ("id", "text")  # not metadata: the document's own columns

Operator = Literal["=", ">=", "<="]


@dataclass(frozen=True)
class Condition:
    """One ``field OP value``; ``value`` is a number for >= and <=, and for = a string that
    also matches the equal number when it reads as one (``year=2020`` matches 2020 and
    "2020")."""

    field: str
    op: Operator
    value: str | float

    def __str__(self) -> str:
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.field}{self.op}{value}"


def parse_condition(text: str) -> Condition:
    """``"year>=2000"`` -> ``Condition("year", ">=", 2000.0)``; a clear error otherwise."""
    if not isinstance(text, str):
        raise ConfigError(f"where: a condition must be a string like field=value, not "
                          f"{type(text).__name__}")
    for op in OPERATORS:
        field, found, value = text.partition(op)
        if found:
            break
    else:
        raise ConfigError(f"where: {text!r} has no operator: write field=value, field>=n "
                          f"or field<=n")
    field, value = field.strip(), value.strip()
    if not FIELD_PATTERN.fullmatch(field):
        raise ConfigError(f"where: {text!r}: field name {field!r} must be letters, digits, _ "
                          f"or - (dots for nested fields)")
    if field in RESERVED_FIELDS:
        raise ConfigError(f"where: {text!r}: {field!r} is not metadata (only JSONL fields "
                          f"other than id and text are)")
    if op == "=":
        if not value:
            raise ConfigError(f"where: {text!r}: the value after = is empty")
        return Condition(field, "=", value)
    try:
        return Condition(field, op, float(value))  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(f"where: {text!r}: {op} needs a number, not {value!r}") from None


def parse_where(where: str | Sequence[str] | Sequence[Condition] | None
                ) -> tuple[Condition, ...]:
    """Conditions from one string or a list (all must hold); () for None."""
    if where is None:
        return ()
    items = [where] if isinstance(where, (str, Condition)) else list(where)
    return tuple(c if isinstance(c, Condition) else parse_condition(c) for c in items)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def condition_sql(condition: Condition) -> tuple[str, list]:
    """The SQL test of one condition over ``metadata`` and its parameters. A comparison
    holds only for numeric values (a string or missing field never passes >= or <=)."""
    path = "$." + ".".join(f'"{part}"' for part in condition.field.split("."))
    value = f"json_extract(metadata, '{path}')"
    kind = f"json_type(metadata, '{path}')"
    if condition.op != "=":
        return (f"({kind} IN ('integer', 'real') AND {value} {condition.op} ?)",
                [condition.value])
    number = _number(condition.value)
    if number is None:
        return f"({kind} = 'text' AND {value} = ?)", [condition.value]
    return (f"(({kind} = 'text' AND {value} = ?) OR ({kind} IN ('integer', 'real') "
            f"AND {value} = ?))", [condition.value, number])


def matching_keys(index, conditions: Sequence[Condition]) -> np.ndarray:
    """Sorted keys of the documents (of an index's catalog) whose metadata meets every
    condition."""
    parts, params = zip(*(condition_sql(c) for c in conditions)) if conditions else ((), ())
    return index.select_keys(" AND ".join(parts) if parts else "1",
                             [p for group in params for p in group])