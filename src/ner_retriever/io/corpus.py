"""Streaming corpus readers: JSONL, plain text, a folder of .txt files, and CoNLL/BIO.

Every reader is a generator that holds one line (or, for folders, one file) at a time, so
corpora larger than memory can be indexed. Bytes are decoded line by line so that an
invalid UTF-8 sequence is reported with its line number. Problems in the input raise
``CorpusError`` naming the file and the 1-based line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.types import Document, Span

FORMATS = ("auto", "jsonl", "text", "folder", "conll")

_JSONL_SUFFIXES = {".jsonl", ".json"}
_CONLL_SUFFIXES = {".conll", ".bio", ".iob"}
# A tag that can only be a tag: "O" or a BIOES prefix. Used to tell a "#" token line
# (a WNUT hashtag) from a comment, and to sniff CoNLL files with other extensions.
_STRICT_TAG = re.compile(r"O|[BIES]-.+")
_SNIFF_LINES = 1000
_READ_CHUNK = 1 << 20  # bytes hashed per read
FILE_DIGEST_CHARS = 16  # hex digits of a data file's sha256 in cache keys

T = TypeVar("T")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` per physical line, without the line ending.

    Reads bytes and splits on ``\\n`` only, so line numbers match what editors show even when
    the text contains other Unicode line separators.
    """
    name = str(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CorpusError(exc.strerror or str(exc), name) from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"invalid UTF-8 ({exc.reason})", name, number) from exc
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text.rstrip("\r\n")


# A JSON escape of a UTF-16 surrogate; paired ones decode to one character, unpaired ones to
# a lone surrogate that no UTF-8 encoder (SQLite, tokenizers) accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


def _has_lone_surrogate(record: object) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_jsonl(path: str | Path) -> Iterator[Document]:
    """One JSON object per line: ``id`` (str or int) and ``text``; other keys become metadata."""
    path = Path(path)
    name = str(path)
    seen: set[str] = set()
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            message = f"malformed JSON: {exc.msg} (column {exc.colno})"
            raise CorpusError(message, name, number) from exc
        except RecursionError:
            raise CorpusError("malformed JSON: nested too deeply", name, number) from None
        except ValueError as exc:  # NaN/Infinity, 1e999, an integer of 4300+ digits
            raise CorpusError(f"malformed JSON: {exc}", name, number) from None
        if _SURROGATE_ESCAPE.search(line) is not None and _has_lone_surrogate(record):
            raise CorpusError("invalid Unicode: an unpaired surrogate escape (\\ud800-\\udfff)",
                              name, number)
        if not isinstance(record, dict):
            raise CorpusError(f"expected a JSON object, got {type(record).__name__}", name, number)
        if "id" not in record:
            raise CorpusError('missing "id"', name, number)
        raw_id = record.pop("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise CorpusError(f'"id" must be a string or integer, got {raw_id!r}', name, number)
        doc_id = str(raw_id)
        if not doc_id.strip():
            raise CorpusError('"id" is empty', name, number)
        if "text" not in record:
            raise CorpusError('missing "text"', name, number)
        text = record.pop("text")
        if not isinstance(text, str):
            raise CorpusError(f'"text" must be a string, got {type(text).__name__}', name, number)
        if not text.strip():
            raise CorpusError(f"document {doc_id!r} has empty text", name, number)
        if doc_id in seen:
            raise CorpusError(f"duplicate document id {doc_id!r}", name, number)
        seen.add(doc_id)
        yield Document(id=doc_id, text=text, metadata=record, source=f"{name}:{number}")


def read_text(path: str | Path) -> Iterator[Document]:
    """One document per non-blank line; the id is the physical line number."""
    path = Path(path)
    name = str(path)
    for number, line in _lines(path):
        if line.strip():
            yield Document(id=str(number), text=line, source=f"{name}:{number}")


def read_folder(path: str | Path) -> Iterator[Document]:
    """Each ``*.txt`` file below ``path`` (recursive, sorted) is a document; id = relative path."""
    root = Path(path)
    files = sorted(
        (p.relative_to(root).as_posix(), p) for p in root.rglob("*.txt") if p.is_file()
    )
    if not files:
        raise CorpusError("no *.txt files found", str(root))
    for rel, file in files:
        name = str(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CorpusError(exc.strerror or str(exc), name) from exc
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise CorpusError(f"invalid UTF-8 ({exc.reason})", name, line) from exc
        if not text.strip():
            raise CorpusError("file is empty", name)
        yield Document(id=rel, text=text, source=f"{name}:1")


def _parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into ``(scheme, type)``; scheme is O, B, I, E, S, or "" for a bare IO tag."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-":
        return tag[0], tag[2:]
    return "", tag


def _spans_from_tags(tags: list[str], starts: list[int], ends: list[int]) -> tuple[Span, ...]:
    """Decode BIO, BIOES or IO tags into character spans, repairing ill-formed sequences.

    An ``I-x`` (or ``E-x``) that does not continue an open ``x`` span starts a new one, the
    usual lenient reading (as in seqeval); consecutive identical bare tags form one span.
    """
    spans: list[Span] = []
    open_type: str | None = None
    open_start = 0
    last = 0

    def close() -> None:
        nonlocal open_type
        if open_type is not None:
            spans.append(Span(starts[open_start], ends[last], open_type))
            open_type = None

    for i, tag in enumerate(tags):
        scheme, label = _parse_tag(tag)
        continues = scheme in ("I", "E", "") and label == open_type
        if not continues:
            close()
            if label is not None:
                open_type, open_start = label, i
        last = i
        if scheme in ("E", "S"):
            close()
    close()
    return tuple(spans)


def _is_token_line(columns: list[str]) -> bool:
    """True for a ``#`` line that is really a token (a hashtag or "#") followed by a clear tag."""
    return len(columns) >= 2 and _STRICT_TAG.fullmatch(columns[-1]) is not None


def _sentence(tokens: list[str], tags: list[str], doc_id: str, source: str) -> Document:
    """One sentence: tokens joined by single spaces, gold spans at their character offsets."""
    starts: list[int] = []
    ends: list[int] = []
    offset = 0
    for token in tokens:
        starts.append(offset)
        offset += len(token)
        ends.append(offset)
        offset += 1
    return Document(id=doc_id, text=" ".join(tokens), spans=_spans_from_tags(tags, starts, ends),
                    source=source)


def read_conll(path: str | Path) -> Iterator[Document]:
    """CoNLL/BIO sentences as documents with gold ``spans``.

    The token is the first column and the tag the last, so both ``token<TAB>tag`` and
    MultiCoNER's ``token _ _ TAG`` work. A blank line ends a sentence; ``# id X`` names the
    next sentence; other comments and ``-DOCSTART-`` lines are skipped.
    """
    path = Path(path)
    name = str(path)
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    next_id: str | None = None
    seen_sentences = 0

    def flush() -> Iterator[Document]:
        nonlocal next_id, seen_sentences
        if not tokens:
            return
        seen_sentences += 1
        doc_id = next_id if next_id is not None else f"{path.name}:{seen_sentences}"
        next_id = None
        yield _sentence(tokens, tags, doc_id, f"{name}:{first_line}")
        tokens.clear()
        tags.clear()

    for number, line in _lines(path):
        columns = line.split()
        if not columns:
            yield from flush()
            continue
        if columns[0] == "-DOCSTART-":
            yield from flush()
            continue
        if columns[0].startswith("#") and not _is_token_line(columns):
            if columns[:2] == ["#", "id"] and len(columns) >= 3:
                yield from flush()
                next_id = columns[2]
            continue
        if len(columns) < 2:
            raise CorpusError(
                f"expected a token and a tag separated by whitespace, got {line.strip()!r}",
                name,
                number,
            )
        if not tokens:
            first_line = number
        tokens.append(columns[0])
        tags.append(columns[-1])
    yield from flush()


def _looks_like_conll(path: Path) -> bool:
    """Sniff a file: its first content line has >= 2 columns and ends in an O/B-/I- tag."""
    try:
        with path.open("rb") as handle:
            for _, raw in zip(range(_SNIFF_LINES), handle):
                columns = raw.decode("utf-8", errors="replace").split()
                if not columns or columns[0] == "-DOCSTART-":
                    continue
                if columns[0].startswith("#") and not _is_token_line(columns):
                    continue
                return len(columns) >= 2 and re.fullmatch(r"O|[BI]-.+", columns[-1]) is not None
    except OSError as exc:
        raise CorpusError(exc.strerror or str(exc), str(path)) from exc
    return False


_READERS = {"jsonl": read_jsonl, "text": read_text, "folder": read_folder, "conll": read_conll}


def detect_format(path: Path) -> str:
    """Guess the reader for ``path`` from its type, extension and, failing that, its content."""
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _CONLL_SUFFIXES or _looks_like_conll(path):
        return "conll"
    return "text"


def read_corpus(path: str | Path, format: str = "auto") -> Iterator[Document]:
    """Open a corpus in any supported format; path and format problems raise here, not later."""
    if format not in FORMATS:
        raise ConfigError(f"unknown corpus format {format!r}; valid formats: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise CorpusError("no such file or directory", str(path))
    if format == "auto":
        format = detect_format(path)
    if format == "folder" and not path.is_dir():
        raise CorpusError("format 'folder' needs a directory", str(path))
    if format != "folder" and path.is_dir():
        raise CorpusError(f"is a directory; use format 'folder' instead of {format!r}", str(path))
    return _READERS[format](path)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (16 hex digits): cache keys follow the content, so a copied,
    moved or re-checked-out data file still hits its cache and an edited one never does."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_READ_CHUNK), b""):
            sha.update(block)
    return sha.hexdigest()[:FILE_DIGEST_CHARS]


def iter_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Group a stream into lists of ``size`` (the last may be shorter) without materialising it."""
    if size < 1:
        raise ConfigError(f"batch size must be at least 1, got {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
