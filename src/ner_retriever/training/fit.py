"""One head's optimisation: a residual head initialised as the identity (so it starts exactly
at raw vectors), AdamW over type-balanced batches (a share of them built from nearest-neighbour
types, for hard negatives), validation after each epoch and early stopping on the best one."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ner_retriever.models.head import normalize
from ner_retriever.training.losses import contrastive_loss
from ner_retriever.training.mentions import MentionSet, progress_bar
from ner_retriever.training.validation import evaluate_vectors

MIN_PER_TYPE = 2  # mentions drawn per type and batch: at least one positive pair
LOSS_WINDOW = 20  # steps averaged in the progress bar's running loss
MLP_OUTPUT = 3  # index of the MLP branch's last linear layer in ``ProjectionHead.net``


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
        head.net[MLP_OUTPUT].weight.zero_()
        head.net[MLP_OUTPUT].bias.zero_()


def _initial_head(train: MentionSet, description_vectors, cfg, types, rows, head_meta):
    """A fresh head (its random weights drawn from the seeded torch generator), identity-initialised."""
    from ner_retriever.models.head import HeadConfig, ProjectionHead

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
    return head


@dataclass
class _Batches:
    """Type-balanced batches: ``p`` types (nearest neighbours of a random type in a
    ``hard_type_fraction`` share of batches, else random), ``k`` mentions of each."""

    types: list[str]
    pools: dict[str, np.ndarray]
    near: np.ndarray  # (T, T) type indices by centroid similarity, nearest first
    p: int
    k: int
    hard_fraction: float
    rng: np.random.Generator

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mention rows, their type index, the batch's type indices)``."""
        rng = self.rng
        if rng.random() < self.hard_fraction:
            chosen = self.near[rng.integers(len(self.types))][:self.p]
        else:
            chosen = rng.choice(len(self.types), size=self.p, replace=False)
        idx, lab = [], []
        for ti in chosen:
            pool = self.pools[self.types[ti]]
            idx.append(rng.choice(pool, size=self.k, replace=len(pool) < self.k))
            lab.append(np.full(self.k, ti))
        return np.concatenate(idx), np.concatenate(lab), chosen


def _batches(train: MentionSet, cfg, types, pools, rng) -> _Batches:
    cents = normalize(np.stack([train.vectors[pools[t]].mean(0) for t in types]))
    near = np.argsort(-(cents @ cents.T), axis=1)
    p = min(cfg.types_per_batch, len(types))
    k = max(MIN_PER_TYPE, cfg.batch_size // p)
    return _Batches(types, pools, near, p, k, cfg.hard_type_fraction, rng)


def _epoch(head, opt, batches: _Batches, x_all, q_raw, cfg, steps: int, bar,
           x_neg=None) -> float:
    """One epoch of ``steps`` optimiser steps; the mean loss. ``x_neg``: raw vectors of spans
    that are no mention (``cfg.negatives_per_batch`` of them drawn per step)."""
    import torch

    head.train()
    losses = []
    for _ in range(steps):
        idx, lab, chosen = batches.draw()
        lab = torch.from_numpy(lab)
        h = head(x_all[idx])
        # one randomly chosen description per type for this step
        q = head(torch.stack([qr[batches.rng.integers(len(qr))] for qr in q_raw]), queries=True)
        neg = None
        if x_neg is not None and cfg.negatives_per_batch:
            rows = batches.rng.choice(len(x_neg), size=cfg.negatives_per_batch,
                                      replace=len(x_neg) < cfg.negatives_per_batch)
            neg = head(x_neg[rows])
        loss = contrastive_loss(cfg, h, q, lab, torch.from_numpy(np.asarray(chosen)), neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-LOSS_WINDOW:]):.4f}")
        bar.update(1)
    bar.close()
    return float(np.mean(losses))


def _validate(head, train: MentionSet, description_vectors, val_types, all_descriptions) -> float:
    """Macro R-Precision on the held-out types, averaged over their descriptions (each
    description is one query), so selection rewards robustness to how a type is phrased."""
    n = max(len(description_vectors[t]) for t in val_types) if all_descriptions else 1
    scores = []
    for i in range(n):
        queries = {t: description_vectors[t][i:i + 1] for t in val_types
                   if len(description_vectors[t]) > i}
        scores.append(evaluate_vectors(train, queries, head.project,
                                       project_queries=head.project_queries)["r_precision"])
    return float(np.mean(scores))


class _Selection:
    """The best epoch so far (its weights snapshotted) and the patience count of early stopping."""

    def __init__(self, head, initial: float | None):
        self.head, self.best, self.state, self.epoch, self.bad = head, -math.inf, None, 0, 0
        if initial is not None:  # epoch 0 = the initial head competes too
            self.best, self.state = initial, self._snapshot()

    def _snapshot(self) -> dict:
        return {n: v.detach().clone() for n, v in self.head.state_dict().items()}

    def update(self, epoch: int, score: float, patience: int) -> bool:
        """Record an epoch's score; True when patience has run out."""
        if score > self.best:
            self.best, self.epoch, self.bad, self.state = score, epoch, 0, self._snapshot()
            return False
        self.bad += 1
        return self.bad >= patience


def _score_epoch(head, epoch: int, loss: float, validate, monitors) -> dict:
    """The history row of an epoch: loss, held-out R-Precision, monitor sets."""
    row = {"epoch": epoch, "loss": loss}
    if validate is not None:
        row["val_r_precision"] = validate(head)
    for name, (ms, qv) in (monitors or {}).items():
        row[name] = evaluate_vectors(ms, qv, head.project,
                                     project_queries=head.project_queries)["r_precision"]
    return row


def fit_head(train: MentionSet, description_vectors: dict[str, np.ndarray], cfg,
             types: list[str], val_types: list[str], epochs: int, mode: str, head_meta, monitors,
             progress: bool, log, negatives: np.ndarray | None = None):
    """Train one head on ``types``. ``mode``: "best" keeps the best epoch on ``val_types`` with
    early stopping, "curve" runs every epoch (for cross-validation), "last" keeps the last.
    ``negatives``: raw vectors of detected spans that are no mention, extra negatives.
    Returns ``(head, history, best_epoch, best_val, initial_val)``."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pools = {t: np.nonzero(train.labels == t)[0] for t in types}
    x_all = torch.from_numpy(train.vectors)
    q_raw = [torch.from_numpy(np.asarray(description_vectors[t], np.float32)) for t in types]
    rows = np.concatenate(list(pools.values()))
    head = _initial_head(train, description_vectors, cfg, types, rows, head_meta)
    params = [p for n, p in head.named_parameters()
              if not (cfg.linear_only and cfg.residual and n.startswith("net."))]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = _batches(train, cfg, types, pools, rng)
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(rows) / (batches.p * batches.k)))
    validating = bool(val_types) and mode in ("best", "curve")
    validate = (lambda h: _validate(h, train, description_vectors, val_types,  # noqa: E731
                                    cfg.val_all_descriptions)) if validating else None
    raw_val = validate(head) if validating else float("nan")
    selection = _Selection(head, raw_val if validating and cfg.keep_init else None)
    history = []
    for epoch in range(1, epochs + 1):
        bar = progress_bar(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                           disable=not progress, leave=False)
        loss = _epoch(head, opt, batches, x_all, q_raw, cfg, steps, bar,
                      None if negatives is None or not len(negatives)
                      else torch.from_numpy(np.asarray(negatives, np.float32)))
        row = _score_epoch(head, epoch, loss, validate, monitors)
        history.append(row)
        log(json.dumps(row))
        if mode == "best" and selection.update(epoch, row.get("val_r_precision", -row["loss"]),
                                               cfg.patience):
            log(f"early stop after epoch {epoch}: best epoch {selection.epoch}")
            break
    if mode == "best" and selection.state is not None:
        head.load_state_dict(selection.state)
    best_epoch = selection.epoch if mode == "best" else epochs
    head.eval()
    return head, history, best_epoch, selection.best, raw_val
