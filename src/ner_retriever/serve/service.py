"""What the server adds around a :class:`Retriever`: batched and cached query embedding, one
lock per model, and reads that see a concurrent commit whole or not at all.

Consistency: the index commits a batch (SQLite rows, vector segment, row map) while holding
its mutex, on the same SQLite connection the readers use. Every read here (ranking plus the
document rows it needs, a document with its mentions, the counts) therefore runs under that
mutex too, so a reader sees a batch either entirely or not at all, never a document without
its mentions.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ner_retriever import __version__
from ner_retriever.retrieve.info import index_info
from ner_retriever.retrieve.requests import SearchRequest
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.retrieve.snippets import context_window
from ner_retriever.retrieve.snippets import snippet as make_snippet
from ner_retriever.serve.embedder import LockedEncoder, QueryEmbedder
from ner_retriever.serve.settings import ServeSettings
from ner_retriever.types import Document, SearchResult

CONTEXT_CHARS = 220
MS_PER_S = 1000


def locked_view(retriever: Retriever) -> Retriever:
    """A shallow copy of ``retriever`` (same index, head, detector) whose encoder runs under the
    model's lock, so every model call of the server is serialised; the caller's retriever
    keeps its own encoder, untouched."""
    if isinstance(retriever.encoder, LockedEncoder):
        return retriever
    view = copy.copy(retriever)
    view.encoder = LockedEncoder(retriever.encoder)
    return view


class SearchService:
    """The retriever plus what the server adds: batching, caching, locking."""

    def __init__(self, retriever: Retriever, settings: ServeSettings, owns_retriever: bool = False):
        self.retriever = locked_view(retriever)
        self.settings = settings
        self.owns_retriever = owns_retriever
        self.embedder = QueryEmbedder(self.retriever.embed_search_queries,
                                      cache_size=settings.cache_size,
                                      max_batch=settings.max_batch,
                                      max_wait=settings.max_wait_ms / MS_PER_S)
        self._write_lock = threading.Lock()

    @property
    def writes_enabled(self) -> bool:
        return self.settings.write_token is not None and self.retriever.index.writable

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the index mutex: a concurrent commit is then seen whole or not at all."""
        with self.retriever.index.lock:
            yield

    def close(self) -> None:
        self.embedder.close()
        if self.owns_retriever:
            self.retriever.close()

    # -- reads ---------------------------------------------------------------------------------
    def search(self, req: SearchRequest, vectors: np.ndarray, k: int, offset: int
               ) -> tuple[list[dict], bool, int]:
        """One page of the ranking of ``req`` (``retriever.run``, the one ranking) with the
        rows of ``request_vectors``: (results, whether more follow, documents ranked). ``req``
        asks for ``offset + k + 1`` documents, or all of them when exhaustive."""
        index = self.retriever.index
        if vectors.shape[1] != index.config.dim and not self.retriever.check_request(req):
            vectors = vectors[:, :index.config.dim]  # a cached row also holds the dense part
        with self.reading():
            ranked = self.retriever.run(req, vectors)
            page = ranked[offset: offset + k]
            docs = {r.doc_id: index.get_document(r.doc_id) for r in page}
        return ([self._result(rank, r, docs[r.doc_id].text)
                 for rank, r in enumerate(page, offset + 1)],
                len(ranked) > offset + k, len(ranked))

    def like_vectors(self, req: SearchRequest) -> np.ndarray:
        """The example's row, encoded like an indexed mention through the locked encoder."""
        return self.retriever.request_vectors(req)

    def entities(self, query: str, top: int, where: list[str] | None, must: str | None
                 ) -> list[dict]:
        """The entity inventory (``Retriever.entities``: ranked under the index mutex)."""
        found = self.retriever.entities(query, top=top, where=where, must=must)
        return [e.to_dict() for e in found]

    @staticmethod
    def _result(rank: int, r: SearchResult, text: str) -> dict:
        # a hybrid result can rank on its document vector alone: no mention to centre on
        start, end = (r.mentions[0].start, r.mentions[0].end) if r.mentions else (0, 0)
        lo, hi = context_window(text, start, end, CONTEXT_CHARS)
        return {
            "rank": rank, "doc_id": r.doc_id, "score": r.score,
            "mentions": [{"start": m.start, "end": m.end, "text": m.text, "score": m.score,
                          "query": m.query} for m in r.mentions],
            "snippet": make_snippet(text, start, end),
            "context": {"start": lo, "end": hi, "text": text[lo:hi], "doc_length": len(text)},
        }

    def document(self, doc_id: str) -> dict | None:
        index = self.retriever.index
        with self.reading():
            doc = index.get_document(doc_id)
            if doc is None:
                return None
            mentions = index.mentions_of(doc_id)
        return {"id": doc.id, "text": doc.text, "metadata": doc.metadata,
                "mentions": [{"start": m.start, "end": m.end, "text": m.text, "label": m.label}
                             for m in mentions]}

    def count(self) -> int:
        with self.reading():
            return len(self.retriever.index)

    def stats(self) -> dict:
        with self.reading():
            info = index_info(self.retriever.index)
        for private in ("path", "config"):  # no file-system layout for anonymous clients
            info.pop(private, None)
        info["server"] = {"version": __version__, "writes_enabled": self.writes_enabled,
                          "examples": list(self.settings.examples),
                          "limits": {"max_k": self.settings.max_k,
                                     "max_offset": self.settings.max_offset,
                                     "max_query_chars": self.settings.max_query_chars,
                                     "max_documents": self.settings.max_documents,
                                     "max_body_bytes": self.settings.max_body_bytes},
                          "query_cache": self.embedder.stats()}
        return info

    # -- writes --------------------------------------------------------------------------------
    def add(self, docs: list[Document], if_exists: str) -> dict:
        with self._write_lock:  # one add at a time; searches go on (model shared per turn)
            stats = self.retriever.add(docs, if_exists=if_exists, commit_every=max(1, len(docs)))
            total = self.count()
        return {"added": stats.documents, "skipped": stats.skipped, "mentions": stats.mentions,
                "seconds": round(stats.seconds, 3), "documents": total}

    def delete(self, doc_id: str) -> tuple[bool, int]:
        """Delete one document: (whether the index held it, documents left)."""
        with self._write_lock:
            stats = self.retriever.delete([doc_id])
            return stats.deleted == 1, self.count()
