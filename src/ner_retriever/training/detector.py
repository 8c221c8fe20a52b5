"""Training the learned detector's tagger (``ner-retriever train-detector``).

Gold spans of training splits, every type collapsed to "mention"; hidden states cached on disk
so epochs (and reruns) do not rerun the language model.

Partial annotation.  Datasets label only their own type inventory: Few-NERD's INTER training
sentences, for instance, tag athletes, cars or sports events (test types) as ``O``.  Trained
naively the detector would learn to skip exactly the kinds of names it will be asked to find.
So an ``O`` token that a helper detector (default: spaCy's entities, ``spacy-ents``) places
inside a name is *unknown* during training (no loss), not a negative.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ner_retriever.detect.base import match_spans
from ner_retriever.detect.registry import build_detector
from ner_retriever.detect.tagger import (IGNORE, TaggerConfig, TaggerHead, spans_from_tags,
                                         tags_from_probs, token_labels)
from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.io.corpus import file_digest, read_conll
from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.models.loading import DEFAULT_MODEL, cache_dir, resolve_model
from ner_retriever.training.detector_fit import fit_head
from ner_retriever.types import Document, Span

__all__ = ["EVALUATION_FILES", "THRESHOLDS", "TrainDetectorConfig", "choose_threshold",
           "default_feature_block", "train_detector", "training_sentences"]

FEATURE_CACHE_VERSION = 1
# Evaluation splits of the datasets in ../shared/data: never train on them.
EVALUATION_FILES = frozenset({"big_test.txt", "en-dev.conll", "emerging.test.annotated",
                              "emerging.test.conll"})



def default_feature_block(n_blocks: int) -> int:
    """The block at 30% of a model's depth: block 9 of SmolLM2-135M's 30, the block chosen on
    held-out loss (docs/DETECTION.md, "Block and sizes"); 9 of LLaMA-3.1-8B's 32, 0 of 2."""
    return n_blocks * 3 // 10


class TrainDetectorConfig(BaseModel):
    """Options of ``ner-retriever train-detector``."""

    model_config = ConfigDict(extra="forbid")

    # None: the output of ``default_feature_block`` of the model trained on
    features: list[tuple[int, str]] | None = None
    proj_dim: int = 192
    context_dim: int = 128
    dropout: float = 0.3
    max_sentences: int | None = Field(default=1000, description="seeded sample per file")
    heldout: float = Field(default=0.1, ge=0.0, lt=1.0,
                           description="share of each file's sample kept for threshold choice")
    mask_detector: str | None = "spacy-ents"
    epochs: int = Field(default=4, ge=1)
    lr: float = 2e-3
    batch_size: int = Field(default=32, ge=1)
    target_recall: float = Field(default=0.93, gt=0.0, le=1.0)
    # A threshold chosen elsewhere (end to end on validation data, docs/DETECTION.md) instead
    # of the held-out recall rule; the held-out figures are still reported at it.
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    seed: int = 0
    lm_batch_size: int = 16


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_training_docs(files: Sequence[Path], cfg: TrainDetectorConfig, allow_eval: bool
                        ) -> tuple[list[Document], list[int], list[bool], list[dict]]:
    """Seeded sample of each file: docs, their file index, held-out flags, file identities."""
    docs: list[Document] = []
    file_of: list[int] = []
    heldout: list[bool] = []
    identity = []
    for f_idx, path in enumerate(files):
        path = Path(path)
        if path.name in EVALUATION_FILES and not allow_eval:
            raise ConfigError(f"{path} is an evaluation split; train on training splits only "
                              "(--allow-eval-files overrides)")
        if not path.is_file():
            raise CorpusError("no such file", str(path))
        identity.append({"file": path.name, "sha256": file_digest(path)})
        file_docs = [d for d in read_conll(path) if d.text.strip()]
        rng = random.Random(f"{cfg.seed}:{path.name}")
        idx = list(range(len(file_docs)))
        if cfg.max_sentences is not None and cfg.max_sentences < len(idx):
            idx = sorted(rng.sample(idx, cfg.max_sentences))
        n_held = int(round(len(idx) * cfg.heldout)) if len(idx) > 1 else 0
        held = set(rng.sample(idx, n_held)) if n_held else set()
        for i in idx:
            docs.append(file_docs[i])
            file_of.append(f_idx)
            heldout.append(i in held)
    if not docs:
        raise ConfigError("no training sentences")
    return docs, file_of, heldout, identity


def training_sentences(files: Sequence[Path], max_sentences: int | None = 1000,
                       seed: int = 0) -> set[str]:
    """Texts of the sentences ``train-detector --max-sentences N --seed S`` samples from
    ``files`` (its held-out share included): what to leave out of data the detector is then
    run on. Each file's sample depends only on that file, so any subset of the training
    files gives the same sentences of it."""
    cfg = TrainDetectorConfig(max_sentences=max_sentences, seed=seed)
    docs, *_ = _load_training_docs(files, cfg, allow_eval=True)
    return {d.text for d in docs}


def _cached_features(docs: Sequence[Document], encoder, features, key: dict, cache_root,
                     batch_size: int, log: Callable[[str], None]
                     ) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
    """Per-document float16 token states and offsets, from ``<cache>/detector/`` if present."""
    path = None
    if cache_root is not None:
        path = Path(cache_root) / "detector" / f"features-{_digest(key)}.npz"
        if path.is_file():
            data = np.load(path)
            cuts = np.cumsum(data["lengths"])[:-1]
            feats = np.split(data["features"], cuts)
            offs = [[tuple(map(int, o)) for o in chunk]
                    for chunk in np.split(data["offsets"], cuts)]
            log(f"hidden states from cache {path}")
            return feats, offs
    feats: list[np.ndarray] = []
    offs: list[list[tuple[int, int]]] = []

    def collect(_idx, f, o):
        feats.extend(x.astype(np.float16) for x in f)
        offs.extend(list(map(tuple, x)) for x in o)
        return [[] for _ in f]

    t0 = time.perf_counter()
    texts = [d.text for d in docs]
    step = 512
    for b in range(0, len(texts), step):
        encoder.detect_encode(texts[b: b + step], features, collect, vectors=False,
                              batch_size=batch_size)
        done = min(b + step, len(texts))
        rate = done / max(time.perf_counter() - t0, 1e-9)
        log(f"hidden states: {done}/{len(texts)} sentences ({rate:.1f}/s)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        dim = feats[0].shape[-1] if feats else 0
        np.savez(tmp, features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float16),
                 offsets=np.array([o for x in offs for o in x], np.int64).reshape(-1, 2),
                 lengths=np.array([len(x) for x in feats], np.int64))
        tmp.replace(path)
    return feats, offs


def _span_scores(texts, offsets, probs, gold, threshold) -> dict[str, float]:
    n_pred = n_gold = tp_pred_e = tp_gold_e = tp_pred_o = tp_gold_o = 0
    for t, o, p, g in zip(texts, offsets, probs, gold, strict=True):
        pred = spans_from_tags(t, o, tags_from_probs(p, threshold))
        n_pred += len(pred)
        n_gold += len(g)
        a, b = match_spans(pred, g, "exact")
        tp_pred_e, tp_gold_e = tp_pred_e + a, tp_gold_e + b
        a, b = match_spans(pred, g, "overlap")
        tp_pred_o, tp_gold_o = tp_pred_o + a, tp_gold_o + b
    return {"R_exact": tp_gold_e / max(n_gold, 1), "P_exact": tp_pred_e / max(n_pred, 1),
            "R_overlap": tp_gold_o / max(n_gold, 1), "P_overlap": tp_pred_o / max(n_pred, 1),
            "gold": n_gold, "pred": n_pred}


# Decoding threshold without held-out sentences to choose one on (TaggerConfig's default).
DEFAULT_THRESHOLD = 0.5
THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.05, 0.951, 0.05))


def choose_threshold(head: TaggerHead, docs: Sequence[Document], feats: Sequence[np.ndarray],
                     offs: Sequence[Sequence[tuple[int, int]]], groups: dict[str, list[int]],
                     target_recall: float, fixed: float | None = None
                     ) -> tuple[float, dict[str, dict[str, float]], dict[str, dict]]:
    """The highest (most precise) threshold whose overlap recall reaches ``target_recall`` in
    every group of held-out documents; else the one with the best worst-group recall; or
    ``fixed`` when given. Returns it, the per-group scores at that threshold and the whole
    curve (per threshold and group: overlap recall, overlap precision)."""
    probs = dict(zip([i for g in groups.values() for i in g],
                     head.probabilities([feats[i] for g in groups.values() for i in g])))
    grid = sorted(set(THRESHOLDS) | ({fixed} if fixed is not None else set()))
    table = {th: {name: _span_scores([docs[i].text for i in rows], [offs[i] for i in rows],
                                     [probs[i] for i in rows], [docs[i].spans or () for i in rows],
                                     th)
                  for name, rows in groups.items()} for th in grid}
    if fixed is not None:
        chosen = fixed
    else:
        worst = {th: min(v["R_overlap"] for v in table[th].values()) for th in THRESHOLDS}
        ok = [th for th in THRESHOLDS if worst[th] >= target_recall]
        chosen = max(ok) if ok else max(THRESHOLDS, key=lambda th: (worst[th], -th))
    curve = {str(th): {name: [round(v["R_overlap"], 3), round(v["P_overlap"], 3)]
                       for name, v in table[th].items()} for th in THRESHOLDS}
    return chosen, table[chosen], curve


def train_detector(files: Sequence[str | Path], out_dir: str | Path | None,
                   model: str | None = None, config: TrainDetectorConfig | None = None,
                   allow_eval: bool = False, cache: bool = True,
                   log: Callable[[str], None] = lambda m: None,
                   encoder: Any = None) -> dict[str, Any]:
    """Train a ``TaggerHead`` on gold spans of CoNLL/BIO training files (all types ->
    "mention"), choose the decoding threshold on held-out sentences, save to ``out_dir``.

    Returns the training summary (also stored in ``detector.json`` under ``training``)."""
    cfg = config or TrainDetectorConfig()
    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("give at least one CoNLL/BIO training file")
    t_start = time.perf_counter()
    docs, file_of, held, identity = _load_training_docs(files, cfg, allow_eval)
    log(f"{len(docs)} sentences from {len(files)} files ({sum(held)} held out)")

    model_name = model or (encoder.config.model if encoder is not None else DEFAULT_MODEL)
    if encoder is None or encoder.config.model != model_name:
        encoder = TransformerEncoder(EncoderConfig(model=model_name))
    features = ([tuple(f) for f in cfg.features] if cfg.features is not None
                else [(default_feature_block(encoder.n_blocks), "hidden")])
    cfg = cfg.model_copy(update={"features": features})  # the summary records the block used
    key = _feature_key(cfg, identity, model_name, encoder, len(docs))
    cache_root = cache_dir() if cache else None
    feats, offs = _cached_features(docs, encoder, features, key, cache_root, cfg.lm_batch_size,
                                   log)
    t_lm = time.perf_counter() - t_start

    labels, n_tokens, n_ignored = _labels(docs, offs, cfg.mask_detector, key, cache_root, log)

    train_idx = [i for i in range(len(docs)) if not held[i] and len(feats[i])]
    held_idx = [i for i in range(len(docs)) if held[i] and len(feats[i])]
    if not train_idx:
        raise ConfigError("no training sentences left after holding some out")
    tagger = TaggerConfig(model=model_name, features=features,
                          prepend_bos=encoder.config.prepend_bos, input_dim=feats[0].shape[-1],
                          proj_dim=cfg.proj_dim, context_dim=cfg.context_dim,
                          dropout=cfg.dropout)
    head, best_epoch, history = fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log)
    groups: dict[str, list[int]] = {}
    for i in held_idx:
        groups.setdefault(files[file_of[i]].name, []).append(i)
    chosen, per_file, curve = _threshold(head, docs, feats, offs, groups, cfg, log)
    summary = {
        "files": [f.name for f in files], "sentences": len(docs),
        "heldout_sentences": len(held_idx),
        "tokens": n_tokens, "ignored_tokens": n_ignored, "mask_detector": cfg.mask_detector,
        "options": cfg.model_dump(), "best_epoch": best_epoch, "history": history,
        "threshold": chosen, "heldout": per_file, "heldout_curve (overlap R, P)": curve,
        "seconds": {"hidden_states": round(t_lm, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    head.config = tagger.model_copy(update={"threshold": chosen, "training": summary})
    if out_dir is not None:
        head.save(out_dir)
    return summary


def _feature_key(cfg: TrainDetectorConfig, identity: list[dict], model_name: str, encoder: Any,
                 n_docs: int) -> dict[str, Any]:
    """What the cached hidden states depend on: data, sample, model (and its files), windows."""
    key = {"v": FEATURE_CACHE_VERSION, "files": identity, "seed": cfg.seed,
           "max_sentences": cfg.max_sentences, "model": model_name, "features": cfg.features,
           "bos": encoder.config.prepend_bos, "max_length": encoder.config.max_length,
           "overlap": encoder.config.overlap, "n": n_docs}
    try:
        location, gguf = resolve_model(model_name)
        key["model_files"] = str(location) + (f"/{gguf}" if gguf else "")
    except ConfigError:
        pass
    return key


def _labels(docs: Sequence[Document], offs: Sequence[Sequence[tuple[int, int]]],
            mask_detector: str | None, key: dict[str, Any], cache_root: Path | None,
            log: Callable[[str], None]) -> tuple[list[np.ndarray], int, int]:
    """BIO labels of every document's tokens (``O`` inside a helper's span: ignored), the
    token count and the ignored count."""
    unknown = _unknown_spans(docs, mask_detector, key, cache_root)
    labels = [token_labels(d.text, o, d.spans or (), u)
              for d, o, u in zip(docs, offs, unknown, strict=True)]
    n_ignored = int(sum((lab == IGNORE).sum() for lab in labels))
    n_tokens = int(sum(len(lab) for lab in labels))
    log(f"{n_tokens} tokens, {n_ignored} O tokens inside {mask_detector or '-'} spans ignored")
    return labels, n_tokens, n_ignored


def _unknown_spans(docs: Sequence[Document], mask_detector: str | None, key: dict[str, Any],
                   cache_root: Path | None) -> list[list[Span]]:
    """Per document, the helper detector's spans (no loss on ``O`` tokens inside them), cached
    as JSON next to the hidden states; none without a helper."""
    if not mask_detector:
        return [[] for _ in docs]
    helper = build_detector(mask_detector)
    mkey = {"v": 1, "data": key, "detector": helper.config()}
    mpath = None if cache_root is None else \
        Path(cache_root) / "detector" / f"mask-{_digest(mkey)}.json"
    if mpath is not None and mpath.is_file():
        return [[Span(s, e) for s, e in doc] for doc in json.loads(mpath.read_text())]
    unknown = helper.detect([Document(d.id, d.text) for d in docs])
    if mpath is not None:
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(json.dumps([[(s.start, s.end) for s in sp] for sp in unknown]))
    return unknown


def _threshold(head: TaggerHead, docs: Sequence[Document], feats: Sequence[np.ndarray],
               offs: Sequence[Sequence[tuple[int, int]]], groups: dict[str, list[int]],
               cfg: TrainDetectorConfig, log: Callable[[str], None]
               ) -> tuple[float, dict[str, dict[str, float]], dict[str, dict]]:
    """``choose_threshold`` on the held-out groups, logged; the configured (or 0.5) without."""
    if not groups:
        return cfg.threshold or DEFAULT_THRESHOLD, {}, {}
    chosen, per_file, curve = choose_threshold(head, docs, feats, offs, groups,
                                               cfg.target_recall, cfg.threshold)
    for name, v in per_file.items():
        log(f"held-out {name} at threshold {chosen}: overlap R {v['R_overlap']:.3f} "
            f"P {v['P_overlap']:.3f}, exact R {v['R_exact']:.3f} P {v['P_exact']:.3f}")
    return chosen, per_file, curve
