"""The public entry point: detector + encoder + head + index, behind three verbs
(add, search, info).

>>> from ner_retriever import Retriever, Document                      # doctest: +SKIP
>>> r = Retriever.create("my-index")                                   # doctest: +SKIP
>>> r.add([Document("1", "Angela Merkel met Emmanuel Macron in Paris.")])  # doctest: +SKIP
>>> r.search("politician", k=5)[0].doc_id                              # doctest: +SKIP
'1'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ner_retriever.io.corpus import iter_batches
from ner_retriever.detect.base import DEFAULT_DETECTOR, Detector, build_detector
from ner_retriever.models.encoder import Encoder, EncoderConfig, TransformerEncoder
from ner_retriever.errors import ConfigError, CorpusError, DuplicateDocumentError, IndexStateError
from ner_retriever.models.head import (ProjectionHead, confidence_scale, describe, per_document,
                               to_index_space)
from ner_retriever.models.loading import PACKAGED_MODELS
from ner_retriever.indexes.index import IfExists, Index, IndexConfig
from ner_retriever.models.dense import DENSE_MODEL, DenseEncoder
from ner_retriever.retrieve.fusion import (CONFIDENCE_WEIGHT, FEEDBACK_DOCS, HYBRID_WEIGHT,
                                  MENTION_TEMPERATURE,
                                  DocumentHits, calibration_sample, candidate_count,
                                  document_max, document_softmax, feedback_from_best,
                                  feedback_query, fuse, score_stats, snippet, top_documents,
                                  top_positions)
from ner_retriever.indexes.store import store_settings
from ner_retriever.types import Document, Mention, MentionHit, SearchResult

HEAD_DIR = "head"
MAX_K = 10_000
SearchMode = Literal["auto", "hybrid", "mentions"]


@dataclass
class AddStats:
    documents: int = 0
    skipped: int = 0
    mentions: int = 0
    seconds: float = 0.0


class Retriever:
    """Index documents by their entity mentions and find them by a free-text entity type."""

    def __init__(self, index: Index, encoder: Encoder, detector: Detector | dict[str, Any],
                 head: ProjectionHead | None = None, dense: DenseEncoder | None = None):
        self.index, self.encoder, self.head = index, encoder, head
        self._detector = detector  # or the config of an opened index's: built when first needed
        self._dense = dense
        self._calibration: tuple | None = None  # (index state, sample keys, rows, vectors)

    @property
    def detector(self) -> Detector:
        """Built on first use, so searching an index whose detector weights have moved (only
        adding needs them) still works."""
        if isinstance(self._detector, dict):
            try:
                self._detector = build_detector(self._detector)
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
        how they are searched (see :func:`ner_retriever.indexes.store.store_settings`).

        ``confidence_weight``: mention vectors are stored scaled by the detector's confidence
        in each span to this power (0: unscaled; docs/DETECTION.md, "Confidence")."""
        if not (isinstance(confidence_weight, (int, float)) and 0 <= confidence_weight < 100):
            raise ConfigError(f"confidence_weight must be a number from 0 to below 100, "
                              f"not {confidence_weight!r}")
        if names and not hybrid:
            raise ConfigError("mention names are a side of the hybrid ranking: they need "
                              "hybrid=True (--hybrid)")
        names = hybrid if names is None else names
        settings = store_settings(store, index_type, storage, uri, store_params, index_path=path)
        encoder = _as_encoder(encoder)
        detector = (build_detector(detector) if detector is None or isinstance(detector, (str, dict))
                    else detector)
        head = resolve_head(head, encoder.config)
        if head is not None and head.config.input_dim != encoder.dim:
            raise ConfigError(f"head expects {head.config.input_dim}-d vectors but "
                              f"{encoder.config.model} block {encoder.config.block} "
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
            confidence_weight=confidence_weight)
        if head is not None:  # before the catalog (the commit point): a crash leaves no index
            head.save(Path(path) / HEAD_DIR)
        index = Index.create(path, config)
        return cls(index, encoder, detector, head, dense)

    @classmethod
    def open(cls, path: str | Path, writable: bool = False,
             encoder: Encoder | None = None) -> Retriever:
        """Reopen an index with the encoder, head and detector it was built with."""
        config = Index.read_config(path)
        expected = EncoderConfig(**config.encoder)
        if encoder is not None and encoder.config.identity() != expected.identity():
            raise ConfigError(f"index {path} was built with encoder {expected.identity()}, "
                              f"not {encoder.config.identity()}")
        head = None
        if config.head is not None:
            head = ProjectionHead.load(Path(path) / HEAD_DIR)
            if head.checksum() != config.head["checksum"]:
                raise ConfigError(f"index {path}: head weights do not match the recorded "
                                  f"checksum: {Path(path) / HEAD_DIR / 'head.safetensors'}")
            now = describe(head)
            if any(now.get(key) != value for key, value in config.head.items()):
                raise ConfigError(f"index {path}: head settings differ from the recorded ones: "
                                  f"{Path(path) / HEAD_DIR / 'head.json'}")
        encoder = encoder or TransformerEncoder(expected)
        return cls(Index.open(path, writable=writable), encoder, config.detector, head)

    @classmethod
    def open_or_create(cls, path: str | Path, **kwargs) -> Retriever:
        """Append to an existing index (settings must agree) or create a new one."""
        if Index.exists(path):
            retriever = cls.open(path, writable=True)
            try:
                retriever._check_settings(**kwargs)
            except BaseException:
                retriever.close()  # release the write lock
                raise
            return retriever
        return cls.create(path, **kwargs)

    def _check_settings(self, encoder=None, detector=None, head=None, store=None,
                        index_type=None, storage=None, uri=None, store_params=None,
                        hybrid=None, dense_model=None, names=None,
                        confidence_weight=None) -> None:
        cfg = self.index.config
        if confidence_weight is not None and confidence_weight != cfg.confidence_weight:
            raise ConfigError(f"index {self.index.path} weights mention vectors by confidence ** "
                              f"{cfg.confidence_weight}; that cannot change when appending")
        if hybrid is not None and hybrid != (cfg.dense is not None):
            raise ConfigError(f"index {self.index.path} was built "
                              f"{'with' if cfg.dense else 'without'} hybrid document vectors; "
                              f"that cannot change when appending")
        if names is not None and names != (cfg.names is not None):
            raise ConfigError(f"index {self.index.path} was built "
                              f"{'with' if cfg.names else 'without'} mention names; "
                              f"that cannot change when appending")
        asked = {"store": store, "index_type": index_type, "storage": storage}
        clash = {k: v for k, v in asked.items() if v is not None and getattr(cfg, k) != v}
        if clash or (uri is not None and store_settings(
                cfg.store, cfg.index_type, cfg.storage, uri, None,
                index_path=self.index.path)["uri"] != cfg.uri):
            raise ConfigError(f"index {self.index.path} uses store {cfg.store} ({cfg.index_type}, "
                              f"{cfg.storage}{', ' + cfg.uri if cfg.uri else ''}); store options "
                              f"cannot change when appending")
        if isinstance(encoder, EncoderConfig):
            wanted = {k: v for k, v in encoder.identity().items()
                      if v is not None and v != EncoderConfig.model_fields[k].default}
            have = self.encoder.config.identity()
            clash = {k: v for k, v in wanted.items() if have.get(k) != v}
            if clash:
                raise ConfigError(f"index {self.index.path} was built with "
                                  f"{ {k: have[k] for k in clash} }; cannot add with {clash}")
        if isinstance(detector, str) and build_detector(detector).config() != self.detector.config():
            raise ConfigError(f"index {self.index.path} was built with detector "
                              f"{self.detector.config()}, not {detector!r}")
        if head not in (None, "auto"):
            raise ConfigError(f"index {self.index.path} already exists; its head cannot change")

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- embedding -----------------------------------------------------------------------------
    @property
    def dense(self) -> DenseEncoder | None:
        """The document encoder of a hybrid index (loaded on first use), else None."""
        cfg = self.index.config.dense
        if cfg is not None and self._dense is None:
            self._dense = DenseEncoder(cfg["model"], cfg["max_length"])
            if self._dense.dim != cfg["dim"]:
                raise ConfigError(f"index {self.index.path}: dense model {cfg['model']} gives "
                                  f"{self._dense.dim}-d vectors, the index holds {cfg['dim']}-d")
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
        return np.hstack([vectors, self.dense.encode(list(queries))]).astype(np.float32)

    # -- verbs ---------------------------------------------------------------------------------
    def add(self, docs: Iterable[Document], if_exists: IfExists = "error", commit_every: int = 256,
            progress: Callable[[int, int], None] | None = None) -> AddStats:
        """Detect, embed and commit documents in batches; each batch is atomic.

        ``if_exists="skip"`` resumes an interrupted run; ``"update"`` replaces documents."""
        import time

        stats, start, seen = AddStats(), time.perf_counter(), set()
        for batch in iter_batches(docs, commit_every):
            for doc in batch:
                _validate(doc)
                if doc.id in seen:
                    raise DuplicateDocumentError(doc.id, doc.source)
                seen.add(doc.id)
            if if_exists == "skip":
                present = self.index.existing_ids(d.id for d in batch)
                stats.skipped += len(present)
                batch = [d for d in batch if d.id not in present]
            elif if_exists == "error":
                present = self.index.existing_ids(d.id for d in batch)
                if present:
                    doc = next(d for d in batch if d.id in present)
                    raise DuplicateDocumentError(doc.id, doc.source)
            if batch:
                mentions, vectors, doc_vectors, name_vectors = embed_batch(
                    batch, self.detector, self.encoder, self.head, self.index.config.dim,
                    self.dense, self.index.config.names is not None,
                    self.index.config.confidence_weight)
                stats.documents += self.index.add(batch, mentions, vectors, if_exists=if_exists,
                                                  doc_vectors=doc_vectors,
                                                  name_vectors=name_vectors)
                stats.mentions += sum(len(m) for m in mentions)
            if progress is not None:
                progress(len(batch), sum(len(m) for m in mentions) if batch else 0)
        stats.seconds = time.perf_counter() - start
        return stats

    def search(self, query: str, k: int = 10, per_doc: int = 3, mode: SearchMode = "auto",
               weight: float = HYBRID_WEIGHT, feedback: int = FEEDBACK_DOCS
               ) -> list[SearchResult]:
        """Top ``k`` documents for an entity type. ``mode="auto"`` fuses mention and document
        scores on a hybrid index (the score is then in standard units) and ranks by the best
        mention's cosine otherwise (scaled by the mention's confidence, see ``create``);
        ``"mentions"`` forces the pure mention ranking. A hybrid
        ranking runs twice, the second time with queries moved toward the best vectors of the
        first one's top ``feedback`` documents (0: once, without feedback)."""
        return self.search_batch([query], k, per_doc, mode, weight, feedback)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, per_doc: int = 3,
                     mode: SearchMode = "auto", weight: float = HYBRID_WEIGHT,
                     feedback: int = FEEDBACK_DOCS) -> list[list[SearchResult]]:
        for q in queries:
            if not q or not q.strip():
                raise ConfigError("query is empty")
        _check_sizes(k, feedback)  # before the language model runs
        vectors = self.embed_search_queries(queries, mode)
        return [self.search_vector(v, k, per_doc, weight, feedback) for v in vectors]

    def search_vector(self, vector: np.ndarray, k: int = 10, per_doc: int = 3,
                      weight: float = HYBRID_WEIGHT, feedback: int = FEEDBACK_DOCS
                      ) -> list[SearchResult]:
        """Search with a row of :meth:`embed_search_queries` (hybrid when it carries the
        dense part)."""
        _check_sizes(k, feedback)
        dim = self.index.config.dim
        mention, dense = vector[:dim], (vector[dim:] if len(vector) > dim else None)
        with self.index.lock:
            if dense is None:
                return self._results(self._mention_ranking(mention, k, per_doc))
            names = dense
            if feedback:  # the first pass asks for the feedback documents only, whatever k is
                first = self._hybrid_ranking(mention, dense, dense, feedback, 1, weight)
                if first:
                    mention, dense, names = self._feedback_queries(
                        mention, dense, [g.doc_key for g in first])
            return self._results(self._hybrid_ranking(mention, dense, names, k, per_doc,
                                                      weight))

    def _hybrid(self, mode: SearchMode) -> bool:
        if mode not in ("auto", "hybrid", "mentions"):
            raise ConfigError(f"search mode must be auto, hybrid or mentions, not {mode!r}")
        if mode == "hybrid" and self.index.config.dense is None:
            raise ConfigError(f"index {self.index.path} holds no document vectors for hybrid "
                              f"search (it was built with hybrid off)")
        return mode != "mentions" and self.index.config.dense is not None

    def _mention_ranking(self, vector: np.ndarray, k: int, per_doc: int) -> list[DocumentHits]:
        return top_documents(lambda n: tuple(a[0] for a in self.index.search(vector[None], n)),
                             self.index.row_doc_keys, k, self.index.ntotal, per_doc)

    def _feedback_queries(self, vector: np.ndarray, dense_vector: np.ndarray,
                          keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each side's query moved toward the best-matching vector of each of the ``keys``
        documents: best mention, document vector, best mention name."""
        _, doc_index, vectors = self.index.document_mentions(keys)
        moved = feedback_from_best(vector, vectors, doc_index)
        all_keys, _, doc_vectors = self.index.doc_vectors
        moved_dense = feedback_query(dense_vector,
                                     doc_vectors[np.searchsorted(all_keys, np.asarray(keys))])
        moved_names = dense_vector
        if self.index.config.names:
            name_index, names = self.index.document_names(keys)
            moved_names = feedback_from_best(dense_vector, names, name_index)
        return moved, moved_dense, moved_names

    def _hybrid_ranking(self, vector: np.ndarray, dense_vector: np.ndarray,
                        name_vector: np.ndarray, k: int, per_doc: int,
                        weight: float) -> list[DocumentHits]:
        """Fuse on candidates: the top documents of each side, every candidate scored exactly
        on both sides, each side standardised on a fixed sample of the corpus (the names with
        ``name_vector``, the dense query unless feedback moved it)."""
        keys, live, doc_vectors = self.index.doc_vectors
        if not live.any():
            return []
        n = candidate_count(k)
        top_mention = [g.doc_key for g in self._mention_ranking(vector, n, 1)]
        dense = doc_vectors @ np.asarray(dense_vector, np.float32)
        dense[~live] = -np.inf
        top_dense = keys[top_positions(dense, min(n, int(live.sum())))]
        candidates = np.union1d(np.array(top_mention, np.int64), top_dense)
        by_mention = self._score_documents(vector, candidates.tolist(), per_doc)
        sample_keys, mention_sample, name_sample = self._calibration_scores(vector,
                                                                            name_vector)
        dense_stats = score_stats(dense[np.searchsorted(keys, sample_keys)])
        names = None
        if name_sample is not None:
            names = name_scores(name_vector, *self.index.document_names(candidates.tolist()),
                                len(candidates))
        fused = fuse(np.array([by_mention[key].score for key in candidates]),
                     dense[np.searchsorted(keys, candidates)], score_stats(mention_sample),
                     dense_stats, weight, names,
                     None if name_sample is None else score_stats(name_sample))
        order = np.lexsort((candidates, -fused))[:k]
        return [DocumentHits(int(candidates[i]), float(fused[i]),
                             by_mention[int(candidates[i])].hits) for i in order]

    def _score_documents(self, vector: np.ndarray, keys: Sequence[int],
                         per_doc: int) -> dict[int, DocumentHits]:
        """Exact mention-side scores of candidate documents (the soft maximum over all their
        mentions, read back from the store) and their best hits."""
        rows, doc_index, vectors = self.index.document_mentions(keys)
        sims = vectors @ np.asarray(vector, np.float32)
        pooled = document_softmax(sims[None], doc_index, len(keys), MENTION_TEMPERATURE)[0]
        bounds = np.searchsorted(doc_index, np.arange(len(keys) + 1))
        out = {}
        for i, key in enumerate(keys):
            own, own_rows = sims[bounds[i]:bounds[i + 1]], rows[bounds[i]:bounds[i + 1]]
            order = np.argsort(-own)[:per_doc]
            out[key] = DocumentHits(key, float(pooled[i]),
                                    [(int(own_rows[j]), float(own[j])) for j in order])
        return out

    def _calibration_scores(self, vector: np.ndarray, name_vector: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Keys of the calibration sample, their mention-side and (indexes with names) name
        scores for this query; the sample's vectors are read once per index state."""
        keys, live, _ = self.index.doc_vectors
        state = (len(keys), int(live.sum()), self.index.ntotal)
        if self._calibration is None or self._calibration[0] != state:
            live_keys = keys[live]
            sample = live_keys[calibration_sample(len(live_keys))]
            _, doc_index, vectors = self.index.document_mentions(sample.tolist())
            names = self.index.document_names(sample.tolist()) if self.index.config.names \
                else None
            self._calibration = (state, sample, doc_index, vectors, names)
        _, sample, doc_index, vectors, names = self._calibration
        sims = (vectors @ np.asarray(vector, np.float32))[None]
        mention = document_softmax(sims, doc_index, len(sample), MENTION_TEMPERATURE)[0]
        if names is None:
            return sample, mention, None
        return sample, mention, name_scores(name_vector, *names, len(sample))

    def _results(self, grouped: list[DocumentHits]) -> list[SearchResult]:
        docs = self.index.documents_by_key([g.doc_key for g in grouped])
        rows = self.index.mention_rows([r for g in grouped for r, _ in g.hits])
        results = []
        for g in grouped:
            doc = docs[g.doc_key]
            hits = [MentionHit(*rows[r], score=float(s)) for r, s in g.hits]
            start, end = (hits[0].start, hits[0].end) if hits else (0, 0)
            results.append(SearchResult(doc.id, float(g.score), hits,
                                        snippet(doc.text, start, end)))
        return results

    def info(self) -> dict:
        return index_info(self.index)


def _check_sizes(k: int, feedback: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, not {k}")
    if not 0 <= feedback <= MAX_K:
        raise ConfigError(f"feedback must be between 0 and {MAX_K} documents, not {feedback}")


def name_scores(dense_vector: np.ndarray, doc_index: np.ndarray, vectors: np.ndarray,
                n_docs: int) -> np.ndarray:
    """Best mention-name score of each of ``n_docs`` documents (``-inf`` without mentions)."""
    sims = (vectors @ np.asarray(dense_vector, np.float32))[None]
    return document_max(sims, doc_index, n_docs)[0]


def embed_batch(docs: Sequence[Document], detector: Detector, encoder: Encoder,
                head: ProjectionHead | None, dim: int, dense: DenseEncoder | None = None,
                names: bool = False, confidence_weight: float = 0.0
                ) -> tuple[list[list[Mention]], list[np.ndarray], np.ndarray | None,
                           list[np.ndarray] | None]:
    """Detect, embed and project one batch: ``(mentions, vectors, document vectors, name
    vectors)`` (the last two need ``dense``; names only with ``names``); each mention vector
    scaled by its span's confidence ** ``confidence_weight``. Shared by
    :meth:`Retriever.add` and the Ray workers, so both index exactly alike."""
    joint = getattr(detector, "detect_and_encode", None)
    if joint is not None:  # learned detector: spans and vectors from one pass
        spans, raw = joint(docs, encoder)
    else:
        spans = detector.detect(docs)
        raw = encoder.encode_spans([d.text for d in docs],
                                   [[(s.start, s.end) for s in sp] for sp in spans])
    mentions = [[Mention(d.id, s.start, s.end, d.text[s.start:s.end], s.label) for s in sp]
                for d, sp in zip(docs, spans)]
    doc_vectors = None if dense is None else dense.encode([d.text for d in docs])
    name_vectors = None
    if dense is not None and names:
        flat = dense.encode([m.text for ms in mentions for m in ms])
        bounds = np.cumsum([0] + [len(ms) for ms in mentions])
        name_vectors = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    vectors = per_document(head, raw, dim)
    if confidence_weight:
        vectors = [v * confidence_scale([s.confidence for s in sp], confidence_weight)[:, None]
                   for v, sp in zip(vectors, spans, strict=True)]
    return mentions, vectors, doc_vectors, name_vectors


def index_info(index: Index) -> dict:
    """Counts and settings of an index; needs no model, so ``info`` is instant."""
    cfg = index.config
    size = sum(f.stat().st_size for f in index.path.rglob("*") if f.is_file())
    return {
        "path": str(index.path),
        "documents": len(index),
        "mentions": index.num_mentions(),
        "model": cfg.encoder["model"],
        "block": cfg.encoder["block"],
        "component": cfg.encoder["component"],
        "head": cfg.head,
        "detector": cfg.detector,
        "store": cfg.store,
        "hybrid": cfg.dense,
        "dim": cfg.dim,
        "created": cfg.created,
        "size_bytes": size,
        "config": cfg.model_dump(),
    }


def resolve_head(head: ProjectionHead | str | Path | None,
                 config: EncoderConfig) -> ProjectionHead | None:
    """``"auto"``: the head shipped for these encoder settings, if any; ``None``/``"none"``:
    raw vectors; a folder or ``.pth``: that head."""
    if isinstance(head, str) and head in ("auto", "none"):
        return packaged_head(config) if head == "auto" else None
    if isinstance(head, (str, Path)):
        return ProjectionHead.load(head)
    return head


def packaged_head(config: EncoderConfig) -> ProjectionHead | None:
    """The trained head shipped in the package for exactly these encoder settings, if any."""
    if config.model not in PACKAGED_MODELS:  # heads ship only for the packaged aliases
        return None
    folder = resources.files("ner_retriever") / "data" / "heads" / config.model
    if not folder.is_dir():
        return None
    with resources.as_file(folder) as path:
        head = ProjectionHead.load(path)
    cfg = head.config
    wanted = (config.model, config.block, config.component, config.query_template)
    return head if (cfg.model, cfg.block, cfg.component, cfg.query_template) == wanted else None


def _as_encoder(encoder: Encoder | EncoderConfig | None) -> Encoder:
    if encoder is None or isinstance(encoder, EncoderConfig):
        return TransformerEncoder(encoder)
    return encoder


def _validate(doc: Document) -> None:
    where = doc.source or f"document {doc.id!r}"
    if not isinstance(doc.id, str) or not doc.id.strip():
        raise CorpusError("document id is missing or empty", where)
    if not isinstance(doc.text, str) or not doc.text.strip():
        raise CorpusError(f"document {doc.id!r} has empty text", where)

