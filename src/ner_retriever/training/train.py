"""Train the projection head contrastively on frozen mention vectors from BIO/CoNLL files.

Pipeline:

1. :func:`extract_mentions` runs the language model once per file (optionally on a seeded
   sample of its sentences) and caches one vector per gold mention in an ``.npz`` under
   ``<cache>/mentions/``, keyed by file, model, block, component and sample.
2. :func:`train_head` splits the training *types* into train and held-out validation types,
   then optimises a residual head that starts as the identity (so it starts exactly at raw
   vectors) with three InfoNCE terms over type-balanced batches: mention<->mention (same type
   pulled together, every other mention in the batch pushed away), description->mentions and
   mention->descriptions (queries are type descriptions embedded by the same encoder and head).
3. After each epoch the head is scored on the held-out types by macro R-Precision (document =
   sentence, k = number of relevant sentences); the best epoch is kept (early stopping).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ner_retriever.io.corpus import file_digest
from ner_retriever.evaluation.descriptions import is_other_tag
from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.models.head import normalize

CACHE_VERSION = "2"  # 2: data files keyed by content, not time stamp


# -- mention sets ------------------------------------------------------------------------------
@dataclass
class MentionSet:
    """Gold mentions of a corpus with one frozen vector each.

    ``docs[i]`` is the 0-based sentence (document) of mention ``i`` within this set, and
    ``n_docs`` counts every sentence in the set, including those without mentions."""

    vectors: np.ndarray  # (n, d) float32, raw (not normalised)
    labels: np.ndarray  # (n,) str, the gold tag without BIO prefix
    docs: np.ndarray  # (n,) int64
    n_docs: int
    texts: np.ndarray | None = None  # (n,) str, the mention text (for inspection)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def types(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def subset(self, mask: np.ndarray) -> MentionSet:
        return MentionSet(self.vectors[mask], self.labels[mask], self.docs[mask], self.n_docs,
                          None if self.texts is None else self.texts[mask])

    @staticmethod
    def concat(sets: Sequence[MentionSet]) -> MentionSet:
        """Join sets; document numbers are shifted so documents stay distinct."""
        if not sets:
            raise ConfigError("no mention sets to join")
        offsets = np.cumsum([0] + [s.n_docs for s in sets[:-1]])
        return MentionSet(
            np.concatenate([s.vectors for s in sets]).astype(np.float32),
            np.concatenate([s.labels for s in sets]),
            np.concatenate([s.docs + o for s, o in zip(sets, offsets)]),
            int(sum(s.n_docs for s in sets)),
            None if any(s.texts is None for s in sets) else np.concatenate([s.texts for s in sets]),
        )


def sample_documents(path: str | Path, max_sentences: int | None = None, seed: int = 0):
    """Read a CoNLL/BIO file; keep a seeded random sample of ``max_sentences`` (file order).

    The sample is ``random.Random(seed).sample(all_sentences, n)`` re-sorted into file order,
    the same convention as the evaluation's 5,000-sentence Few-NERD sample."""
    from ner_retriever.io.corpus import read_conll

    docs = list(read_conll(path))
    if not docs:
        raise CorpusError("holds no sentences", str(path))
    if max_sentences is not None and max_sentences < len(docs):
        keep = sorted(random.Random(seed).sample(range(len(docs)), max_sentences))
        docs = [docs[i] for i in keep]
    return docs


def _cache_file(path: Path, encoder_cfg, block: int, component: str,
                max_sentences: int | None, seed: int) -> Path:
    from ner_retriever.models.loading import cache_dir

    key = json.dumps({
        "v": CACHE_VERSION, "file": path.name, "sha256": file_digest(path),
        "model": encoder_cfg.model, "block": block,
        "component": component, "max_length": encoder_cfg.max_length,
        "overlap": encoder_cfg.overlap, "bos": encoder_cfg.prepend_bos,
        "n": max_sentences, "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    model = re.sub(r"[^A-Za-z0-9.-]+", "_", Path(encoder_cfg.model).name)
    n = "all" if max_sentences is None else str(max_sentences)
    name = f"{path.stem}-{model}-b{block}-{component}-{n}-s{seed}-{digest}.npz"
    return cache_dir() / "mentions" / name


def _save_npz(target: Path, ms: MentionSet) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=ms.vectors, labels=ms.labels.astype(str), docs=ms.docs,
             n_docs=np.int64(ms.n_docs), texts=ms.texts.astype(str))
    tmp.replace(target)


def _load_npz(target: Path) -> MentionSet:
    with np.load(target, allow_pickle=False) as z:
        return MentionSet(z["vectors"].astype(np.float32), z["labels"], z["docs"].astype(np.int64),
                          int(z["n_docs"]), z["texts"])


def extract_mentions(path: str | Path, encoder, max_sentences: int | None = None, seed: int = 0,
                     extra_targets: Sequence[tuple[int, str]] = (), batch_size: int = 32,
                     progress: bool = True, use_cache: bool = True) -> MentionSet:
    """Frozen vectors of every gold mention in a CoNLL/BIO file (cached as ``.npz``).

    ``encoder`` is a :class:`~ner_retriever.models.encoder.TransformerEncoder`; its block/component give
    the returned vectors. ``extra_targets`` are other ``(block, component)`` pairs computed in
    the same forward pass and cached too (for ablations), at no extra model cost when their
    block is not above the encoder's."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError("no such file", str(path))
    cfg = encoder.config
    main = (cfg.block, cfg.component)
    targets = [main] + [t for t in dict.fromkeys(extra_targets) if t != main]
    files = {t: _cache_file(path, cfg, t[0], t[1], max_sentences, seed) for t in targets}
    if use_cache and files[main].is_file():
        return _load_npz(files[main])

    docs = sample_documents(path, max_sentences, seed)
    labels, doc_ids, texts, spans = [], [], [], []
    for i, d in enumerate(docs):
        spans.append([(s.start, s.end) for s in d.spans or ()])
        for s in d.spans or ():
            labels.append(s.label)
            doc_ids.append(i)
            texts.append(d.text[s.start:s.end])
    vectors = {t: [] for t in targets}
    chunk = 512  # sentences per progress step
    bar = _tqdm(total=len(docs), desc=f"encoding {path.name}", unit="sent", disable=not progress)
    for b in range(0, len(docs), chunk):
        part = docs[b:b + chunk]
        out = encoder.encode_targets([d.text for d in part], spans[b:b + chunk], targets,
                                     batch_size=batch_size)
        for t, per_doc in zip(targets, out):
            vectors[t].extend(v for v in per_doc if len(v))
        bar.update(len(part))
    bar.close()
    result = None
    for t in targets:
        dim = encoder.dim if t == main else None
        arr = np.concatenate(vectors[t]) if vectors[t] else np.zeros((0, dim or 0), np.float32)
        ms = MentionSet(arr.astype(np.float32), np.array(labels, dtype=str),
                        np.array(doc_ids, dtype=np.int64), len(docs), np.array(texts, dtype=str))
        if use_cache:
            _save_npz(files[t], ms)
        if t == main:
            result = ms
    return result


def _tqdm(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


# -- descriptions ------------------------------------------------------------------------------
def load_descriptions(path_or_name: str | Path | None, tags: Iterable[str]) -> dict[str, list[str]]:
    """``tag -> [description, ...]`` (first = canonical) from a JSON map (values: a string or a
    list of paraphrases), a shipped map name (``fewnerd``...), or derived from the tag (None).

    Lookup is :class:`ner_retriever.evaluation.descriptions.Descriptions`' (``location_GPE`` finds ``GPE``)."""
    from ner_retriever.evaluation.descriptions import load_descriptions as load_map

    mapping = load_map(path_or_name)
    return {t: mapping.get_all(t) for t in tags}


# -- metric ------------------------------------------------------------------------------------
def r_precision(query_vectors: np.ndarray, mention_vectors: np.ndarray, docs: np.ndarray,
                n_docs: int, relevant: Sequence[set[int] | np.ndarray]) -> np.ndarray:
    """R-Precision per query, ranking documents by their best mention: the metric of
    :mod:`ner_retriever.evaluation.evaluate` (ties in expectation), so validation here selects what the
    evaluation measures. Vectors must be normalised; queries with R = 0 give NaN."""
    from ner_retriever.evaluation.evaluate import mention_document_scores
    from ner_retriever.evaluation.evaluate import r_precision as ranking_r_precision

    order = np.argsort(docs, kind="stable")  # the per-document max wants mentions grouped
    scores = mention_document_scores(query_vectors, mention_vectors[order], docs[order], n_docs)
    result = np.full(len(relevant), np.nan)
    for q, rel in enumerate(relevant):
        rel = np.fromiter(rel, dtype=np.int64) if isinstance(rel, set) else np.asarray(rel)
        if len(rel):
            result[q] = ranking_r_precision(scores[q], rel)
    return result


def relevant_docs(ms: MentionSet, types: Sequence[str]) -> list[np.ndarray]:
    return [np.unique(ms.docs[ms.labels == t]) for t in types]


def evaluate_vectors(ms: MentionSet, query_raw: dict[str, np.ndarray],
                     project: Callable[[np.ndarray], np.ndarray] | None = None,
                     types: Sequence[str] | None = None,
                     project_queries: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Macro R-Precision of ``project`` (None = raw normalised vectors) on a mention set.

    ``query_raw[type]`` holds one or more raw description vectors; their projections are
    averaged into one query (one description gives exactly that description's query)."""
    project = project or normalize
    project_queries = project_queries or project
    types = [t for t in (types or sorted(query_raw)) if t in query_raw]
    mentions = project(ms.vectors)
    queries = normalize(np.stack([project_queries(query_raw[t]).mean(0) for t in types]))
    per = r_precision(queries, mentions, ms.docs, ms.n_docs, relevant_docs(ms, types))
    per_type = {t: float(p) for t, p in zip(types, per) if not np.isnan(p)}
    macro = float(np.mean(list(per_type.values()))) if per_type else float("nan")
    return {"r_precision": macro, "per_type": per_type}


# -- training ----------------------------------------------------------------------------------
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


def within_type_whitening(x: np.ndarray, labels: np.ndarray, shrink: float) -> np.ndarray:
    """``Sw^-1/2`` of the pooled within-type covariance, shrunk towards the identity by
    ``shrink`` x its mean eigenvalue, scaled to mean eigenvalue 1 (symmetric, d x d)."""
    d = x.shape[1]
    sw = np.zeros((d, d))
    for t in np.unique(labels):
        xt = x[labels == t].astype(np.float64)
        xt = xt - xt.mean(0)
        sw += xt.T @ xt
    sw /= len(x)
    ev, vec = np.linalg.eigh(sw)
    ev = np.maximum(ev, 0) + shrink * ev.mean()
    w = vec @ np.diag(ev ** -0.5) @ vec.T
    return (w / np.mean(ev ** -0.5)).astype(np.float32)


def identity_init(head, mean: np.ndarray | None = None, query_mean: np.ndarray | None = None,
                  transform: np.ndarray | None = None) -> None:
    """Make a residual head start as (centred) raw vectors: skip = [I; 0] (or ``transform``)
    minus the mean, the MLP branch's last layer zero, so ``head(x) == normalize(x - mean)``
    zero-padded. With ``query_mean`` queries are centred on their own mean instead."""
    import torch

    cfg = head.config
    if cfg.query_bias:
        with torch.no_grad():
            head.query_bias.zero_()
            if query_mean is not None and mean is not None:
                head.query_bias.copy_(torch.from_numpy(mean - query_mean))
    if not cfg.residual:
        return
    with torch.no_grad():
        w = torch.zeros(cfg.output_dim, cfg.input_dim)
        n = min(cfg.input_dim, cfg.output_dim)
        w[:n, :n] = torch.eye(n) if transform is None else torch.from_numpy(transform)[:n, :n]
        head.skip.weight.copy_(w)
        if head.skip.bias is not None:
            head.skip.bias.copy_(-(w @ torch.from_numpy(mean)) if mean is not None
                                 else torch.zeros(cfg.output_dim))
        head.net[3].weight.zero_()
        head.net[3].bias.zero_()


def _supcon(logits, pos_mask):
    """Mean over anchors of -mean log p(positive); anchors without positives are skipped."""
    import torch

    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos_mask.sum(1)
    keep = n_pos > 0
    per = -(log_prob * pos_mask).sum(1)[keep] / n_pos[keep]
    return per.mean() if keep.any() else logits.sum() * 0


def _triplet(sim, pos_mask, neg_mask, margin):
    """Batch-hard triplet on cosine distance: hardest positive vs hardest negative per anchor."""
    import torch

    d = 1 - sim
    hardest_pos = torch.where(pos_mask > 0, d, torch.full_like(d, -1e4)).max(1).values
    hardest_neg = torch.where(neg_mask > 0, d, torch.full_like(d, 1e4)).min(1).values
    keep = (pos_mask.sum(1) > 0) & (neg_mask.sum(1) > 0)
    loss = torch.relu(hardest_pos - hardest_neg + margin)[keep]
    return loss.mean() if keep.any() else sim.sum() * 0


def train_head(train: MentionSet, description_vectors: dict[str, np.ndarray],
               config: TrainConfig | None = None, head_meta: dict | None = None,
               monitors: dict[str, tuple[MentionSet, dict[str, np.ndarray]]] | None = None,
               progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a head on frozen vectors; select the epoch by macro R-Precision on held-out types.

    ``description_vectors[type]`` holds the raw vectors of one or more descriptions (first =
    canonical). Selection: with ``cv_folds > 1`` the types are split into folds, a head is
    trained with each fold held out, the per-epoch validation curves are averaged (epoch 0 =
    the initial head) and a final head is trained on all types for the best epoch count;
    otherwise one split (``val_types`` / ``val_fraction``) with early stopping. ``monitors`` are
    extra ``(mentions, queries)`` sets scored after each epoch for reporting only."""
    cfg = config or TrainConfig()
    if cfg.loss not in ("infonce", "triplet"):
        raise ConfigError(f"unknown loss {cfg.loss!r}; choose infonce or triplet")
    log = log or (lambda _msg: None)
    counts = {t: int((train.labels == t).sum()) for t in train.types}
    usable = sorted(t for t, c in counts.items() if c >= cfg.min_mentions
                    and t in description_vectors and not (cfg.exclude_other and is_other_tag(t)))
    if cfg.cv_folds > 1 and cfg.val_types is None:
        if len(usable) < 2 * cfg.cv_folds:
            raise ConfigError(f"{len(usable)} usable types are too few for {cfg.cv_folds} folds")
        order = sorted(usable)
        random.Random(cfg.seed).shuffle(order)
        folds = [sorted(order[i::cfg.cv_folds]) for i in range(cfg.cv_folds)]
        curves, history = [], []
        for k, fold in enumerate(folds):
            rest = [t for t in usable if t not in fold]
            log(f"fold {k + 1}/{cfg.cv_folds}: validating on {fold}")
            _, hist, _, _, raw = _fit(train, description_vectors, cfg, rest, fold, cfg.epochs,
                                      "curve", head_meta, monitors, progress, log)
            curves.append([raw] + [h["val_r_precision"] for h in hist])
            history += [dict(h, fold=k + 1) for h in hist]
        mean_curve = np.mean(curves, axis=0)
        best_epoch = int(np.argmax(mean_curve)) if cfg.keep_init else \
            int(np.argmax(mean_curve[1:])) + 1
        log(f"mean held-out curve {np.round(mean_curve, 4).tolist()}: best epoch {best_epoch}")
        head, hist, _, _, _ = _fit(train, description_vectors, cfg, usable, [], best_epoch,
                                   "last", head_meta, monitors, progress, log)
        history += [dict(h, final=True) for h in hist]
        return TrainResult(head, usable, [], best_epoch, float(mean_curve[best_epoch]),
                           float(mean_curve[0]), history)
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
    head, history, best_epoch, best, raw_val = _fit(
        train, description_vectors, cfg, train_types, val_types, cfg.epochs, mode, head_meta,
        monitors, progress, log)
    if cfg.refit and val_types:
        log(f"refit on all {len(usable)} types for {best_epoch} epochs")
        head, refit_hist, _, _, _ = _fit(train, description_vectors, cfg, usable, [], best_epoch,
                                         "last", head_meta, monitors, progress, log)
        history = history + [dict(r, refit=True) for r in refit_hist]
    return TrainResult(head, train_types, val_types, best_epoch,
                       float(best) if val_types else float("nan"), float(raw_val), history)


def _fit(train: MentionSet, description_vectors: dict[str, np.ndarray], cfg: TrainConfig,
         types: list[str], val_types: list[str], epochs: int, mode: str, head_meta, monitors,
         progress: bool, log):
    """Train one head on ``types``. ``mode``: "best" keeps the best epoch on ``val_types`` with
    early stopping, "curve" runs every epoch (for cross-validation), "last" keeps the last.
    Returns ``(head, history, best_epoch, best_val, initial_val)``."""
    import torch

    from ner_retriever.models.head import HeadConfig, ProjectionHead

    def validate(head) -> float:
        """Macro R-Precision on the held-out types, averaged over their descriptions (each
        description is one query), so selection rewards robustness to how a type is phrased."""
        n = max(len(description_vectors[t]) for t in val_types) if cfg.val_all_descriptions else 1
        scores = []
        for i in range(n):
            queries = {t: description_vectors[t][i:i + 1] for t in val_types
                       if len(description_vectors[t]) > i}
            scores.append(evaluate_vectors(train, queries, head.project,
                                           project_queries=head.project_queries)["r_precision"])
        return float(np.mean(scores))

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pools = {t: np.nonzero(train.labels == t)[0] for t in types}
    x_all = torch.from_numpy(train.vectors)
    q_raw = [torch.from_numpy(np.asarray(description_vectors[t], np.float32)) for t in types]
    rows = np.concatenate(list(pools.values()))
    mean = train.vectors[rows].mean(0) if cfg.center else None
    query_mean = np.mean([np.asarray(description_vectors[t]).mean(0) for t in types], 0)
    transform = (within_type_whitening(train.vectors[rows], train.labels[rows], cfg.whiten)
                 if cfg.whiten is not None and cfg.residual else None)
    hcfg = HeadConfig(input_dim=train.vectors.shape[1], hidden_dim=cfg.hidden_dim,
                      output_dim=cfg.output_dim, dropout=cfg.dropout, residual=cfg.residual,
                      skip_bias=cfg.residual and cfg.center,
                      query_bias=cfg.query_center and cfg.center, **(head_meta or {}))
    head = ProjectionHead(hcfg)
    identity_init(head, mean, query_mean if cfg.query_center else None, transform)
    params = [p for n, p in head.named_parameters()
              if not (cfg.linear_only and cfg.residual and n.startswith("net."))]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # nearest types by centroid, for hard-negative batches
    cents = normalize(np.stack([train.vectors[pools[t]].mean(0) for t in types]))
    near = np.argsort(-(cents @ cents.T), axis=1)
    p = min(cfg.types_per_batch, len(types))
    k = max(2, cfg.batch_size // p)
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(rows) / (p * k)))
    validating = bool(val_types) and mode in ("best", "curve")
    raw_val = validate(head) if validating else float("nan")
    snapshot = lambda: {n: v.detach().clone() for n, v in head.state_dict().items()}  # noqa: E731
    history, best, best_state, best_epoch, bad = [], -math.inf, None, 0, 0
    if validating and cfg.keep_init:  # epoch 0 = the initial head competes too
        best, best_state = raw_val, snapshot()
    for epoch in range(1, epochs + 1):
        head.train()
        bar = _tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                    disable=not progress, leave=False)
        losses = []
        for _ in range(steps):
            if rng.random() < cfg.hard_type_fraction:
                chosen = near[rng.integers(len(types))][:p]
            else:
                chosen = rng.choice(len(types), size=p, replace=False)
            idx, lab = [], []
            for ti in chosen:
                pool = pools[types[ti]]
                idx.append(rng.choice(pool, size=k, replace=len(pool) < k))
                lab.append(np.full(k, ti))
            idx, lab = np.concatenate(idx), torch.from_numpy(np.concatenate(lab))
            h = head(x_all[idx])
            # one randomly chosen description per type for this step
            q = head(torch.stack([qr[rng.integers(len(qr))] for qr in q_raw]), queries=True)
            loss = _loss(cfg, h, q, lab, torch.from_numpy(np.asarray(chosen)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            bar.update(1)
        bar.close()
        row = {"epoch": epoch, "loss": float(np.mean(losses))}
        if validating:
            row["val_r_precision"] = validate(head)
        for name, (ms, qv) in (monitors or {}).items():
            row[name] = evaluate_vectors(ms, qv, head.project,
                                         project_queries=head.project_queries)["r_precision"]
        history.append(row)
        log(json.dumps(row))
        if mode != "best":
            continue
        score = row.get("val_r_precision", -row["loss"])
        if score > best:
            best, best_epoch, bad, best_state = score, epoch, 0, snapshot()
        else:
            bad += 1
            if bad >= cfg.patience:
                log(f"early stop after epoch {epoch}: best epoch {best_epoch}")
                break
    if mode == "best" and best_state is not None:
        head.load_state_dict(best_state)
    elif mode != "best":
        best_epoch = epochs
    head.eval()
    return head, history, best_epoch, best, raw_val


def _loss(cfg: TrainConfig, h, q, lab, chosen):
    """InfoNCE (or batch-hard triplet) over mention<->mention and description<->mention pairs.

    ``h``: projected mentions (B, d) with type index ``lab``; ``q``: one projected description
    per training type (T, d); ``chosen``: the type indices present in the batch."""
    import torch

    same = (lab[:, None] == lab[None, :]).float()
    eye = torch.eye(len(lab))
    pos_q = (chosen[:, None] == lab[None, :]).float()  # batch types x mentions
    loss = torch.zeros(())
    if cfg.loss == "infonce":
        if cfg.mention_weight:
            logits = (h @ h.T) / cfg.temperature - eye * 1e4
            loss = loss + cfg.mention_weight * _supcon(logits, same - eye)
        if cfg.description_weight:
            to_mentions = _supcon((q[chosen] @ h.T) / cfg.temperature, pos_q)
            to_types = torch.nn.functional.cross_entropy((h @ q.T) / cfg.temperature, lab)
            loss = loss + cfg.description_weight * (to_mentions + to_types)
        return loss
    if cfg.mention_weight:
        loss = loss + cfg.mention_weight * _triplet(h @ h.T, same - eye, 1 - same, cfg.margin)
    if cfg.description_weight:
        onehot = torch.nn.functional.one_hot(lab, len(q)).float()
        loss = loss + cfg.description_weight * (
            _triplet(q[chosen] @ h.T, pos_q, 1 - pos_q, cfg.margin)
            + _triplet(h @ q.T, onehot, 1 - onehot, cfg.margin))
    return loss


# -- end to end --------------------------------------------------------------------------------
def encode_descriptions(encoder, descriptions: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Raw vectors of every description, through the same encoder (and query template)."""
    flat = [(t, d) for t, ds in descriptions.items() for d in ds]
    if not flat:
        return {}
    vecs = encoder.encode_queries([d for _, d in flat])
    out: dict[str, list[np.ndarray]] = {}
    for (t, _), v in zip(flat, vecs):
        out.setdefault(t, []).append(v)
    return {t: np.stack(v).astype(np.float32) for t, v in out.items()}


def run_training(data: Sequence[str | Path], out: str | Path, model: str | None = None,
                 block: int | None = None, component: str = "value",
                 descriptions: str | Path | None = None,
                 max_sentences: int | Sequence[int | None] | None = None,
                 data_seed: int = 0, config: TrainConfig | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, encoder=None,
                 query_template: str | None = None) -> dict:
    """Extract (cached) mention vectors from BIO files, train a head, save it to ``out``.

    Writes ``head.json`` + ``head.safetensors`` (loadable by ``ProjectionHead.load``) and
    ``training.json`` (data, types, settings and per-epoch history)."""
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    cfg = config or TrainConfig()
    if not data:
        raise ConfigError("train: give at least one BIO/CoNLL training file")
    for p in data:  # fail before the model loads
        if not Path(p).is_file():
            raise CorpusError("no such file", str(p))
    if cfg.loss not in ("infonce", "triplet"):
        raise ConfigError(f"unknown loss {cfg.loss!r}; choose infonce or triplet")
    if encoder is None:
        settings = {"component": component}
        if query_template is not None:
            settings["query_template"] = query_template
        if model:
            settings["model"] = model
        if block is not None:
            settings["block"] = block
        encoder = TransformerEncoder(EncoderConfig(**settings))
    sizes = list(max_sentences) if isinstance(max_sentences, (list, tuple)) else \
        [max_sentences] * len(data)
    if len(sizes) == 1:
        sizes = sizes * len(data)
    if len(sizes) != len(data):
        raise ConfigError(f"give one --max-sentences for all files or one per file "
                          f"({len(data)}), not {len(sizes)}")
    sets = [extract_mentions(p, encoder, max_sentences=n, seed=data_seed, progress=progress)
            for p, n in zip(data, sizes)]
    train = MentionSet.concat(sets)
    if len(train) == 0:
        raise CorpusError("holds no gold mentions", ", ".join(str(p) for p in data))
    desc = load_descriptions(descriptions, train.types)
    desc_vectors = encode_descriptions(encoder, desc)
    ecfg = encoder.config
    result = train_head(train, desc_vectors, cfg, progress=progress, log=log,
                        head_meta={"model": ecfg.model, "block": ecfg.block,
                                   "component": ecfg.component,
                                   "query_template": ecfg.query_template})
    out = Path(out)
    result.head.save(out)
    summary = {
        "data": [{"file": str(p), "sample": n, "sentences": s.n_docs, "mentions": len(s),
                  "types": s.types} for p, s, n in zip(data, sets, sizes)],
        "data_seed": data_seed,
        "encoder": ecfg.identity(), "descriptions": {t: desc[t] for t in
                                                     result.train_types + result.val_types},
        "config": asdict(cfg), **result.summary(),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
