"""Train the projection head contrastively on frozen mention vectors from BIO/CoNLL files.

Pipeline:

1. :func:`~ner_retriever.training.mentions.extract_mentions` runs the language model once per
   file (optionally on a seeded sample of its sentences) and caches one vector per gold mention.
2. :func:`train_head` splits the training *types* into train and held-out validation types,
   then optimises a residual head that starts as the identity (so it starts exactly at raw
   vectors) with three InfoNCE terms over type-balanced batches: mention<->mention (same type
   pulled together, every other mention in the batch pushed away), description->mentions and
   mention->descriptions (queries are type descriptions embedded by the same encoder and head).
3. After each epoch the head is scored on the held-out types by macro R-Precision (document =
   sentence, k = number of relevant sentences); the best epoch is kept (early stopping).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.evaluation.descriptions import is_other_tag
from ner_retriever.training.datasets import (LeaveOut, merge_datasets, parse_datasets,
                                             parse_description_maps)
from ner_retriever.training.fit import fit_head
from ner_retriever.training.mentions import MentionSet, extract_mentions
from ner_retriever.training.type_mapping import TypeMapping
from ner_retriever.training.validation import encode_descriptions, load_descriptions

LOSSES = ("infonce", "triplet")


@dataclass
class TrainConfig:
    """Every knob of :func:`train_head`, defaulted to the settings that trained the shipped head."""

    epochs: int = 30
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 256  # mentions per step
    types_per_batch: int = 16  # type-balanced: batch_size // types_per_batch mentions per type
    temperature: float = 0.2
    loss: str = "infonce"  # infonce | triplet
    margin: float = 0.5  # triplet margin on cosine distance
    mention_weight: float = 1.0  # mention<->mention term
    description_weight: float = 1.0  # description<->mention terms
    hard_type_fraction: float = 0.5  # share of batches whose types are nearest neighbours
    hidden_dim: int = 500
    output_dim: int = 500
    dropout: float = 0.1
    residual: bool = True
    linear_only: bool = False  # residual head whose MLP branch stays zero: a linear map
    center: bool = True  # skip path subtracts the training mean (init only; it stays trainable)
    query_center: bool = True  # queries get their own offset: mean description -> mean mention
    whiten: float | None = None  # init skip as within-type whitening, shrinkage = this x mean eig
    val_fraction: float = 0.2  # share of training types held out for early stopping
    val_types: list[str] | None = None  # explicit held-out types (overrides val_fraction)
    patience: int = 5
    val_all_descriptions: bool = True  # validation averages over every description of a type
    keep_init: bool = True  # selection may return the initial head (epoch 0) if nothing beats it
    min_mentions: int = 5  # types with fewer training mentions are dropped
    exclude_other: bool = True  # drop catch-all types (x-other) from training
    refit: bool = False  # after early stopping, retrain on all types for the best epoch count
    cv_folds: int = 5  # > 1: epoch count by cross-validation over types, then train on all types
    seed: int = 0
    steps_per_epoch: int | None = 10  # None: one pass over the training mentions
    negatives_per_batch: int = 64  # detected non-mention spans per step (when given)


@dataclass
class TrainResult:
    head: object  # ProjectionHead
    train_types: list[str]
    val_types: list[str]
    best_epoch: int
    best_val: float
    raw_val: float
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"train_types": self.train_types, "val_types": self.val_types,
                "best_epoch": self.best_epoch, "best_val_r_precision": self.best_val,
                "raw_val_r_precision": self.raw_val, "history": self.history}


def split_types(types: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of types into (train, validation); validation gets round(fraction * n) >= 1."""
    types = sorted(types)
    if fraction <= 0:
        return types, []
    n_val = max(1, round(fraction * len(types)))
    if n_val >= len(types):
        raise ConfigError(f"cannot hold out {n_val} of {len(types)} types for validation")
    val = sorted(random.Random(seed).sample(types, n_val))
    return [t for t in types if t not in val], val


def _check_loss(cfg: TrainConfig) -> None:
    if cfg.loss not in LOSSES:
        raise ConfigError(f"unknown loss {cfg.loss!r}; choose infonce or triplet")


def usable_types(train: MentionSet, description_vectors: dict[str, np.ndarray],
                 cfg: TrainConfig) -> list[str]:
    """Types with enough mentions and a description (catch-all types dropped if asked)."""
    counts = {t: int((train.labels == t).sum()) for t in train.types}
    return sorted(t for t, c in counts.items() if c >= cfg.min_mentions
                  and t in description_vectors and not (cfg.exclude_other and is_other_tag(t)))


def train_head(train: MentionSet, description_vectors: dict[str, np.ndarray],
               config: TrainConfig | None = None, head_meta: dict | None = None,
               monitors: dict[str, tuple[MentionSet, dict[str, np.ndarray]]] | None = None,
               progress: bool = True, log: Callable[[str], None] | None = None,
               negatives: np.ndarray | None = None) -> TrainResult:
    """Train a head on frozen vectors; select the epoch by macro R-Precision on held-out types.

    ``description_vectors[type]`` holds the raw vectors of one or more descriptions (first =
    canonical). Selection: with ``cv_folds > 1`` the types are split into folds, a head is
    trained with each fold held out, the per-epoch validation curves are averaged (epoch 0 =
    the initial head) and a final head is trained on all types for the best epoch count;
    otherwise one split (``val_types`` / ``val_fraction``) with early stopping. ``monitors`` are
    extra ``(mentions, queries)`` sets scored after each epoch for reporting only;
    ``negatives``: raw vectors of detected spans that match no gold mention
    (:mod:`ner_retriever.training.negatives`), negatives for every type."""
    cfg = config or TrainConfig()
    _check_loss(cfg)
    log = log or (lambda _msg: None)
    usable = usable_types(train, description_vectors, cfg)
    fit = lambda types, val, epochs, mode: fit_head(  # noqa: E731
        train, description_vectors, cfg, types, val, epochs, mode, head_meta, monitors,
        progress, log, negatives)
    if cfg.cv_folds > 1 and cfg.val_types is None:
        return _cross_validated(usable, cfg, fit, log)
    return _held_out(usable, cfg, fit, log)


def _cross_validated(usable: list[str], cfg: TrainConfig, fit, log) -> TrainResult:
    """Epoch count by the mean held-out curve over type folds, then one head on all types."""
    if len(usable) < 2 * cfg.cv_folds:
        raise ConfigError(f"{len(usable)} usable types are too few for {cfg.cv_folds} folds")
    order = sorted(usable)
    random.Random(cfg.seed).shuffle(order)
    folds = [sorted(order[i::cfg.cv_folds]) for i in range(cfg.cv_folds)]
    curves, history = [], []
    for k, fold in enumerate(folds):
        rest = [t for t in usable if t not in fold]
        log(f"fold {k + 1}/{cfg.cv_folds}: validating on {fold}")
        _, hist, _, _, raw = fit(rest, fold, cfg.epochs, "curve")
        curves.append([raw] + [h["val_r_precision"] for h in hist])
        history += [dict(h, fold=k + 1) for h in hist]
    mean_curve = np.mean(curves, axis=0)
    best_epoch = int(np.argmax(mean_curve)) if cfg.keep_init else \
        int(np.argmax(mean_curve[1:])) + 1
    log(f"mean held-out curve {np.round(mean_curve, 4).tolist()}: best epoch {best_epoch}")
    head, hist, _, _, _ = fit(usable, [], best_epoch, "last")
    history += [dict(h, final=True) for h in hist]
    return TrainResult(head, usable, [], best_epoch, float(mean_curve[best_epoch]),
                       float(mean_curve[0]), history)


def _held_out(usable: list[str], cfg: TrainConfig, fit, log) -> TrainResult:
    """One split into training and validation types, early stopping (and an optional refit)."""
    if cfg.val_types is not None:
        missing = [t for t in cfg.val_types if t not in usable]
        if missing:
            raise ConfigError(f"validation types not in the training data: {missing}")
        val_types = sorted(cfg.val_types)
        train_types = [t for t in usable if t not in val_types]
    else:
        train_types, val_types = split_types(usable, cfg.val_fraction, cfg.seed)
    if len(train_types) < 2:
        raise ConfigError(f"need at least 2 training types with >= {cfg.min_mentions} mentions "
                          f"and a description, found {len(train_types)}")
    log(f"{len(train_types)} training types, {len(val_types)} validation types: {val_types}")
    mode = "best" if val_types else "last"
    head, history, best_epoch, best, raw_val = fit(train_types, val_types, cfg.epochs, mode)
    if cfg.refit and val_types:
        log(f"refit on all {len(usable)} types for {best_epoch} epochs")
        head, refit_hist, _, _, _ = fit(usable, [], best_epoch, "last")
        history = history + [dict(r, refit=True) for r in refit_hist]
    return TrainResult(head, train_types, val_types, best_epoch,
                       float(best) if val_types else float("nan"), float(raw_val), history)


# -- end to end --------------------------------------------------------------------------------
def _build_encoder(model: str | None, block: int | str | None, component: str,
                   query_template: str | None):
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    settings = {"component": component}
    if query_template is not None:
        settings["query_template"] = query_template
    if model:
        settings["model"] = model
    if block is not None:
        settings["block"] = block
    return TransformerEncoder(EncoderConfig(**settings))


def _head_meta(ecfg) -> dict:
    """The encoder settings a head records (``HeadConfig``): what its vectors are."""
    return {"model": ecfg.model, "block": ecfg.block, "extra_blocks": ecfg.extra_blocks or None,
            "component": ecfg.component, "query_template": ecfg.query_template}


def _sample_sizes(max_sentences, n_files: int) -> list[int | None]:
    """One sentence budget per file (one value applies to all)."""
    sizes = list(max_sentences) if isinstance(max_sentences, (list, tuple)) else \
        [max_sentences] * n_files
    if len(sizes) == 1:
        sizes = sizes * n_files
    if len(sizes) != n_files:
        raise ConfigError(f"give one --max-sentences for all files or one per file "
                          f"({n_files}), not {len(sizes)}")
    return sizes


def _label_datasets(sets: list[MentionSet], datasets, descriptions, leave_out, mapping):
    """With ``datasets``: the sets relabelled to merged ``dataset:tag`` types, their
    descriptions and what ``training.json`` records (``training/datasets.py``); without:
    the sets unchanged and no descriptions yet."""
    if not datasets:
        if leave_out is not None:
            raise ConfigError("leaving a dataset out needs the dataset of each file "
                              "(--datasets)")
        return sets, None, None
    names = parse_datasets(datasets, len(sets))
    maps = parse_description_maps(_as_list(descriptions), names)
    sets, desc, dropped = merge_datasets(sets, names, maps, TypeMapping.load(mapping), leave_out)
    return sets, desc, {"datasets": names, "descriptions": maps, "left_out_types": dropped,
                        "leave_out": None if leave_out is None else leave_out.summary(),
                        "mapping": str(mapping) if mapping else "shipped"}


def _as_list(descriptions) -> list[str]:
    if descriptions is None:
        return []
    return [str(descriptions)] if isinstance(descriptions, (str, Path)) else \
        [str(d) for d in descriptions]


def _one_map(descriptions) -> str | None:
    """The single descriptions map of a one-dataset run."""
    maps = _as_list(descriptions)
    if len(maps) > 1:
        raise ConfigError("give one --descriptions map (several need --datasets and "
                          "DATASET=MAP each)")
    return maps[0] if maps else None


def run_training(data: Sequence[str | Path], out: str | Path, model: str | None = None,
                 block: int | str | None = None, component: str = "value",
                 descriptions: str | Path | Sequence[str] | None = None,
                 max_sentences: int | Sequence[int | None] | None = None,
                 data_seed: int = 0, config: TrainConfig | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, encoder=None,
                 query_template: str | None = None, negatives: str | None = None,
                 negatives_partial: bool = False, datasets: Sequence[str] | None = None,
                 leave_out: LeaveOut | None = None, mapping: str | Path | None = None) -> dict:
    """Extract (cached) mention vectors from BIO files, train a head, save it to ``out``.

    ``datasets``, ``leave_out``, ``mapping``: several datasets, ``descriptions`` then a list
    of ``DATASET=MAP`` (``training/datasets.py``, :func:`_label_datasets`).

    ``negatives``: a detector name (``default`` = ``DEFAULT_DETECTOR``) run on the same files
    and samples; the spans it finds that match no gold mention (and partial overlaps, with
    ``negatives_partial``) are negatives for every type (:func:`training_negatives`).

    Writes ``head.json`` + ``head.safetensors`` (loadable by ``ProjectionHead.load``) and
    ``training.json`` (data, types, settings, negatives and per-epoch history)."""
    cfg = config or TrainConfig()
    if not data:
        raise ConfigError("train: give at least one BIO/CoNLL training file")
    for p in data:  # fail before the model loads
        if not Path(p).is_file():
            raise CorpusError("no such file", str(p))
    _check_loss(cfg)
    if encoder is None:
        encoder = _build_encoder(model, block, component, query_template)
    sizes = _sample_sizes(max_sentences, len(data))
    sets = [extract_mentions(p, encoder, max_sentences=n, seed=data_seed, progress=progress)
            for p, n in zip(data, sizes)]
    sets, desc, merged = _label_datasets(sets, datasets, descriptions, leave_out, mapping)
    train = MentionSet.concat(sets)
    if len(train) == 0:
        raise CorpusError("holds no gold mentions", ", ".join(str(p) for p in data))
    if desc is None:
        desc = load_descriptions(_one_map(descriptions), train.types)
    desc_vectors = encode_descriptions(encoder, desc)
    neg_vectors, neg_summary = (None, None) if not negatives else training_negatives(
        data, sizes, encoder, negatives, negatives_partial, data_seed, log or (lambda _m: None))
    ecfg = encoder.config
    result = train_head(train, desc_vectors, cfg, progress=progress, log=log,
                        head_meta=_head_meta(ecfg), negatives=neg_vectors)
    out = Path(out)
    result.head.save(out)
    summary = {
        "data": [{"file": str(p), "sample": n, "sentences": s.n_docs, "mentions": len(s),
                  "types": s.types} for p, s, n in zip(data, sets, sizes)],
        "data_seed": data_seed,
        "encoder": ecfg.identity(), "descriptions": {t: desc[t] for t in
                                                     result.train_types + result.val_types},
        "config": asdict(cfg), "negatives": neg_summary, "multi_dataset": merged,
        **result.summary(),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def training_negatives(data: Sequence[str | Path], sizes: Sequence[int | None], encoder,
                       detector: str, partial: bool, seed: int,
                       log: Callable[[str], None]) -> tuple[np.ndarray, dict]:
    """Raw vectors of the spans ``detector`` finds on each training file's sample (the one the
    gold mentions come from) that match no gold mention, and what ``training.json`` records.

    Sentences a learned member of the detector was trained on are left out (its spans there
    are better than on new text); detection and vectors are cached as evaluation's are."""
    from ner_retriever.detect.registry import DEFAULT_DETECTOR
    from ner_retriever.io.cache import default_cache_root
    from ner_retriever.training.negatives import detected_spans, detector_training_texts

    name = DEFAULT_DETECTOR if detector.strip().lower() == "default" else detector
    left_out = detector_training_texts(data, name)
    cache_root = default_cache_root()
    vectors, files = [], []
    for path, n in zip(data, sizes):
        found = detected_spans([path], encoder, name, sample=n, seed=seed,
                               cache_root=cache_root, exclude_texts=left_out)
        neg = found.negatives(partial=partial)
        vectors.append(neg)
        files.append({"file": str(path), "sample": n, "sentences": found.n_docs,
                      "left_out": found.left_out, "spans": len(found.kinds),
                      **found.counts(), "negatives": len(neg)})
        log(f"negatives from {Path(path).name}: {len(neg)} of {len(found.kinds)} detected "
            f"spans on {found.n_docs} sentences ({found.left_out} left out: the detector "
            f"trained on them)")
    stacked = np.concatenate(vectors).astype(np.float32) if vectors else \
        np.zeros((0, encoder.dim), np.float32)
    summary = {"detector": name, "partial": partial, "count": int(len(stacked)),
               "files": files}
    return stacked, summary
