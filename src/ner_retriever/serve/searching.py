"""``GET /search`` (one or several entity types, or an example mention; a page, or every
document past the cut-off; metadata and keyword filters) and ``GET /entities`` (the entity
inventory of a type).

Descriptions go through the server's cached, batched query embedder one by one (several q:
their rows stacked); an example is encoded by the retriever through the locked encoder. The
ranking is ``Retriever.run`` under the index mutex (``SearchService.search``).
"""

# No "from __future__ import annotations": FastAPI evaluates the route signatures, which refer
# to the limits in this function's closure.
import asyncio
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Query
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from ner_retriever.config import INVENTORY_TOP
from ner_retriever.errors import UnsupportedRequestError
from ner_retriever.retrieve.requests import SearchRequest
from ner_retriever.serve import params
from ner_retriever.serve.schemas import NON_BLANK, EntitiesOut, ErrorOut, SearchOut
from ner_retriever.serve.service import MS_PER_S, SearchService
from ner_retriever.serve.settings import ServeSettings
from ner_retriever.serve.validation import reject

ERRORS = {400: {"model": ErrorOut, "description": "malformed request"},
          422: {"model": ErrorOut, "description": "invalid parameter, or q and like both "
                                                  "given or both missing"},
          409: {"model": ErrorOut, "description": "the index cannot answer this: all=true, "
                                                  "several q and /entities need a hybrid "
                                                  "index and mode=auto"}}
WHERE_DOC = ("metadata condition, repeatable (all must hold): field=value, field>=n or "
             "field<=n, no spaces around the operator")
MUST_DOC = "only documents whose text contains this word or phrase (case-insensitive)"


def _filters(settings: ServeSettings):
    """The ``where`` and ``must`` parameters, shared by both routes."""
    where = Annotated[list[Annotated[str, StringConstraints(max_length=settings.max_query_chars)]]
                      | None, Query(max_length=params.MAX_WHERE, description=WHERE_DOC,
                                    json_schema_extra={"items": {
                                        "type": "string", "pattern": params.WHERE_PATTERN,
                                        "maxLength": settings.max_query_chars}})]
    must = Annotated[str | None, Query(max_length=settings.max_query_chars, description=MUST_DOC,
                                       json_schema_extra={"pattern": params.MUST_PATTERN})]
    return where, must


def check_capability(service: SearchService, req: SearchRequest, what: str) -> None:
    """A cut-off needs fused scores: 409 on a mention-only index or with mode=mentions (the
    retriever's own check, ``Retriever.check_request``)."""
    try:
        service.retriever.check_request(req, what)
    except UnsupportedRequestError as exc:
        raise reject(409, str(exc).replace(f" {service.retriever.index.path}", "")) from None


async def _vectors(service: SearchService, req: SearchRequest) -> tuple[np.ndarray, bool]:
    """The rows of ``req`` and whether every one came from the cache."""
    if req.like is not None:
        return await run_in_threadpool(service.like_vectors, req), False
    submitted = [service.embedder.submit(query) for query in req.queries]
    # shielded: a client hanging up must not cancel a vector other requests may share
    rows = [await asyncio.shield(asyncio.wrap_future(future)) for future, _ in submitted]
    return np.stack(rows), all(cached for _, cached in submitted)


def register_search(app: FastAPI, service: SearchService, settings: ServeSettings) -> None:
    """``GET /search``, its parameters bounded by the settings."""
    text = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_query_chars,
                                            pattern=NON_BLANK)]
    where_param, must_param = _filters(settings)

    @app.get("/search", response_model=SearchOut, response_model_exclude_none=True,
             responses=ERRORS, tags=["search"])
    async def search(
        q: Annotated[list[text] | None, Query(  # type: ignore[valid-type]
            max_length=params.MAX_TYPES,
            description='an entity type in your words, e.g. "politician"; repeat it for '
                        'documents mentioning an entity of each type')] = None,
        like: Annotated[str | None, Query(
            max_length=params.MAX_EXAMPLE_CHARS, json_schema_extra={"pattern": params.LIKE_PATTERN},
            description='query by example instead of q: "They sailed down the [[Danube]] to '
                        'Vienna." (one mention in double brackets) or a bare name')] = None,
        k: Annotated[int, Query(ge=1, le=settings.max_k, description="results per page")] = 10,
        offset: Annotated[int, Query(ge=0, le=settings.max_offset,
                                     description="skip this many results (for 'more')")] = 0,
        per_doc: Annotated[int, Query(ge=1, le=settings.max_per_doc,
                                      description="matching mentions shown per document")] = 3,
        mode: Annotated[Literal["auto", "mentions"], Query(
            description="auto: hybrid on a hybrid index (mention and document scores fused), "
                        "else best mention; mentions: best-mention cosine only")] = "auto",
        exhaustive: Annotated[bool, Query(
            alias="all", description="every document past the score cut-off, paged by k and "
                                     "offset (total says how many)")] = False,
        where: where_param = None,
        must: must_param = None,
    ) -> dict:
        """Rank documents by their mentions (fused with a document score on a hybrid index);
        mentions carry document offsets. Exactly one of q and like."""
        started = time.perf_counter()
        params.check_one_query(q, like)
        req = SearchRequest.of(q or None, params.check_like(like), params.check_where(where),
                               params.check_must(must), k=offset + k + 1, per_doc=per_doc,
                               mode=mode, exhaustive=exhaustive)
        if req.cut_off:
            check_capability(service, req, "several types" if req.combined else "all=true")
        vectors, cached = await _vectors(service, req)
        results, has_more, ranked = await run_in_threadpool(service.search, req, vectors, k,
                                                            offset)
        return {"query": req.query, "queries": req.labels,
                "threshold": service.retriever.threshold if req.cut_off else None,
                "total": ranked if req.exhaustive else None,
                "k": k, "offset": offset, "has_more": has_more, "cached": cached,
                "took_ms": round((time.perf_counter() - started) * MS_PER_S, 2),
                "results": results}


def register_entities(app: FastAPI, service: SearchService, settings: ServeSettings) -> None:
    """``GET /entities``: the distinct entities of a type in the whole index."""
    where_param, must_param = _filters(settings)

    @app.get("/entities", response_model=EntitiesOut, responses=ERRORS, tags=["search"])
    async def entities(
        q: Annotated[str, Query(min_length=1, max_length=settings.max_query_chars,
                                pattern=NON_BLANK, description='an entity type, e.g. "river"')],
        top: Annotated[int, Query(ge=1, le=settings.max_entities,
                                  description="entities to list")] = INVENTORY_TOP,
        where: where_param = None,
        must: must_param = None,
    ) -> dict:
        """Mentions past the exhaustive cut-off, grouped by case-folded text, best first (needs
        a hybrid index); each entity lists a few of its documents."""
        query = q.strip()
        where, must = params.check_where(where), params.check_must(must)
        req = SearchRequest.of(query, None, where, must, exhaustive=True)
        check_capability(service, req, "/entities")
        found = await run_in_threadpool(service.entities, query, top, where, must)
        return {"query": query, "threshold": service.retriever.threshold, "entities": found}
