"""``DELETE /documents/{id}``: remove one document from the live index, with the write token
that ``POST /documents`` needs. Searches running meanwhile see it entirely or not at all."""

# No "from __future__ import annotations": FastAPI evaluates the route signature.
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ner_retriever.serve.routes import WRITE_ERRORS, _check_writer
from ner_retriever.serve.schemas import ErrorOut
from ner_retriever.serve.service import SearchService
from ner_retriever.serve.settings import ServeSettings
from ner_retriever.serve.validation import reject

# The security scheme that routes.install_openapi declares for writes.
WRITE_SECURITY = [{"bearer": []}]
DELETE_ERRORS = {code: WRITE_ERRORS[code] for code in (401, 403)} | {
    404: {"model": ErrorOut, "description": "no such document"}}


class DeleteDocumentOut(BaseModel):
    deleted: str = Field(description="id of the document removed")
    documents: int = Field(description="documents in the index after the delete")


def register_deletes(app: FastAPI, service: SearchService, settings: ServeSettings) -> None:
    """``DELETE /documents/{id}`` (any id, line breaks and slashes included)."""

    @app.delete("/documents/{doc_id:anytext}", response_model=DeleteDocumentOut,
                responses=DELETE_ERRORS, openapi_extra={"security": WRITE_SECURITY},
                tags=["documents"])
    async def delete_document(request: Request, doc_id: Annotated[
            str, PathParam(description="document id")]) -> dict:
        """Delete a document, its mentions and its vectors (needs ``Authorization: Bearer
        <write token>``); it is never returned again. 404 when the index does not hold it."""
        _check_writer(request, service, settings)
        deleted, total = await run_in_threadpool(service.delete, doc_id)
        if not deleted:
            raise reject(404, f"no document with id {doc_id!r}")
        return {"deleted": doc_id, "documents": total}
