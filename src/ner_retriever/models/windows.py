"""How a document becomes model windows: tokenising long texts in pieces, which window holds
a token, which token holds a span's vector, and how the joint pass cuts a long document into
pieces of consecutive windows. Pure functions of token counts and offsets (no model)."""

from __future__ import annotations

import numpy as np

__all__ = ["TOKENIZE_CHARS", "cut_point", "detect_pieces", "first_window", "last_tokens",
           "tokenize", "window_count"]

# Longest piece of text given to the tokenizer at once (see ``tokenize``).
TOKENIZE_CHARS = 100_000
# Windows two consecutive pieces share beyond one window's width: room for the detector
# head's reach (3 tokens each side), so that owned tokens see whole-document states.
_HEAD_REACH_WINDOWS = 2


def cut_point(text: str, pos: int, size: int) -> int:
    """End of the piece of ``text`` starting at ``pos``: at most ``size`` characters, cut just
    before a single space between two non-space characters in the second half of the piece,
    else before any whitespace there, else at ``size``."""
    end = pos + size
    if end >= len(text):
        return len(text)
    lo = pos + size // 2
    cut = end
    while cut > lo:
        cut = text.rfind(" ", lo, cut)
        if cut <= lo:
            break
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut
    for cut in range(end, lo, -1):
        if text[cut].isspace():
            return cut
    return end


def last_tokens(starts: np.ndarray, ends: np.ndarray, span_ends: np.ndarray) -> np.ndarray:
    """Per span end: the last real token (one that covers characters) starting before it, 0 if
    none. This is the token whose state is a span's vector, in encoding and in the joint pass."""
    real = ends > starts
    last_real = np.maximum.accumulate(np.where(real, np.arange(len(starts)), -1))
    if np.all(starts[1:] >= starts[:-1]):  # offsets in text order: binary search
        before = np.searchsorted(starts, span_ends, side="left") - 1
        toks = np.where(before >= 0, last_real[np.maximum(before, 0)], -1)
    else:  # pragma: no cover - no tokenizer we know reorders offsets; scan to be safe
        toks = np.array([(lambda c: c[-1] if len(c) else -1)(
            np.nonzero((starts < e) & real)[0]) for e in span_ends], dtype=np.int64)
    return np.maximum(toks, 0)


def window_count(n_tokens: int, width: int, step: int) -> int:
    return 0 if n_tokens == 0 else (1 if n_tokens <= width else (n_tokens - 1 - width) // step + 2)


def first_window(token: int, width: int, step: int) -> int:
    """The first window holding ``token``: the one that gives it the most left context."""
    return 0 if token < width else (token - width) // step + 1



def tokenize(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids and character start/end offsets as compact arrays.

    A text longer than ``TOKENIZE_CHARS`` is tokenized in pieces, each cut just before a
    single space between two words (a boundary that whitespace, BPE and SentencePiece
    pre-tokenizers all keep), so the tokenizer's per-token Python objects (~600 bytes a
    token) never exist for a whole long document at once: 12 bytes a token here (a 10 MB
    text: 2.5M tokens, 30 MB) instead of ~1.5 GB."""
    ids, starts, ends = [], [], []
    pos = 0
    while pos < len(text):
        cut = cut_point(text, pos, TOKENIZE_CHARS)
        enc = tokenizer(text[pos:cut], add_special_tokens=False,
                        return_offsets_mapping=True, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        if enc["input_ids"]:
            ids.append(np.asarray(enc["input_ids"], dtype=np.int32))
            offsets = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2) + pos
            starts.append(offsets[:, 0])
            ends.append(offsets[:, 1])
        pos = cut
    if not ids:
        empty = np.zeros(0, np.int32)
        return empty, empty, empty
    return np.concatenate(ids), np.concatenate(starts), np.concatenate(ends)


def detect_pieces(doc: int, n_tokens: int, width: int, step: int, max_tokens: int
                  ) -> list[tuple[int, int, int, int, int]]:
    """``(doc, first token, end token, own from, own to)`` pieces of one document.

    A piece is a run of the document's own windows (at most ``max_tokens`` tokens); the
    next piece starts ``shared`` windows before this one ends, and each piece owns the
    tokens up to the middle of what it shares with the next. ``shared`` is chosen so that
    every window holding an owned token, or a token a few places away (the detector head
    looks 3 tokens each side), lies inside the piece: an owned token then gets exactly the
    states (and a span ending there exactly the vector) of a pass over the whole document.
    A document that fits is one piece, processed as before (one without tokens keeps the
    spans ``decide`` gives it, with zero vectors)."""
    count = window_count(n_tokens, width, step)
    shared = _HEAD_REACH_WINDOWS + -(-width // step)
    per_piece = max(shared + 1, (max_tokens - width) // step + 1)
    if count <= per_piece:
        return [(doc, 0, n_tokens, 0, max(n_tokens, 1))]
    stride = per_piece - shared
    margin = ((shared - 1) * step + width) // 2  # middle of the tokens two pieces share
    out, w = [], 0
    while True:
        last = min(w + per_piece, count)
        own_from = 0 if w == 0 else w * step + margin
        own_to = n_tokens if last == count else (w + stride) * step + margin
        out.append((doc, w * step, min((last - 1) * step + width, n_tokens), own_from, own_to))
        if last == count:
            return out
        w += stride
