"""The vectors an evaluation scores: mention vectors of gold or detected spans (one pass of
the language model for any number of block x component targets), dense document and name
vectors, all cached (:mod:`ner_retriever.io.cache`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ner_retriever.io.cache import CACHE_VERSION, VectorCache, digest, model_fingerprint
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.models.head import ProjectionHead, confidence_scale, normalize, to_index_space
from ner_retriever.types import Document, Span

Progress = Callable[[str, int, int], None]  # (stage, done, total)
DETECT_CHUNK_DOCS = 256  # documents per detector call (and per progress step)


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



def detection_code() -> list[str]:
    """Digests of the detection rules' source: they change without a config change."""
    from ner_retriever import detect
    from ner_retriever.io.corpus import file_digest

    return [file_digest(f) for f in sorted(Path(detect.__file__).parent.glob("*.py"))]


def detect_spans(eval_set: EvalSet, detector_name: str | dict, cache_root: Path | None,
                 progress: Progress | None = None, encoder=None
                 ) -> tuple[list[list[tuple[int, int]]], list[list[float | None]], dict]:
    """Spans proposed by a detector, their confidences (None where it cannot tell), both
    cached as JSON, and its recall against the gold spans. ``encoder``: one already loaded
    that a learned detector may share (else it loads its own)."""
    from ner_retriever.detect.registry import build_detector

    detector = build_detector(detector_name, encoder)
    # detector rules change without a config change
    key = {"v": CACHE_VERSION, "data": eval_set.identity, "detector": detector.config(),
           "code": detection_code()}
    path = None if cache_root is None else Path(cache_root) / "eval" / f"spans-{digest(key)}.json"
    if path is not None and path.is_file():
        rows = json.loads(path.read_text())
    else:
        rows = []
        step = DETECT_CHUNK_DOCS
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
    return spans, confidences, {**detection_quality(eval_set, spans),
                                "detector": detector.config()}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def detection_quality(eval_set: EvalSet, spans: Sequence[Sequence[tuple[int, int]]]) -> dict:
    """Recall (``exact``, ``overlap``: shares of gold spans matched) and precision (shares of
    detected spans matching a gold span) of detected ``spans`` against the gold spans."""
    from ner_retriever.detect.base import match_spans

    counts = {"exact": [0, 0], "overlap": [0, 0]}  # mode -> [detected matched, gold matched]
    gold_total = 0
    for doc, pred in zip(eval_set.docs, spans):
        gold = list(doc.spans or ())
        pred_spans = [Span(s, e) for s, e in pred]
        gold_total += len(gold)
        for mode, tally in counts.items():
            tp_pred, tp_gold = match_spans(pred_spans, gold, mode)
            tally[0] += tp_pred
            tally[1] += tp_gold
    detected = sum(len(s) for s in spans)
    return {"exact": _share(counts["exact"][1], gold_total),
            "overlap": _share(counts["overlap"][1], gold_total),
            "precision_exact": _share(counts["exact"][0], detected),
            "precision_overlap": _share(counts["overlap"][0], detected),
            "detected": detected, "gold": gold_total}



def mention_vectors_for(eval_set: EvalSet, encoder, spans, cache_root: Path | None,
                        mention_source: dict | str, targets=None, batch_size: int = 16,
                        progress: Progress | None = None, save=None):
    """Stacked vectors of the given spans plus each mention's document index."""
    cfg = encoder.config
    key = {"data": eval_set.identity, "mentions": mention_source,
           "model": model_fingerprint(cfg.model), "max_length": cfg.max_length,
           "overlap": cfg.overlap, "bos": cfg.prepend_bos}
    check = digest([list(map(list, s)) for s in spans])
    cache = VectorCache(cache_root, key, check) if cache_root is not None else None
    targets = targets or cfg.targets
    vectors = encode_mentions(encoder, eval_set.texts, spans, targets, cache, batch_size,
                              progress=progress, save=save)
    doc_index = np.repeat(np.arange(len(spans)), [len(s) for s in spans])
    return vectors, doc_index



def encoder_vectors(vectors: dict, config) -> np.ndarray:
    """The encoder's own vectors out of ``mention_vectors_for``'s per-target arrays: its
    targets side by side (``EncoderConfig.targets``), as ``encode_spans`` gives them."""
    parts = [vectors[t] for t in config.targets]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def index_vectors(head: ProjectionHead | None, raw: np.ndarray,
                  confidences: Sequence[Sequence[float | None]], weight: float) -> np.ndarray:
    """Stacked raw mention vectors as an index stores them: projected (or normalised), each
    scaled by its confidence ** ``weight`` (``confidences`` per document; none: unscaled)."""
    mentions = to_index_space(head, raw) if len(raw) else normalize(raw)
    flat = [c for doc in confidences for c in doc]
    if flat and weight:
        mentions = mentions * confidence_scale(flat, weight)[:, None]
    return mentions



def _dense_cache(eval_set: EvalSet, cache_root: Path | None, dense, **key
                 ) -> VectorCache | None:
    return VectorCache(cache_root, {"data": eval_set.identity, "dense": model_fingerprint(
        dense.name), "max_length": dense.max_length, **key}) if cache_root is not None else None



def dense_document_vectors(eval_set: EvalSet, cache_root: Path | None, dense) -> np.ndarray:
    """One dense vector per document (cached per eval set and dense model)."""
    cache = _dense_cache(eval_set, cache_root, dense)
    doc_vectors = cache.load("documents", len(eval_set.docs)) if cache else None
    if doc_vectors is None:
        doc_vectors = dense.encode(eval_set.texts)
        if cache:
            cache.save("documents", doc_vectors)
    return doc_vectors



def name_vectors(eval_set: EvalSet, spans, cache_root: Path | None, dense
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each span's text embedded alone with the dense model (the third side of the hybrid
    ranking, as the index has it), rounded to float16 as the index stores them; with the
    document of each row."""
    texts = [doc.text[a:b] for doc, doc_spans in zip(eval_set.docs, spans) for a, b in doc_spans]
    cache = _dense_cache(eval_set, cache_root, dense,
                         names=digest([list(map(list, s)) for s in spans]))
    names = cache.load("names", len(texts)) if cache else None
    if names is None:
        names = dense.encode(texts).astype(np.float16).astype(np.float32)
        if cache:
            cache.save("names", names)
    return names, np.repeat(np.arange(len(spans)), [len(s) for s in spans])
