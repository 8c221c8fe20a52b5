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
* ``hybrid``: what a hybrid index returns (:func:`hybrid_scores`, the same code as
  ``Retriever.search``): ``w * z(mention score) + (1 - w) * z(dense score)`` over the top
  candidates of each side, the mention score being the soft maximum over the document's
  mentions (temperature ``search.MENTION_TEMPERATURE``), ``z`` standardising with a query's
  scores on a fixed sample of up to 1,024 documents (a document without any mention takes the
  lowest mention score), plus ``search.NAME_WEIGHT * z(best mention name)``; then pseudo-
  relevance feedback (:func:`hybrid_rank`): each side's query moves toward the best vectors
  of the first ranking's top ``search.FEEDBACK_DOCS`` documents and the ranking runs again.
  ``w`` (``--hybrid-weight``) defaults to ``search.HYBRID_WEIGHT``; every setting was chosen
  on Few-NERD INTER *training* types only (see docs/RESULTS.md).

Mention vectors are cached under the cache folder (``<cache>/eval``), keyed by the data files,
the sample, the mention source and the encoder settings, so a rerun skips the language model.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ner_retriever.evaluation.descriptions import Descriptions, is_other_tag
from ner_retriever.detect.base import DEFAULT_DETECTOR
from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.models.head import ProjectionHead, confidence_scale, normalize, to_index_space
from ner_retriever.retrieve.fusion import (CONFIDENCE_WEIGHT, FEEDBACK_DOCS, FEEDBACK_WEIGHT, HYBRID_WEIGHT,
                                  MENTION_TEMPERATURE, NAME_WEIGHT, calibration_sample,
                                  candidate_count, document_max, document_softmax,
                                  feedback_from_best, feedback_query, fuse, score_stats,
                                  top_positions)
from ner_retriever.types import Document, Span

METHODS = ("ner-retriever", "bm25", "dense", "hybrid")
MENTION_SOURCES = ("gold", "detected")
CACHE_VERSION = "2"  # 2: data files keyed by content, not time stamp

Progress = Callable[[str, int, int], None]  # (stage, done, total)


# -- data ------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Documents, the evaluated types, their relevant documents and query descriptions."""

    name: str
    docs: list[Document]
    types: list[str]
    skipped: list[str]
    relevant: dict[str, np.ndarray]  # tag -> sorted document indices
    descriptions: dict[str, list[str]]  # tag -> [canonical, alternatives...]
    identity: dict = field(default_factory=dict)  # what the documents are (for cache keys)

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.docs]

    @property
    def gold_spans(self) -> list[list[tuple[int, int]]]:
        return [[(s.start, s.end) for s in (d.spans or ())] for d in self.docs]

    def queries(self) -> list[str]:
        return [self.descriptions[t][0] for t in self.types]


def sample_indices(n: int, sample: int | None, seed: int) -> list[int]:
    """``random.Random(seed).sample(range(n), sample)`` in file order (all when sample >= n)."""
    if sample is None or sample >= n:
        return list(range(n))
    if sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {sample}")
    return sorted(random.Random(seed).sample(range(n), sample))


def load_eval_set(paths: Sequence[str | Path], descriptions: Descriptions | None = None,
                  sample: int | None = None, seed: int = 0, include_other: bool = False,
                  types: Sequence[str] | None = None,
                  exclude_texts: Collection[str] = ()) -> EvalSet:
    """Read CoNLL/BIO files (one document per sentence), optionally subsample sentences.

    ``exclude_texts``: sentences to leave out before sampling, e.g. those a learned detector
    was trained on, when a training file doubles as a validation set."""
    from ner_retriever.io.corpus import file_digest, read_conll

    if not paths:
        raise ConfigError("give at least one CoNLL/BIO file")
    paths = [Path(p) for p in paths]
    docs: list[Document] = []
    fingerprint = []
    for p in paths:
        if not p.is_file():
            raise CorpusError("no such file", str(p))
        fingerprint.append([p.name, file_digest(p)])
        for doc in read_conll(p):
            if len(paths) > 1:  # keep ids distinct across files
                doc = Document(f"{p.name}:{doc.id}", doc.text, doc.metadata, doc.spans, doc.source)
            docs.append(doc)
    excluded = set(exclude_texts)
    if excluded:
        docs = [d for d in docs if d.text not in excluded]
    if not docs:
        raise CorpusError("holds no sentences", ", ".join(map(str, paths)))
    docs = [docs[i] for i in sample_indices(len(docs), sample, seed)]
    descriptions = descriptions or Descriptions()
    members: dict[str, set[int]] = {}
    for i, doc in enumerate(docs):
        for span in doc.spans or ():
            members.setdefault(span.label or "", set()).add(i)
    all_tags = sorted(t for t in members if t)
    skipped = [t for t in all_tags if is_other_tag(t)] if not include_other else []
    evaluated = [t for t in all_tags if t not in skipped]
    if types is not None:
        unknown = [t for t in types if t not in members]
        if unknown:
            raise ConfigError(f"types not found in the data: {', '.join(unknown)}")
        evaluated = [t for t in evaluated if t in set(types)]
    if not evaluated:
        raise ConfigError("no entity type with a relevant document to evaluate")
    name = "+".join(p.name for p in paths)
    return EvalSet(
        name=name, docs=docs, types=evaluated, skipped=skipped,
        relevant={t: np.array(sorted(members[t]), dtype=np.int64) for t in evaluated},
        descriptions={t: descriptions.get_all(t) for t in evaluated},
        identity={"files": fingerprint, "sample": sample, "seed": seed if sample else None,
                  **({"excluded": _digest(sorted(excluded))} if excluded else {})},
    )


# -- metric ----------------------------------------------------------------------------------
def r_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """R-Precision of one ranking: ``scores`` (n_docs,), ``relevant`` indices or a bool mask.

    Ties at the cut-off count in expectation over a random order; NaN scores rank last."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.zeros(len(scores), dtype=bool)
    rel = np.asarray(relevant)
    if rel.dtype == bool:
        if rel.shape != mask.shape:
            raise ValueError("relevance mask and scores differ in length")
        mask = rel
    else:
        mask[rel] = True
    r = int(mask.sum())
    if r == 0:
        raise ValueError("R-Precision is undefined for a type without relevant documents")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    cut = np.partition(scores, len(scores) - r)[len(scores) - r]  # the R-th largest score
    above = scores > cut
    tied = scores == cut
    slots = r - int(above.sum())
    hits = mask[above].sum() + slots * mask[tied].sum() / tied.sum()
    return float(hits / r)


def macro(per_type: dict[str, float]) -> float:
    return float(np.mean(list(per_type.values()))) if per_type else float("nan")


def evaluate_scores(eval_set: EvalSet, scores: np.ndarray) -> dict:
    """``scores`` (n_types, n_docs) in ``eval_set.types`` order -> result dict."""
    per_type = {t: r_precision(scores[i], eval_set.relevant[t])
                for i, t in enumerate(eval_set.types)}
    return {"r_precision": macro(per_type), "per_type": per_type}


# -- scoring ---------------------------------------------------------------------------------
def mention_document_scores(query_vectors: np.ndarray, mention_vectors: np.ndarray,
                            doc_index: np.ndarray, n_docs: int, chunk: int = 64,
                            temperature: float | None = None) -> np.ndarray:
    """Exact inner product between (normalised) queries and mentions, max per document (or
    the soft maximum at ``temperature``, as the hybrid ranking pools mentions)."""
    return pooled_document_scores(query_vectors, mention_vectors, doc_index, n_docs,
                                  (temperature,), chunk)[0]


def pooled_document_scores(query_vectors: np.ndarray, mention_vectors: np.ndarray,
                           doc_index: np.ndarray, n_docs: int,
                           temperatures: Sequence[float | None], chunk: int = 64
                           ) -> list[np.ndarray]:
    """:func:`mention_document_scores` for several poolings (``None`` = max) from one pass
    over the query x mention similarities (the hybrid ranking needs the max and the soft max)."""
    out = [np.empty((len(query_vectors), n_docs), dtype=np.float32) for _ in temperatures]
    for b in range(0, len(query_vectors), chunk):
        sims = query_vectors[b: b + chunk] @ mention_vectors.T
        for pooled, t in zip(out, temperatures):
            pooled[b: b + chunk] = (document_max(sims, doc_index, n_docs) if t is None
                                    else document_softmax(sims, doc_index, n_docs, t))
    return out


def hybrid_scores(eval_set: EvalSet, mention_scores: np.ndarray, dense_scores: np.ndarray,
                  weight: float = HYBRID_WEIGHT, pooled_scores: np.ndarray | None = None,
                  name_scores: np.ndarray | None = None, k: int | None = None) -> np.ndarray:
    """One pass of the ``hybrid`` ranking as :class:`Retriever` computes it for ``k``
    documents (default: each type's ``R``): per type the top :func:`candidate_count` documents
    of each side (the mention side by best mention) are fused, each side standardised on the
    calibration sample; the other documents are not ranked (``-inf``). ``pooled_scores``
    (default: ``mention_scores``) is what the mention side contributes to the fusion: the soft
    maximum over mentions, as the index computes it; ``name_scores`` (best mention name per
    document) the third side of an index with names."""
    pooled_scores = mention_scores if pooled_scores is None else pooled_scores
    out = np.full(mention_scores.shape, -np.inf, dtype=np.float64)
    sample = calibration_sample(mention_scores.shape[1])
    for i, t in enumerate(eval_set.types):
        n = candidate_count(len(eval_set.relevant[t]) if k is None else k)
        mention, pooled, dense = mention_scores[i], pooled_scores[i], dense_scores[i]
        with_mentions = np.flatnonzero(np.isfinite(mention))  # the mention side's candidates
        picked = with_mentions[top_positions(mention[with_mentions], n)]
        candidates = np.union1d(picked, top_positions(dense, n))
        names = None if name_scores is None else name_scores[i]
        out[i, candidates] = fuse(
            pooled[candidates], dense[candidates], score_stats(pooled[sample]),
            score_stats(dense[sample]), weight, None if names is None else names[candidates],
            None if names is None else score_stats(names[sample]))
    return out


@dataclass(frozen=True)
class HybridSides:
    """Everything the hybrid ranking scores for the documents of an eval set: normalised
    mention vectors (index space) and their documents, one dense vector per document, and the
    mention names with their documents (None: an index without names)."""

    mentions: np.ndarray
    mention_docs: np.ndarray
    documents: np.ndarray
    names: np.ndarray | None = None
    name_docs: np.ndarray | None = None


def hybrid_rank(eval_set: EvalSet, sides: HybridSides, queries: np.ndarray,
                dense_queries: np.ndarray, weight: float = HYBRID_WEIGHT,
                feedback: int = FEEDBACK_DOCS, feedback_weight: float = FEEDBACK_WEIGHT,
                feedback_sides: str = "mdn") -> np.ndarray:
    """The full ``hybrid`` ranking as :class:`Retriever` runs it: :func:`hybrid_scores`, or,
    with ``feedback`` documents, a first pass for that many documents whose top ``feedback``
    move each side's query toward their best-matching vectors, then :func:`hybrid_scores`
    with the moved queries (``feedback_sides``: which of mention, dense, names move; the index
    moves all three)."""
    if feedback < 0:
        raise ConfigError(f"feedback must be 0 or more documents, not {feedback}")
    if not feedback:
        return _hybrid_once(eval_set, sides, queries, dense_queries, dense_queries, weight)
    first = _hybrid_once(eval_set, sides, queries, dense_queries, dense_queries, weight,
                         feedback)
    moved = []
    for i in range(len(eval_set.types)):
        finite = np.flatnonzero(np.isfinite(first[i]))
        top = finite[np.argsort(-first[i][finite], kind="stable")[:feedback]]
        q_m, q_d, q_n = queries[i], dense_queries[i], dense_queries[i]
        if "m" in feedback_sides:
            q_m = _moved(q_m, sides.mentions, sides.mention_docs, top, feedback_weight)
        if "d" in feedback_sides:
            q_d = feedback_query(q_d, sides.documents[top], feedback_weight)
        if "n" in feedback_sides and sides.names is not None:
            q_n = _moved(q_n, sides.names, sides.name_docs, top, feedback_weight)
        moved.append((q_m, q_d, q_n))
    q_m, q_d, q_n = (np.stack(x) for x in zip(*moved))
    return _hybrid_once(eval_set, sides, q_m, q_d, q_n, weight)


def _moved(query: np.ndarray, vectors: np.ndarray, docs: np.ndarray, top: np.ndarray,
           weight: float) -> np.ndarray:
    """The query moved toward the best-matching vector of each ``top`` document."""
    rows = np.flatnonzero(np.isin(docs, top))
    return feedback_from_best(query, vectors[rows], docs[rows], weight)


def _hybrid_once(eval_set: EvalSet, sides: HybridSides, queries: np.ndarray,
                 dense_queries: np.ndarray, name_queries: np.ndarray, weight: float,
                 k: int | None = None) -> np.ndarray:
    n_docs = len(eval_set.docs)
    best, soft = pooled_document_scores(queries, sides.mentions, sides.mention_docs, n_docs,
                                        (None, MENTION_TEMPERATURE))
    names = None if sides.names is None else mention_document_scores(
        name_queries, sides.names, sides.name_docs, n_docs)
    return hybrid_scores(eval_set, best, dense_queries @ sides.documents.T, weight, soft, names,
                         k)


def average_queries(vectors: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """Mean of normalised vectors per type (``groups[i]`` descriptions each), renormalised."""
    vectors = normalize(vectors)
    out, i = [], 0
    for n in groups:
        out.append(vectors[i: i + n].mean(axis=0))
        i += n
    return normalize(np.stack(out))


# -- cached vectors --------------------------------------------------------------------------
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: str) -> dict:
    """Name plus size/mtime of the model file, so a changed model never hits a stale cache."""
    from ner_retriever.models.loading import resolve_model

    try:
        location, gguf = resolve_model(model)
    except ConfigError:
        return {"model": model}
    path = Path(location) / (gguf or "config.json")
    if path.is_file():
        stat = path.stat()
        return {"model": model, "file": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return {"model": model, "location": str(location)}


class VectorCache:
    """``<cache>/eval/<key>/<block>-<component>.npy``: all mentions of a set, stacked."""

    def __init__(self, root: Path | None, key: dict, check: str | None = None):
        self.key = {"v": CACHE_VERSION, **key}
        self.folder = None if root is None else Path(root) / "eval" / _digest(self.key)
        self.check = check  # e.g. a digest of the spans: a mismatch means stale vectors

    def _valid(self) -> bool:
        marker = None if self.folder is None else self.folder / "check.txt"
        if self.check is None or marker is None or not marker.is_file():
            return True
        return marker.read_text().strip() == self.check

    def path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}.npy"

    def load(self, name: str, rows: int) -> np.ndarray | None:
        path = self.path(name)
        if path is None or not path.is_file() or not self._valid():
            return None
        array = np.load(path, allow_pickle=False)
        return array if array.shape[0] == rows else None

    def save(self, name: str, array: np.ndarray) -> None:
        path = self.path(name)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "key.json").write_text(json.dumps(self.key, indent=2, default=str))
        if self.check is not None:
            marker = path.parent / "check.txt"
            if marker.is_file() and marker.read_text().strip() != self.check:
                for old in path.parent.glob("*.npy"):  # vectors of other spans: drop them
                    old.unlink()
            marker.write_text(self.check)
        tmp = path.with_name(f".{path.stem}.{random.getrandbits(32):08x}.npy")
        np.save(tmp, np.ascontiguousarray(array))
        tmp.replace(path)


def default_cache_root() -> Path:
    from ner_retriever.models.loading import cache_dir

    return cache_dir()


def encode_mentions(encoder, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                    targets: Sequence[tuple[int, str]], cache: VectorCache | None = None,
                    batch_size: int = 16, chunk_docs: int = 256,
                    progress: Progress | None = None,
                    save: Sequence[tuple[int, str]] | None = None
                    ) -> dict[tuple[int, str], np.ndarray]:
    """Stacked ``(n_mentions, d)`` vectors for each ``(block, component)`` target; the missing
    targets are computed together in one pass over the documents (chunked for progress).
    ``save`` limits which computed targets are written to the cache (default: all)."""
    rows = sum(len(s) for s in spans)
    out: dict[tuple[int, str], np.ndarray] = {}
    missing = []
    for target in targets:
        cached = cache.load(f"{target[0]}-{target[1]}", rows) if cache else None
        if cached is not None:
            out[target] = cached
        else:
            missing.append(target)
    if not missing:
        return out
    parts: dict[tuple[int, str], list[np.ndarray]] = {t: [] for t in missing}
    total = len(texts)
    for b in range(0, total, chunk_docs):
        vecs = encoder.encode_targets(texts[b: b + chunk_docs], spans[b: b + chunk_docs],
                                      missing, batch_size=batch_size)
        for t, per_doc in zip(missing, vecs):
            parts[t].extend(v for v in per_doc if len(v))
        if progress:
            progress("encoding mentions", min(b + chunk_docs, total), total)
    for t in missing:
        dim = encoder.dim if not parts[t] else parts[t][0].shape[1]
        out[t] = np.concatenate(parts[t]).astype(np.float32) if parts[t] \
            else np.zeros((0, dim), np.float32)
        if cache and (save is None or t in save):
            cache.save(f"{t[0]}-{t[1]}", out[t])
    return out


# -- mention sources -------------------------------------------------------------------------
def detect_spans(eval_set: EvalSet, detector_name: str | dict, cache_root: Path | None,
                 progress: Progress | None = None
                 ) -> tuple[list[list[tuple[int, int]]], list[list[float | None]], dict]:
    """Spans proposed by a detector, their confidences (None where it cannot tell), both
    cached as JSON, and its recall against the gold spans."""
    from ner_retriever.detect import base as detect, learned as learned_detect
    from ner_retriever.io.corpus import file_digest
    from ner_retriever.detect.base import build_detector, match_spans

    detector = build_detector(detector_name)
    # detector rules change without a config change
    key = {"v": CACHE_VERSION, "data": eval_set.identity, "detector": detector.config(),
           "code": [file_digest(detect.__file__), file_digest(learned_detect.__file__)]}
    path = None if cache_root is None else Path(cache_root) / "eval" / f"spans-{_digest(key)}.json"
    if path is not None and path.is_file():
        rows = json.loads(path.read_text())
    else:
        rows = []
        step = 256
        for b in range(0, len(eval_set.docs), step):
            batch = [Document(d.id, d.text) for d in eval_set.docs[b: b + step]]
            rows.extend([[s.start, s.end, s.confidence] for s in doc]
                        for doc in detector.detect(batch))
            if progress:
                total = len(eval_set.docs)
                progress("detecting mentions", min(b + step, total), total)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows))
    spans = [[(s, e) for s, e, _ in doc] for doc in rows]
    confidences = [[c for _, _, c in doc] for doc in rows]
    gold_total = exact = overlap = 0
    for doc, pred in zip(eval_set.docs, spans):
        gold = list(doc.spans or ())
        pred_spans = [Span(s, e) for s, e in pred]
        gold_total += len(gold)
        exact += match_spans(pred_spans, gold, "exact")[1]
        overlap += match_spans(pred_spans, gold, "overlap")[1]
    recall = {"exact": exact / gold_total if gold_total else None,
              "overlap": overlap / gold_total if gold_total else None,
              "detected": sum(len(s) for s in spans), "gold": gold_total,
              "detector": detector.config()}
    return spans, confidences, recall


# -- the evaluation --------------------------------------------------------------------------
@dataclass
class EvalOptions:
    methods: Sequence[str] = METHODS
    mentions: str = "gold"
    detector: str | dict = DEFAULT_DETECTOR
    model: str | None = None
    block: int | None = None
    component: str = "value"
    head: str | Path | None = "auto"  # "auto": the shipped head for these encoder settings
    query_template: str | None = None  # None: the encoder's default (EncoderConfig)
    hybrid_weight: float = HYBRID_WEIGHT
    names: bool = True  # hybrid: the mention-name side, as a new hybrid index has it
    feedback: int = FEEDBACK_DOCS  # hybrid: pseudo-relevance feedback documents (0: off)
    confidence_weight: float = CONFIDENCE_WEIGHT  # detected mentions: vectors * confidence**w
    batch_size: int = 16
    cache: bool = True


def _check_options(opts: EvalOptions) -> list[str]:
    methods = list(dict.fromkeys(opts.methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method {unknown[0] if unknown else '(none)'!r}; "
                          f"choose from {', '.join(METHODS)}")
    if opts.mentions not in MENTION_SOURCES:
        raise ConfigError(f"--mentions must be 'gold' or 'detected', not {opts.mentions!r}")
    if not opts.confidence_weight >= 0:  # NaN too
        raise ConfigError(f"confidence weight must be 0 or more, not {opts.confidence_weight}")
    if opts.feedback < 0:
        raise ConfigError(f"feedback must be 0 or more documents, not {opts.feedback}")
    if opts.query_template is not None and opts.query_template.count("{}") != 1:
        raise ConfigError("the query template must contain '{}' once, where the description "
                          "goes")
    return methods


def build_encoder(opts: EvalOptions, model=None, tokenizer=None):
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    settings = {"block": opts.block, "component": opts.component}
    if opts.query_template is not None:
        settings["query_template"] = opts.query_template
    if opts.model:
        settings["model"] = opts.model
    return TransformerEncoder(EncoderConfig(**settings), model=model, tokenizer=tokenizer)


def mention_vectors_for(eval_set: EvalSet, encoder, spans, cache_root: Path | None,
                        mention_source: dict | str, targets=None, batch_size: int = 16,
                        progress: Progress | None = None, save=None):
    """Stacked vectors of the given spans plus each mention's document index."""
    cfg = encoder.config
    key = {"data": eval_set.identity, "mentions": mention_source,
           "model": model_fingerprint(cfg.model), "max_length": cfg.max_length,
           "overlap": cfg.overlap, "bos": cfg.prepend_bos}
    check = _digest([list(map(list, s)) for s in spans])
    cache = VectorCache(cache_root, key, check) if cache_root is not None else None
    targets = targets or [(cfg.block, cfg.component)]
    vectors = encode_mentions(encoder, eval_set.texts, spans, targets, cache, batch_size,
                              progress=progress, save=save)
    doc_index = np.repeat(np.arange(len(spans)), [len(s) for s in spans])
    return vectors, doc_index


def index_vectors(head: ProjectionHead | None, raw: np.ndarray,
                  confidences: Sequence[Sequence[float | None]], weight: float) -> np.ndarray:
    """Stacked raw mention vectors as an index stores them: projected (or normalised), each
    scaled by its confidence ** ``weight`` (``confidences`` per document; none: unscaled)."""
    mentions = to_index_space(head, raw) if len(raw) else normalize(raw)
    flat = [c for doc in confidences for c in doc]
    if flat and weight:
        mentions = mentions * confidence_scale(flat, weight)[:, None]
    return mentions


def embed_queries(encoder, eval_set: EvalSet, head: ProjectionHead | None = None) -> np.ndarray:
    """One normalised query vector per type (the mean over its descriptions), projected exactly
    as ``Retriever`` projects a query."""
    flat = [d for t in eval_set.types for d in eval_set.descriptions[t]]
    vectors = to_index_space(head, encoder.encode_queries(flat), queries=True)
    return average_queries(vectors, [len(eval_set.descriptions[t]) for t in eval_set.types])


def _dense_cache(eval_set: EvalSet, cache_root: Path | None, dense, **key
                 ) -> VectorCache | None:
    return VectorCache(cache_root, {"data": eval_set.identity, "dense": model_fingerprint(
        dense.name), "max_length": dense.max_length, **key}) if cache_root is not None else None


def _dense_queries(eval_set: EvalSet, dense) -> np.ndarray:
    flat = [d for t in eval_set.types for d in eval_set.descriptions[t]]
    return average_queries(dense.encode(flat), [len(eval_set.descriptions[t])
                                                for t in eval_set.types])


def dense_document_vectors(eval_set: EvalSet, cache_root: Path | None, dense) -> np.ndarray:
    """One dense vector per document (cached per eval set and dense model)."""
    cache = _dense_cache(eval_set, cache_root, dense)
    doc_vectors = cache.load("documents", len(eval_set.docs)) if cache else None
    if doc_vectors is None:
        doc_vectors = dense.encode(eval_set.texts)
        if cache:
            cache.save("documents", doc_vectors)
    return doc_vectors


def dense_document_scores(eval_set: EvalSet, cache_root: Path | None, dense=None) -> np.ndarray:
    from ner_retriever.models.dense import DenseEncoder

    dense = dense or DenseEncoder()
    return _dense_queries(eval_set, dense) @ dense_document_vectors(eval_set, cache_root, dense).T


def name_vectors(eval_set: EvalSet, spans, cache_root: Path | None, dense
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each span's text embedded alone with the dense model (the third side of the hybrid
    ranking, as the index has it), rounded to float16 as the index stores them; with the
    document of each row."""
    texts = [doc.text[a:b] for doc, doc_spans in zip(eval_set.docs, spans) for a, b in doc_spans]
    cache = _dense_cache(eval_set, cache_root, dense,
                         names=_digest([list(map(list, s)) for s in spans]))
    names = cache.load("names", len(texts)) if cache else None
    if names is None:
        names = dense.encode(texts).astype(np.float16).astype(np.float32)
        if cache:
            cache.save("names", names)
    return names, np.repeat(np.arange(len(spans)), [len(s) for s in spans])


def bm25_document_scores(eval_set: EvalSet) -> np.ndarray:
    from ner_retriever.evaluation.baselines import bm25_scores

    queries = [" ".join(eval_set.descriptions[t]) for t in eval_set.types]
    return bm25_scores(eval_set.texts, queries)


def evaluate(eval_set: EvalSet, opts: EvalOptions | None = None, encoder=None,
             progress: Progress | None = None) -> dict:
    """Run every requested method on the same documents; returns the JSON-able report."""
    opts = opts or EvalOptions()
    methods = _check_options(opts)
    cache_root = default_cache_root() if opts.cache else None
    report: dict = {"dataset": eval_set.name, "documents": len(eval_set.docs),
                    "types": len(eval_set.types), "mentions": opts.mentions, "results": {}}
    scores: dict[str, np.ndarray] = {}
    settings: dict = {"descriptions": {t: eval_set.descriptions[t] for t in eval_set.types},
                      "skipped_types": eval_set.skipped, **eval_set.identity}
    settings.pop("files", None)
    detection = None
    if {"ner-retriever", "hybrid"} & set(methods):
        encoder = encoder or build_encoder(opts)
        from ner_retriever.retrieve.retriever import resolve_head

        head = resolve_head(opts.head, encoder.config)
        if head is not None and head.config.input_dim != encoder.dim:
            raise ConfigError(f"head expects {head.config.input_dim}-d vectors but the encoder "
                              f"gives {encoder.dim}-d")
        confidences: list = []
        if opts.mentions == "gold":
            spans, source = eval_set.gold_spans, "gold"
        else:
            spans, confidences, detection = detect_spans(eval_set, opts.detector, cache_root,
                                                         progress)
            source = detection["detector"]
        vectors, doc_index = mention_vectors_for(eval_set, encoder, spans, cache_root, source,
                                                 batch_size=opts.batch_size, progress=progress)
        raw = vectors[(encoder.config.block, encoder.config.component)]
        mentions = index_vectors(head, raw, confidences, opts.confidence_weight)
        queries = embed_queries(encoder, eval_set, head)
        scores["ner-retriever"] = mention_document_scores(queries, mentions, doc_index,
                                                          len(eval_set.docs))
        settings.update(model=encoder.config.model, block=encoder.config.block,
                        component=encoder.config.component,
                        query_template=encoder.config.query_template,
                        head=None if head is None else head.config.model_dump(mode="json"),
                        confidence_weight=None if opts.mentions == "gold"
                        else opts.confidence_weight)
    if {"dense", "hybrid"} & set(methods):
        from ner_retriever.models.dense import DenseEncoder

        dense = DenseEncoder()  # loaded once for the document and the name side
        documents = dense_document_vectors(eval_set, cache_root, dense)
        dense_queries = _dense_queries(eval_set, dense)
        scores["dense"] = dense_queries @ documents.T
    if "bm25" in methods:
        scores["bm25"] = bm25_document_scores(eval_set)
    if "hybrid" in methods:
        names, name_docs = name_vectors(eval_set, spans, cache_root, dense) if opts.names \
            else (None, None)
        sides = HybridSides(mentions, doc_index, documents, names, name_docs)
        scores["hybrid"] = hybrid_rank(eval_set, sides, queries, dense_queries,
                                       opts.hybrid_weight, opts.feedback)
        settings.update(hybrid_weight=opts.hybrid_weight, mention_temperature=MENTION_TEMPERATURE,
                        name_weight=NAME_WEIGHT if opts.names else None,
                        feedback_docs=opts.feedback,
                        feedback_weight=FEEDBACK_WEIGHT if opts.feedback else None)
    for method in methods:
        report["results"][method] = evaluate_scores(eval_set, scores[method])
    report["skipped_types"] = eval_set.skipped
    report["detection_recall"] = detection
    report["settings"] = settings
    return report
