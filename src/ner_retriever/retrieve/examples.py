"""Query by example: ``search(like="They sailed down the [[Danube]] to Vienna.")``.

The example mention (marked with double brackets in its context, or a bare name) is encoded
exactly as an indexed mention is (the encoder's span vector, then the head's document side), so
its vector lands among the mentions of the same type; on a hybrid index the dense and names
sides take the mention's text, as they take a type description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ner_retriever.errors import ConfigError

MARK = re.compile(r"\[\[(.*?)\]\]")
MAX_EXAMPLE_CHARS = 2000


@dataclass(frozen=True)
class Example:
    """An example mention ``text[start:end]`` in its context; ``source``: the example as
    given (brackets included), which is how results name it."""

    text: str
    start: int
    end: int
    source: str = ""

    @property
    def mention(self) -> str:
        return self.text[self.start:self.end]


def parse_example(like: str) -> Example:
    """``"... [[name]] ..."`` -> the context without brackets and the name's span; text without
    brackets is a bare name (the span is all of it).

    >>> parse_example("They sailed down the [[Danube]] to Vienna.").mention
    'Danube'
    >>> parse_example("  Danube ").text
    'Danube'
    """
    if not isinstance(like, str) or not like.strip():
        raise ConfigError("the example (like=) is empty")
    if len(like) > MAX_EXAMPLE_CHARS:
        raise ConfigError(f"the example (like=) has {len(like)} characters; at most "
                          f"{MAX_EXAMPLE_CHARS}")
    marks = list(MARK.finditer(like))
    if not marks:
        if "[[" in like or "]]" in like:
            raise ConfigError(f"the example (like=) has an unclosed [[ ]] mark: {like!r}")
        bare = like.strip()
        return Example(bare, 0, len(bare), like)
    if len(marks) > 1:
        raise ConfigError(f"the example (like=) marks {len(marks)} mentions with [[ ]]; "
                          f"mark one")
    mark = marks[0]
    inner = mark.group(1)
    if not inner.strip():
        raise ConfigError("the example's [[ ]] mark is empty")
    text = like[:mark.start()] + inner + like[mark.end():]
    if "[[" in text or "]]" in text:
        raise ConfigError(f"the example (like=) has an unclosed [[ ]] mark: {like!r}")
    lead = len(inner) - len(inner.lstrip())
    start = mark.start() + lead
    return Example(text, start, start + len(inner.strip()), like)
