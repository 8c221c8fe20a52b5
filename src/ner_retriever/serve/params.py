"""The search parameters of the HTTP API (``where``, ``must``, ``like``) as patterns the OpenAPI
schema states and the server enforces, so a schema-valid request is one the retriever accepts.

The grammars are the CLI's (``indexes/filters.py``, ``indexes/lexical.py``,
``retrieve/examples.py``), written as regular expressions a little stricter than the
retriever's own checks where those are hard to state (no spaces around a condition's operator,
a decimal number after ``>=``/``<=``, brackets in an example's context only one at a time).
Patterns use explicit ``\\uHHHH`` escapes and lookaheads only, so Python's ``re`` (the server,
schemathesis) and ECMAScript (browsers) read them alike; a value that fails one is refused
with a ``ConfigError`` (422) naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ner_retriever.errors import ConfigError
from ner_retriever.indexes.filters import RESERVED_FIELDS, parse_condition
from ner_retriever.indexes.lexical import check_term
from ner_retriever.retrieve.examples import MAX_EXAMPLE_CHARS, parse_example
from ner_retriever.retrieve.requests import MAX_TYPES
from ner_retriever.serve.schemas import BMP, WHITESPACE, char_class

MAX_WHERE = 16  # conditions in one request
ALNUM = [chr(c) for c in range(BMP) if chr(c).isalnum()]

_FIELD = r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*"
_NUMBER = r"[+\-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?"
_NON_BLANK_CHAR = char_class(WHITESPACE, negate=True)
# field=value (a value holding a character other than whitespace, no >= or <= in it: the
# retriever reads those first), field>=n, field<=n; id and text are not metadata
WHERE_PATTERN = (rf"^(?!(?:{'|'.join(RESERVED_FIELDS)})(?:=|>=|<=)){_FIELD}"
                 rf"(?:=(?![\s\S]*[<>]=)[\s\S]*{_NON_BLANK_CHAR}[\s\S]*|(?:>=|<=){_NUMBER})$")
# a letter or digit somewhere (what the keyword index can match)
MUST_PATTERN = char_class(ALNUM)
# a bare name, or a context with one [[mention]]: elsewhere no [[ or ]], inside no bracket or
# line break and a character other than whitespace
_OUT = r"(?:[^\[\]]|\[(?!\[)|\](?!\]))"
_OUT_NON_BLANK = rf"(?:{char_class(WHITESPACE + ['[', ']'], negate=True)}|\[(?!\[)|\](?!\]))"
_INNER = (rf"[^\[\]\n]*{char_class(WHITESPACE + ['[', ']'], negate=True)}[^\[\]\n]*")
LIKE_PATTERN = rf"^(?:{_OUT}*{_OUT_NON_BLANK}{_OUT}*|{_OUT}*\[\[{_INNER}\]\](?!\]){_OUT}*)$"

WHERE_RULE = ("write field=value, field>=n or field<=n (no spaces around the operator; n a "
              "decimal number such as 2000 or -1.5; id and text are not metadata)")
LIKE_RULE = ('mark one mention in double brackets ("They sailed down the [[Danube]] to '
             'Vienna.") or give a bare name; no other [[ or ]], no [ or ] or line break '
             'inside the mark')


def _search(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


def check_where(where: Sequence[str] | None) -> list[str] | None:
    """The conditions, each refused with the retriever's message or the HTTP rule."""
    if not where:
        return None
    if len(where) > MAX_WHERE:
        raise ConfigError(f"where: at most {MAX_WHERE} conditions, not {len(where)}")
    for text in where:
        parse_condition(text)  # its own message first: it names what is wrong
        if not _search(WHERE_PATTERN, text):
            raise ConfigError(f"where: {text!r}: {WHERE_RULE}")
    return list(where)


def check_must(must: str | None) -> str | None:
    if must is None:
        return None
    term = check_term(must)
    if not _search(MUST_PATTERN, must):
        raise ConfigError(f"must: {must!r} holds no letter or digit of the Basic "
                          f"Multilingual Plane to match")
    return term


def check_like(like: str | None) -> str | None:
    if like is None:
        return None
    parse_example(like)
    if not _search(LIKE_PATTERN, like):
        raise ConfigError(f"the example (like=): {LIKE_RULE}")
    return like


def check_one_query(q: Sequence[str] | None, like: str | None) -> None:
    """Exactly one of the descriptions and the example."""
    if q and like is not None:
        raise ConfigError("give either q (entity types) or like (an example mention), not both")
    if not q and like is None:
        raise ConfigError("give q (an entity type, repeatable) or like (an example mention)")


__all__ = ["LIKE_PATTERN", "MAX_EXAMPLE_CHARS", "MAX_TYPES", "MAX_WHERE", "MUST_PATTERN",
           "WHERE_PATTERN", "check_like", "check_must", "check_one_query", "check_where"]
