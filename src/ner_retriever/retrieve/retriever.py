"""The public entry point: detector + encoder + head + index, behind three verbs
(add, search, info).

>>> from ner_retriever import Retriever, Document                      # doctest: +SKIP
>>> r = Retriever.create("my-index")                                   # doctest: +SKIP
>>> r.add([Document("1", "Angela Merkel met Emmanuel Macron in Paris.")])  # doctest: +SKIP
>>> r.search("politician", k=5)[0].doc_id                              # doctest: +SKIP
'1'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ner_retriever.config import (CONFIDENCE_WEIGHT, FEEDBACK_DOCS, exhaustive_threshold,
                                  HYBRID_WEIGHT, MAX_K, IfExists, check_confidence_weight)
from ner_retriever.choices import SEARCH_MODES
from ner_retriever.detect.base import Detector
from ner_retriever.detect.registry import DEFAULT_DETECTOR, build_detector
from ner_retriever.errors import ConfigError, IndexStateError, UnsupportedRequestError
from ner_retriever.indexes.deletion import CompactStats, DeleteStats, delete_documents
from ner_retriever.indexes.index import Index, IndexConfig
from ner_retriever.indexes.base import store_settings
from ner_retriever.models.dense import DENSE_MODEL, DenseEncoder
from ner_retriever.models.encoder import Encoder, EncoderConfig, TransformerEncoder
from ner_retriever.models.head import ProjectionHead, describe, to_index_space
from ner_retriever.models.shipped import resolve_head
from ner_retriever.pipeline import AddStats, BatchEmbedder, add_documents
from ner_retriever.retrieve.appending import check_append_settings
from ner_retriever.retrieve.filtering import Filterer, SearchFilter
from ner_retriever.retrieve.combine import all_types, rank_types, top_types
from ner_retriever.retrieve.fusion import Queries, hybrid_rank, rank_all
from ner_retriever.retrieve.inventory import DEFAULT_TOP, Entity, inventory
from ner_retriever.retrieve.requests import SearchRequest
from ner_retriever.retrieve.info import index_info
from ner_retriever.retrieve.pooling import DocumentHits
from ner_retriever.retrieve.snippets import snippet
from ner_retriever.retrieve.memo import RequestSource
from ner_retriever.retrieve.sources import IndexSource
from ner_retriever.retrieve.threads import ranking_threads
from ner_retriever.types import Document, MentionHit, SearchResult

HEAD_DIR = "head"
SearchMode = Literal["auto", "hybrid", "mentions"]


class Retriever:
    """Index documents by their entity mentions and find them by a free-text entity type."""

    def __init__(self, index: Index, encoder: Encoder, detector: Detector | dict[str, Any],
                 head: ProjectionHead | None = None, dense: DenseEncoder | None = None):
        self.index, self.encoder, self.head = index, encoder, head
        self._detector = detector  # or the config of an opened index's: built when first needed
        self._dense = dense
        self.source = IndexSource(index)
        self._filterer = Filterer(index)
        # exhaustive mode's cut-off on the fused score (config.EXHAUSTIVE_THRESHOLDS: why)
        self.threshold = exhaustive_threshold(index.config.encoder.model)

    @property
    def detector(self) -> Detector:
        """Built on first use, so searching an index whose detector weights have moved (only
        adding needs them) still works."""
        if isinstance(self._detector, dict):
            try:
                self._detector = build_detector(self._detector, self.encoder)
            except ConfigError as exc:
                raise ConfigError(f"index {self.index.path}: cannot rebuild its detector to add "
                                  f"documents: {exc}") from exc
        return self._detector

    @detector.setter
    def detector(self, detector: Detector) -> None:
        """E.g. one already loaded; that it has the index's settings is the caller's to ensure."""
        self._detector = detector

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, encoder: Encoder | EncoderConfig | None = None,
               detector: Detector | str | dict | None = DEFAULT_DETECTOR,
               head: ProjectionHead | str | Path | None = "auto", store: str = "faiss",
               index_type: str = "flat", storage: str | None = None, uri: str | None = None,
               store_params: dict | None = None, hybrid: bool = True,
               dense_model: str = DENSE_MODEL, names: bool | None = None,
               confidence_weight: float = CONFIDENCE_WEIGHT) -> Retriever:
        """Start a new index at ``path``. ``head="auto"`` uses the trained head shipped for the
        encoder's settings when there is one; ``None`` (or ``"none"``) stores raw vectors.

        ``hybrid`` also stores one ``dense_model`` vector per document, so searches fuse the
        mention score (a soft maximum over the document's mentions) with a whole-document
        score (the better default; docs/RESULTS.md); with ``names`` (default: on for hybrid)
        the same model also embeds each mention's text alone, a third side of the fusion.

        ``store``/``index_type``/``storage``/``uri``/``store_params``: where vectors live and
        how they are searched (see :func:`ner_retriever.indexes.base.store_settings`).

        ``confidence_weight``: mention vectors are stored scaled by the detector's confidence
        in each span to this power (0: unscaled; docs/DETECTION.md, "Confidence")."""
        check_confidence_weight(confidence_weight)
        if names and not hybrid:
            raise ConfigError("mention names are a side of the hybrid ranking: they need "
                              "hybrid=True (--hybrid)")
        names = hybrid if names is None else names
        settings = store_settings(store, index_type, storage, uri, store_params, index_path=path)
        encoder = _as_encoder(encoder)
        if detector is None or isinstance(detector, (str, dict)):
            detector = build_detector(detector, encoder)
        head = resolve_head(head, encoder.config)
        if head is not None and head.config.input_dim != encoder.dim:
            raise ConfigError(f"head expects {head.config.input_dim}-d vectors but "
                              f"{encoder.config.model} blocks "
                              f"{'+'.join(str(b) for b, _ in encoder.config.targets)} "
                              f"{encoder.config.component} gives {encoder.dim}-d")
        if Index.exists(path):
            raise IndexStateError(f"{path} already holds an index")
        dense = DenseEncoder(dense_model) if hybrid else None
        config = IndexConfig(
            encoder=encoder.config.identity(), raw_dim=encoder.dim,
            dim=head.config.output_dim if head else encoder.dim,
            head=describe(head), detector=detector.config(), **settings,
            dense=None if dense is None else {"model": dense_model,
                                              "max_length": dense.max_length, "dim": dense.dim},
            names={"model": dense_model, "dim": dense.dim} if dense and names else None,
            confidence_weight=confidence_weight, precision=getattr(encoder, "precision", "fp32"))
        if head is not None:  # before the catalog (the commit point): a crash leaves no index
            head.save(Path(path) / HEAD_DIR)
        index = Index.create(path, config)
        return cls(index, encoder, detector, head, dense)

    @classmethod
    def open(cls, path: str | Path, writable: bool = False, encoder: Encoder | None = None,
             precision: str | None = None) -> Retriever:
        """Reopen an index with the encoder, head and detector it was built with.

        ``precision``: how queries run (fp32, fp16, int8, or auto = fp16 weights where a probe
        measures them faster; ``models.query``). None: auto for an encoder built here (fp16
        queries score as fp32 does to four decimals, docs/PERFORMANCE.md); a given
        ``encoder`` keeps its own unless ``precision`` is given."""
        config = Index.read_config(path)
        expected = EncoderConfig(**config.encoder.settings())
        if encoder is not None and encoder.config.identity() != expected.identity():
            raise ConfigError(f"index {path} was built with encoder {expected.identity()}, "
                              f"not {encoder.config.identity()}")
        head = None
        if config.head is not None:
            head = ProjectionHead.load(Path(path) / HEAD_DIR)
            if head.checksum() != config.head.checksum:
                raise ConfigError(f"index {path}: head weights do not match the recorded "
                                  f"checksum: {Path(path) / HEAD_DIR / 'head.safetensors'}")
            now = describe(head)
            if any(now.get(key) != value for key, value in config.head.model_dump().items()):
                raise ConfigError(f"index {path}: head settings differ from the recorded ones: "
                                  f"{Path(path) / HEAD_DIR / 'head.json'}")
        if encoder is None:
            encoder = TransformerEncoder(expected, query_precision=precision or "auto")
        elif precision is not None:
            encoder.set_query_precision(precision)
        return cls(Index.open(path, writable=writable), encoder, config.detector, head)

    @classmethod
    def open_or_create(cls, path: str | Path, **kwargs) -> Retriever:
        """Append to an existing index (settings must agree) or create a new one."""
        if Index.exists(path):
            retriever = cls.open(path, writable=True)
            try:
                check_append_settings(retriever, **kwargs)
            except BaseException:
                retriever.close()  # release the write lock
                raise
            return retriever
        return cls.create(path, **kwargs)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- embedding -----------------------------------------------------------------------------
    @property
    def dense(self) -> DenseEncoder | None:
        """The document encoder of a hybrid index (loaded on first use), else None; its
        queries follow the encoder's query precision (fp32 stays fp32, else fp16 weights
        where faster)."""
        cfg = self.index.config.dense
        if cfg is not None and self._dense is None:
            precision = getattr(self.encoder, "query_precision", "fp32")
            self._dense = DenseEncoder(cfg.model, cfg.max_length, query_precision=precision)
            if self._dense.dim != cfg.dim:
                raise ConfigError(f"index {self.index.path}: dense model {cfg.model} gives "
                                  f"{self._dense.dim}-d vectors, the index holds {cfg.dim}-d")
        return self._dense

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return to_index_space(self.head, self.encoder.encode_queries(queries), queries=True)

    def embed_search_queries(self, queries: Sequence[str], mode: SearchMode = "auto"
                             ) -> np.ndarray:
        """What :meth:`search_vector` takes, one row per query: the projected mention-space
        vector, followed on a hybrid search by the query's dense vector (one row, so a server
        can batch and cache a query as a single array)."""
        vectors = self.embed_queries(queries)
        if not self._hybrid(mode):
            return vectors
        return np.hstack([vectors, self.dense.encode_queries(list(queries))]).astype(np.float32)

    def embedder(self) -> BatchEmbedder:
        """The detect -> encode -> project steps with this index's settings."""
        cfg = self.index.config
        return BatchEmbedder(self.detector, self.encoder, self.head, cfg.dim, self.dense,
                             cfg.names is not None, cfg.confidence_weight)

    # -- verbs ---------------------------------------------------------------------------------
    def add(self, docs: Iterable[Document], if_exists: IfExists = "error", commit_every: int = 256,
            progress: Callable[[int, int], None] | None = None) -> AddStats:
        """Detect, embed and commit documents in batches; each batch is atomic.

        ``if_exists="skip"`` resumes an interrupted run; ``"update"`` replaces documents."""
        return add_documents(self.index, docs, self.embedder(), if_exists, commit_every,
                             progress)

    def delete(self, ids: Sequence[str]) -> DeleteStats:
        """Remove documents in one commit (all of them or, after a crash, none); ids the index
        does not hold are listed in ``missing``, not an error."""
        return delete_documents(self.index, ids)

    def compact(self) -> CompactStats:
        """Rewrite the index without deleted or replaced rows, reclaiming disk (crash-safe)."""
        return self.index.compact()

    def search(self, query: str | Sequence[str] | None = None, k: int = 10, per_doc: int = 3,
               mode: SearchMode = "auto", weight: float = HYBRID_WEIGHT,
               feedback: int = FEEDBACK_DOCS, where: str | Sequence[str] | None = None,
               must: str | None = None, like: str | None = None, exhaustive: bool = False
               ) -> list[SearchResult]:
        """Top ``k`` documents for an entity type. ``mode="auto"`` fuses mention and document
        scores on a hybrid index (the score is then in standard units) and ranks by the best
        mention's cosine otherwise (scaled by the mention's confidence, see ``create``);
        ``"mentions"`` forces the pure mention ranking. A hybrid ranking runs twice, the second
        time with queries moved toward the best vectors of the first one's top ``feedback``
        documents (0: once, without feedback).

        ``query`` may list several types: documents mentioning an entity of each
        (``retrieve/combine.py``), each mention labelled with the type it matched. ``like``
        replaces the description by an example mention (``"... [[Danube]] ..."`` or a bare
        name, ``retrieve/examples.py``). ``exhaustive`` returns every document whose fused
        score passes ``self.threshold`` (config.exhaustive_threshold; ``k`` ignored). ``where``
        (``"field=value"``, ``"field>=n"``, ``"field<=n"``; a list: all must hold) and
        ``must`` (a word or phrase the text contains, case-insensitive) restrict the documents
        inside the ranking: ``k`` results whenever ``k`` documents pass."""
        req = SearchRequest.of(query, like, where, must, k=k, per_doc=per_doc, mode=mode,
                               weight=weight, feedback=feedback, exhaustive=exhaustive)
        return self.run(req, self.request_vectors(req))

    def search_batch(self, queries: Sequence[str], k: int = 10, per_doc: int = 3,
                     mode: SearchMode = "auto", weight: float = HYBRID_WEIGHT,
                     feedback: int = FEEDBACK_DOCS, where: str | Sequence[str] | None = None,
                     must: str | None = None) -> list[list[SearchResult]]:
        """One independent search per description, the language model run once for all."""
        reqs = [SearchRequest.of(q, None, where, must, k=k, per_doc=per_doc, mode=mode,
                                 weight=weight, feedback=feedback) for q in queries]
        vectors = self.embed_search_queries([r.queries[0] for r in reqs], mode) if reqs else []
        return [self.run(r, v[None]) for r, v in zip(reqs, vectors)]

    def search_vector(self, vector: np.ndarray, k: int = 10, per_doc: int = 3,
                      weight: float = HYBRID_WEIGHT, feedback: int = FEEDBACK_DOCS,
                      where: SearchFilter | None = None) -> list[SearchResult]:
        """Search with a row of :meth:`embed_search_queries` (hybrid when it carries the
        dense part), among the documents passing ``where`` (:class:`SearchFilter`)."""
        req = SearchRequest.of("vector", where=where or SearchFilter(), k=k, per_doc=per_doc,
                               weight=weight, feedback=feedback)
        return self.run(req, np.asarray(vector, np.float32)[None])

    def check_request(self, req: SearchRequest, what: str | None = None) -> bool:
        """Whether ``req`` ranks hybrid; :class:`UnsupportedRequestError` when it needs a
        cut-off (several types, exhaustive, entities) that only fused scores have. ``what``
        names the feature in the message."""
        hybrid = self._hybrid(req.mode)
        if req.cut_off and not hybrid:
            what = what or ("several types" if req.combined else "exhaustive mode")
            if self.index.config.dense is None:
                raise UnsupportedRequestError(
                    f"{what} needs a hybrid index (fused scores have a cut-off); index "
                    f"{self.index.path} ranks mentions only")
            raise UnsupportedRequestError(f"{what} needs mode=auto (fused scores have a "
                                          f"cut-off), not mode=mentions")
        return hybrid

    def request_vectors(self, req: SearchRequest) -> np.ndarray:
        """One row per query of ``req`` (see :meth:`embed_search_queries`); checks first that
        the index can answer it."""
        hybrid = self.check_request(req)
        if req.like is None:
            return self.embed_search_queries(list(req.queries), req.mode)
        ex = req.like
        vector = to_index_space(self.head,
                                self.encoder.encode_example(ex.text, ex.start, ex.end)[None])
        if hybrid:
            vector = np.hstack([vector, self.dense.encode_queries([ex.mention])])
        return vector.astype(np.float32)

    def run(self, req: SearchRequest, vectors: np.ndarray) -> list[SearchResult]:
        """Rank with the rows of :meth:`request_vectors` (the one ranking, retrieve/fusion.py)."""
        dim = self.index.config.dim
        if vectors.shape[1] == dim:  # mention-space rows only: refuse what needs a cut-off
            self.check_request(dataclasses.replace(req, mode="mentions"))
        with self.index.lock, ranking_threads():  # retrieve/threads.py: why one BLAS thread
            allowed = self._filterer.allowed(req.where)
            if vectors.shape[1] == dim:
                return self._results(self.source.mention_ranking(vectors[0], req.k, req.per_doc,
                                                                 allowed))
            cfg, source = req.fusion(), RequestSource(self.source)  # retrieve/memo.py
            queries = [self._queries(v) for v in vectors]
            if req.combined and not req.exhaustive:
                hits = top_types(source, queries, cfg, self.threshold, req.k, req.per_doc,
                                 allowed)
                return self._results(hits or [], req.labels)
            if req.combined:
                ranked = rank_types(source, queries, cfg, self.threshold, allowed)
                if len(ranked) < len(queries):  # a type nobody passes
                    return []
                return self._results(all_types(ranked, None, req.per_doc), req.labels)
            if req.exhaustive:
                ranked = rank_all(source, queries[0], cfg, self.threshold, allowed)
                return self._results(ranked.top(len(ranked.keys), req.per_doc))
            ranked = hybrid_rank(source, queries[0], req.k, cfg, allowed)
            return self._results(ranked.top(req.k, req.per_doc))

    def entities(self, query: str, top: int = DEFAULT_TOP, where: str | Sequence[str] | None = None,
                 must: str | None = None) -> list[Entity]:
        """The distinct entities of a type in the whole index (``retrieve/inventory.py``):
        mentions past the exhaustive cut-off, grouped by normalised text, best first."""
        if not isinstance(query, str):
            raise ConfigError("entities takes one type description")
        if not 1 <= top <= MAX_K:
            raise ConfigError(f"top must be between 1 and {MAX_K}, not {top}")
        req = SearchRequest.of(query, None, where, must, exhaustive=True)
        query = self._queries(self.request_vectors(req)[0])
        with self.index.lock, ranking_threads():
            allowed = self._filterer.allowed(req.where)
            ranked = rank_all(RequestSource(self.source), query, req.fusion(), self.threshold,
                              allowed)
            passing = ranked.rows[ranked.row_fused >= self.threshold]
            texts = {row: t for row, (_, _, t) in self.index.mention_rows(passing).items()}
            return inventory(ranked, texts, self.threshold, top, lambda keys: {
                k: d.id for k, d in self.index.documents_by_key(keys).items()})

    def _queries(self, vector: np.ndarray) -> Queries:
        """A hybrid row of :meth:`request_vectors` as the ranking's queries (the dense part
        serves the document and the names side)."""
        dim = self.index.config.dim
        return Queries(vector[:dim], vector[dim:], vector[dim:])

    def _hybrid(self, mode: SearchMode) -> bool:
        if mode not in SEARCH_MODES:
            raise ConfigError(f"search mode must be auto, hybrid or mentions, not {mode!r}")
        if mode == "hybrid" and self.index.config.dense is None:
            raise ConfigError(f"index {self.index.path} holds no document vectors for hybrid "
                              f"search (it was built with hybrid off)")
        return mode != "mentions" and self.index.config.dense is not None

    def _results(self, grouped: list[DocumentHits], labels: Sequence[str] | None = None
                 ) -> list[SearchResult]:
        docs = self.index.documents_by_key([g.doc_key for g in grouped])
        rows = self.index.mention_rows([r for g in grouped for r, _ in g.hits])
        results = []
        for g in grouped:
            doc = docs[g.doc_key]
            said = [None] * len(g.hits) if g.queries is None or labels is None \
                else [labels[t] for t in g.queries]
            hits = [MentionHit(*rows[r], score=float(s), query=q)
                    for (r, s), q in zip(g.hits, said)]
            start, end = (hits[0].start, hits[0].end) if hits else (0, 0)
            results.append(SearchResult(doc.id, float(g.score), hits,
                                        snippet(doc.text, start, end)))
        return results

    def info(self) -> dict:
        return index_info(self.index)


def _as_encoder(encoder: Encoder | EncoderConfig | None) -> Encoder:
    if encoder is None or isinstance(encoder, EncoderConfig):
        return TransformerEncoder(encoder)
    return encoder
