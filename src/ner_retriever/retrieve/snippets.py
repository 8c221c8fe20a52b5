"""Snippets: the text around a mention, cut at spaces, for results and the web page."""

from __future__ import annotations

SNIPPET_CHARS = 160


def context_window(text: str, start: int, end: int, width: int = SNIPPET_CHARS) -> tuple[int, int]:
    """Offsets of about ``width`` characters around ``text[start:end]``, cut at spaces (offsets,
    so callers such as the web page can highlight inside the window)."""
    if len(text) <= width:
        return 0, len(text)
    pad = max(0, (width - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    if lo > 0:
        space = text.find(" ", lo, start)
        lo = space + 1 if space != -1 else lo
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space != -1 else hi
    return lo, hi


def snippet(text: str, start: int, end: int, width: int = SNIPPET_CHARS) -> str:
    """The context window as text, with ellipses where it was cut.

    >>> snippet("The Danube flows through Vienna and Budapest.", 4, 10, width=20)
    'The Danube flows…'
    """
    lo, hi = context_window(text, start, end, width)
    return ("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else "")
