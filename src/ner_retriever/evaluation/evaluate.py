"""Zero-shot retrieval evaluation, the paper's protocol, in memory.

Protocol
--------
Every sentence of the CoNLL/BIO input is a document. For each fine type ``t`` the relevant
documents are those with at least one gold mention of ``t``; a method ranks all documents for
the query "description of t" and R-Precision is the share of relevant documents among the top
``R = |relevant|``. The headline is the macro average over evaluated types. "O" and catch-all
tags (``location-other``, ``MISC``, ``OtherPER``; see :func:`descriptions.is_other_tag`) are not
evaluated, and are listed in the output.

Ties: when several documents share the score at the cut-off, the metric takes the expectation
over a random order of the tied documents (a relevant document among ``g`` tied ones filling
``m`` remaining slots counts ``m/g``). No method gains from document order, and documents a
method cannot score at all (score ``-inf``: no mention) behave like a random tail.

Methods (all scored on the same documents)
------------------------------------------
* ``ner-retriever``: one vector per mention (any model / block / component, optional head),
  L2-normalised; a document's score is its best mention's cosine with the query vector (exact
  inner product in numpy; the same ranking as a flat FAISS index plus per-document dedupe).
* ``bm25`` and ``dense``: see :mod:`ner_retriever.evaluation.baselines`.
* ``hybrid``: what a hybrid index returns (:func:`scoring.hybrid_rank`, ONE function with
  ``Retriever.search``: :mod:`ner_retriever.retrieve.fusion`): ``w * z(mention score) + (1 - w) * z(dense score)`` over the top
  candidates of each side, the mention score being the soft maximum over the document's
  mentions (temperature ``config.MENTION_TEMPERATURE``), ``z`` standardising with a query's
  scores on a fixed sample of up to 1,024 documents (a document without any mention takes the
  lowest mention score), plus ``config.NAME_WEIGHT * z(best mention name)``; then pseudo-
  relevance feedback: each side's query moves toward the best vectors
  of the first ranking's top ``config.FEEDBACK_DOCS`` documents and the ranking runs again.
  ``w`` (``--hybrid-weight``) defaults to ``config.HYBRID_WEIGHT``; every setting was chosen
  on Few-NERD INTER *training* types only (see docs/RESULTS.md).

Mention vectors are cached under the cache folder (``<cache>/eval``), keyed by the data files,
the sample, the mention source and the encoder settings, so a rerun skips the language model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_retriever.config import (CONFIDENCE_WEIGHT, FEEDBACK_DOCS, FEEDBACK_WEIGHT,
                                  HYBRID_WEIGHT, MENTION_TEMPERATURE, NAME_WEIGHT, FusionConfig,
                                  check_confidence_weight, check_feedback, check_query_template,
                                  check_weight)
from ner_retriever.choices import MENTION_SOURCES
from ner_retriever.detect.registry import DEFAULT_DETECTOR
from ner_retriever.errors import ConfigError
from ner_retriever.models.dense import MPNET_MODEL
from ner_retriever.io.cache import default_cache_root
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.evaluation.metrics import evaluate_scores
from ner_retriever.evaluation.scoring import (bm25_document_scores, dense_document_scores,
                                              dense_queries, embed_queries, hybrid_rank,
                                              mention_document_scores)
from ner_retriever.evaluation.vectors import (Progress, dense_document_vectors, detect_spans,
                                              encoder_vectors, index_vectors, mention_vectors_for,
                                              name_vectors)
from ner_retriever.retrieve.sources import ArraySource

DEFAULT_METHODS = ("ner-retriever", "bm25", "dense", "hybrid")
# dense-mpnet: the all-mpnet-base-v2 baseline, needs the optional ``mpnet`` extra
METHODS = DEFAULT_METHODS + ("dense-mpnet",)


@dataclass
class EvalOptions:
    methods: Sequence[str] = DEFAULT_METHODS
    mentions: str = "gold"
    detector: str | dict = DEFAULT_DETECTOR
    model: str | None = None
    block: int | str | None = None  # "15+7": two blocks concatenated (EncoderConfig)
    component: str = "value"
    head: str | Path | None = "auto"  # "auto": the shipped head for these encoder settings
    query_template: str | None = None  # None: the encoder's default (EncoderConfig)
    hybrid_weight: float = HYBRID_WEIGHT
    names: bool = True  # hybrid: the mention-name side, as a new hybrid index has it
    feedback: int = FEEDBACK_DOCS  # hybrid: pseudo-relevance feedback documents (0: off)
    name_weight: float = NAME_WEIGHT  # hybrid: weight of z(best mention name) when names is on
    mention_temperature: float = MENTION_TEMPERATURE  # hybrid: soft maximum over mentions
    feedback_weight: float = FEEDBACK_WEIGHT  # hybrid: beta of the feedback query update
    confidence_weight: float = CONFIDENCE_WEIGHT  # detected mentions: vectors * confidence**w
    batch_size: int = 16
    cache: bool = True

    def fusion(self) -> FusionConfig:
        return FusionConfig(weight=self.hybrid_weight, feedback_docs=self.feedback,
                            name_weight=self.name_weight,
                            mention_temperature=self.mention_temperature,
                            feedback_weight=self.feedback_weight)


def _check_options(opts: EvalOptions) -> list[str]:
    methods = list(dict.fromkeys(opts.methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method {unknown[0] if unknown else '(none)'!r}; "
                          f"choose from {', '.join(METHODS)}")
    if opts.mentions not in MENTION_SOURCES:
        raise ConfigError(f"--mentions must be 'gold' or 'detected', not {opts.mentions!r}")
    check_confidence_weight(opts.confidence_weight)
    check_feedback(opts.feedback)
    check_weight(opts.hybrid_weight)
    check_query_template(opts.query_template)
    opts.fusion()  # validates the fusion settings before any model loads
    return methods


def build_encoder(opts: EvalOptions, model=None, tokenizer=None):
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    settings = {"block": opts.block, "component": opts.component}
    if opts.query_template is not None:
        settings["query_template"] = opts.query_template
    if opts.model:
        settings["model"] = opts.model
    return TransformerEncoder(EncoderConfig(**settings), model=model, tokenizer=tokenizer)


@dataclass
class MentionSide:
    """The mention vectors of an evaluation as an index stores them, and the type queries."""

    spans: list
    vectors: np.ndarray
    doc_index: np.ndarray
    queries: np.ndarray
    detection: dict | None
    settings: dict


def mention_side(eval_set: EvalSet, opts: EvalOptions, encoder, cache_root: Path | None,
                 progress: Progress | None) -> MentionSide:
    from ner_retriever.models.shipped import resolve_head

    head = resolve_head(opts.head, encoder.config)
    if head is not None and head.config.input_dim != encoder.dim:
        raise ConfigError(f"head expects {head.config.input_dim}-d vectors but the encoder "
                          f"gives {encoder.dim}-d")
    confidences: list = []
    detection = None
    if opts.mentions == "gold":
        spans, source = eval_set.gold_spans, "gold"
    else:
        spans, confidences, detection = detect_spans(eval_set, opts.detector, cache_root,
                                                     progress, encoder)
        source = detection["detector"]
    vectors, doc_index = mention_vectors_for(eval_set, encoder, spans, cache_root, source,
                                             batch_size=opts.batch_size, progress=progress)
    raw = encoder_vectors(vectors, encoder.config)
    cfg = encoder.config
    settings = dict(model=cfg.model, block=cfg.block, component=cfg.component,
                    **({"extra_blocks": list(cfg.extra_blocks)} if cfg.extra_blocks else {}),
                    query_template=cfg.query_template,
                    head=None if head is None else head.config.model_dump(mode="json"),
                    confidence_weight=None if opts.mentions == "gold"
                    else opts.confidence_weight)
    return MentionSide(spans, index_vectors(head, raw, confidences, opts.confidence_weight),
                       doc_index, embed_queries(encoder, eval_set, head), detection, settings)


def hybrid_settings(opts: EvalOptions) -> dict:
    cfg = opts.fusion()
    return dict(hybrid_weight=cfg.weight, mention_temperature=cfg.mention_temperature,
                name_weight=cfg.name_weight if opts.names else None,
                feedback_docs=cfg.feedback_docs,
                feedback_weight=cfg.feedback_weight if cfg.feedback_docs else None)


@dataclass
class HybridInputs:
    """What the hybrid ranking of an evaluation reads: the mention side (vectors, spans, type
    queries), the loaded dense model, the per-type dense queries and the :class:`ArraySource`
    over all of it. Built by :func:`hybrid_inputs`, so other measurements
    (:mod:`ner_retriever.evaluation.features`) rank exactly what :func:`evaluate` ranks."""

    side: MentionSide
    dense: object  # the DenseEncoder the document, name and query vectors came from
    dense_queries: np.ndarray
    source: ArraySource


def dense_side(eval_set: EvalSet, cache_root: Path | None, dense=None
               ) -> tuple[object, np.ndarray, np.ndarray]:
    """``(dense encoder, document vectors, per-type dense queries)``; MiniLM is loaded once
    for the document and the name side unless ``dense`` is given."""
    from ner_retriever.models.dense import DenseEncoder

    dense = DenseEncoder() if dense is None else dense
    return dense, dense_document_vectors(eval_set, cache_root, dense), dense_queries(eval_set,
                                                                                       dense)


def array_source(eval_set: EvalSet, side: MentionSide, documents: np.ndarray, dense,
                 cache_root: Path | None, names: bool) -> ArraySource:
    """The hybrid index's vectors in memory: mentions, documents and (``names``) mention
    names of the side's spans."""
    name_vecs, name_docs = name_vectors(eval_set, side.spans, cache_root, dense) if names \
        else (None, None)
    return ArraySource(side.vectors, side.doc_index, documents, name_vecs, name_docs)


def hybrid_inputs(eval_set: EvalSet, opts: EvalOptions | None = None, encoder=None,
                  progress: Progress | None = None, dense=None) -> HybridInputs:
    """The hybrid ranking's inputs for ``opts`` (mention source, head, names side), as
    :func:`evaluate` builds them; vectors come from the cache when ``opts.cache``."""
    opts = opts or EvalOptions()
    _check_options(opts)
    cache_root = default_cache_root() if opts.cache else None
    side = mention_side(eval_set, opts, encoder or build_encoder(opts), cache_root, progress)
    dense, documents, queries_d = dense_side(eval_set, cache_root, dense)
    return HybridInputs(side, dense, queries_d,
                        array_source(eval_set, side, documents, dense, cache_root, opts.names))


def evaluate(eval_set: EvalSet, opts: EvalOptions | None = None, encoder=None,
             progress: Progress | None = None) -> dict:
    """Run every requested method on the same documents; returns the JSON-able report."""
    opts = opts or EvalOptions()
    methods = _check_options(opts)
    cache_root = default_cache_root() if opts.cache else None
    scores: dict[str, np.ndarray] = {}
    settings: dict = {"descriptions": {t: eval_set.descriptions[t] for t in eval_set.types},
                      "skipped_types": eval_set.skipped, **eval_set.identity}
    settings.pop("files", None)
    side = None
    if {"ner-retriever", "hybrid"} & set(methods):
        side = mention_side(eval_set, opts, encoder or build_encoder(opts), cache_root, progress)
        scores["ner-retriever"] = mention_document_scores(side.queries, side.vectors,
                                                          side.doc_index, len(eval_set.docs))
        settings.update(side.settings)
    if {"dense", "hybrid"} & set(methods):
        dense, documents, queries_d = dense_side(eval_set, cache_root)
        scores["dense"] = queries_d @ documents.T
    if "bm25" in methods:
        scores["bm25"] = bm25_document_scores(eval_set)
    if "dense-mpnet" in methods:
        scores["dense-mpnet"] = dense_document_scores(eval_set, cache_root, MPNET_MODEL)
    if "hybrid" in methods:
        source = array_source(eval_set, side, documents, dense, cache_root, opts.names)
        scores["hybrid"] = hybrid_rank(eval_set, source, side.queries, queries_d, opts.fusion())
        settings.update(hybrid_settings(opts))
    return {"dataset": eval_set.name, "documents": len(eval_set.docs),
            "types": len(eval_set.types), "mentions": opts.mentions,
            "results": {m: evaluate_scores(eval_set, scores[m]) for m in methods},
            "skipped_types": eval_set.skipped,
            "detection_recall": None if side is None else side.detection,
            "settings": settings}
