"""Validating what a client sends: the JSON body of ``POST /documents`` (size, deadline, UTF-8,
strict JSON, the corpus rules) and the messages for FastAPI's validation errors."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request

from ner_retriever.serve.schemas import BLANK_MESSAGE, ID_TAGS, NON_BLANK, AddDocumentsBase
from ner_retriever.types import Document

LISTED_ERRORS = 5  # named in a 422's one-line detail
RETURNED_ERRORS = 20  # listed in its "errors" field


def _where(loc: Sequence[Any]) -> str:
    """An error's location as a client wrote it: ``query parameter 'k'``, ``documents[0].id``."""
    loc = list(loc)
    if loc and loc[0] in ("query", "path", "header"):
        # a repeated parameter (q=a&q=b): its values count from 1, the first one unnamed
        names = [str(p) for p in loc[1:] if not isinstance(p, int)]
        values = [p for p in loc[1:] if isinstance(p, int)]
        nth = f" (value {values[0] + 1})" if values and values[0] > 0 else ""
        return f"{loc[0]} parameter {'.'.join(names)!r}{nth}"
    if loc and loc[0] == "body":
        loc = loc[1:]
    if len(loc) >= 2 and loc[-2] == "id" and loc[-1] in ID_TAGS:  # the form an id took
        loc = loc[:-1]
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(error: dict) -> str:
    """pydantic's message, except for the not-blank pattern, which reads badly as a regex."""
    if (error.get("type") == "string_pattern_mismatch"
            and (error.get("ctx") or {}).get("pattern") == NON_BLANK):
        return BLANK_MESSAGE
    return str(error.get("msg", "invalid"))


def validation_message(errors: Sequence[dict]) -> str:
    """The first few errors in one line, each saying where: the 422 response's ``detail``."""
    parts = [f"{_where(e.get('loc', ()))}: {_message(e)}" for e in errors[:LISTED_ERRORS]]
    more = (f" (and {len(errors) - LISTED_ERRORS} more)" if len(errors) > LISTED_ERRORS
            else "")
    return "invalid request: " + "; ".join(parts) + more


def public_errors(errors: Sequence[dict]) -> list[dict]:
    """Validation errors without the offending input (may be large) or non-JSON context."""
    return [{"loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
             "msg": _message(e), "type": str(e.get("type", ""))}
            for e in errors[:RETURNED_ERRORS]]


def reject(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """The error to raise: FastAPI answers it as ``{"detail": message}``."""
    return HTTPException(status_code=status, detail=message, headers=headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes, received within ``timeout`` seconds: a client that
    sends it slowly on purpose would otherwise hold a connection (and the write path) forever."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise reject(413, f"request body is larger than {limit} bytes; send fewer "
                                   "documents per request")
        except ValueError:
            raise reject(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise reject(413, f"request body is larger than {limit} bytes; send fewer "
                                       "documents per request")
                chunks.append(chunk)
    except TimeoutError:
        raise reject(408, f"request body not received within {timeout:g} s",
                      headers={"Connection": "close"}) from None
    return b"".join(chunks)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


# A JSON escape of a UTF-16 surrogate: unpaired, it decodes to a lone surrogate that SQLite and
# the tokenizers cannot encode, so such a body is refused up front.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN or Infinity, valid Unicode), every failure a 400 that says why."""
    if not body.strip():
        raise reject(400, 'request body is empty; expected JSON like {"documents": '
                           '[{"id": "1", "text": "..."}]}')
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                             parse_float=_finite_float)
        if _SURROGATE_ESCAPE.search(body) is not None:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return payload
    except UnicodeEncodeError:
        raise reject(400, "request body is not valid Unicode: an unpaired surrogate escape "
                           "(\\ud800-\\udfff)") from None
    except UnicodeDecodeError as exc:
        raise reject(400, f"request body is not valid UTF-8 ({exc.reason} at byte "
                           f"{exc.start})") from None
    except json.JSONDecodeError as exc:
        raise reject(400, f"malformed JSON body: {exc.msg} (line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except ValueError as exc:
        raise reject(400, f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise reject(400, "malformed JSON body: nested too deeply") from None


def to_documents(request: AddDocumentsBase) -> list[Document]:
    """The validated body as documents. Its model already holds the limits; an id repeated
    in one request is a conflict (409), since JSON Schema cannot state that ids are unique."""
    docs, seen = [], {}
    for i, item in enumerate(request.documents):  # type: ignore[attr-defined]
        doc_id = str(item.id)
        where = f"documents[{i}]"
        if doc_id in seen:
            raise reject(409, f"invalid request: {where}: document id {doc_id!r} repeats "
                              f"documents[{seen[doc_id]}]")
        seen[doc_id] = i
        metadata = {**item.metadata, **(item.model_extra or {})}
        docs.append(Document(id=doc_id, text=item.text, metadata=metadata, source=where))
    return docs
