"""Fitting the learned detector's tagger head on cached token states (``fit_head``): the
optimisation loop of ``training.detector.train_detector``, kept apart from data and caching."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ner_retriever.detect.tagger import IGNORE, TaggerConfig, TaggerHead, pad

__all__ = ["fit_head"]


def fit_head(tagger: TaggerConfig, feats: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             train_idx: Sequence[int], held_idx: Sequence[int], cfg: Any,
             log: Callable[[str], None] = lambda m: None) -> tuple[TaggerHead, int, list[dict]]:
    """Train a head on cached token states; keep the epoch with the lowest held-out loss.

    Runs on one thread: the head's operations are small, and on busy shared cores a thread
    pool waiting for its second core made epochs ten times slower in our measurements."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log)
    finally:
        torch.set_num_threads(threads)


# Floor of a feature's standard deviation when standardising (a constant feature stays finite).
_MIN_STD = 1e-3
_WEIGHT_DECAY = 0.01
_WARMUP_SHARE = 0.1  # of the one-cycle schedule's steps
_MAX_GRAD_NORM = 1.0


def _standardised_head(tagger: TaggerConfig, feats: Sequence[np.ndarray],
                       train_idx: Sequence[int]) -> TaggerHead:
    """A fresh head whose input standardisation is fitted on the training tokens."""
    stacked = np.concatenate([feats[i] for i in train_idx]).astype(np.float32)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    del stacked
    head = TaggerHead(tagger)
    head.mean.copy_(torch.from_numpy(mean))
    head.scale.copy_(torch.from_numpy(1.0 / np.maximum(std, _MIN_STD)))
    return head


def _batches(feats: Sequence[np.ndarray], labels: Sequence[np.ndarray], indices: Sequence[int],
             batch_size: int, rng: random.Random | None):
    """Padded ``(x, lengths, y)`` batches in buckets of similar length (padding stays small),
    the buckets shuffled with ``rng`` when given."""
    order = sorted(indices, key=lambda i: len(feats[i]))
    chunks = [order[b: b + batch_size] for b in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        x, lengths = pad([feats[i] for i in chunk])
        y = torch.full(x.shape[:2], IGNORE, dtype=torch.long)
        for row, i in enumerate(chunk):
            y[row, : len(labels[i])] = torch.from_numpy(labels[i])
        yield x, lengths, y


def _held_loss(head: TaggerHead, loss_fn: nn.Module, batches) -> float:
    """Mean loss per labelled token over ``batches``, in eval mode."""
    head.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for x, lengths, y in batches:
            n = int((y != IGNORE).sum())
            if n:
                total += float(loss_fn(head(x, lengths).reshape(-1, 3), y.reshape(-1))) * n
                count += n
    head.train()
    return total / max(count, 1)


def _train_epoch(head: TaggerHead, loss_fn: nn.Module, optim, sched, batches) -> float:
    """One epoch over ``batches``; returns the mean training loss per document."""
    running, seen = 0.0, 0
    for x, lengths, y in batches:
        loss = loss_fn(head(x, lengths).reshape(-1, 3), y.reshape(-1))
        optim.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), _MAX_GRAD_NORM)
        optim.step()
        sched.step()
        running += float(loss.detach()) * len(lengths)
        seen += len(lengths)
    return running / max(seen, 1)


def _fit_head(tagger, feats, labels, train_idx, held_idx, cfg, log):
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    head = _standardised_head(tagger, feats, train_idx)
    optim = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=_WEIGHT_DECAY)
    steps = cfg.epochs * math.ceil(len(train_idx) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=cfg.lr, total_steps=max(steps, 1),
                                                pct_start=_WARMUP_SHARE)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    best_state, best_loss, best_epoch, history = None, float("inf"), 0, []
    head.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = _train_epoch(head, loss_fn, optim, sched,
                                  _batches(feats, labels, train_idx, cfg.batch_size, rng))
        val = (_held_loss(head, loss_fn, _batches(feats, labels, held_idx, cfg.batch_size, None))
               if held_idx else float("nan"))
        secs = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5),
                        "heldout_loss": round(val, 5), "seconds": round(secs, 1)})
        log(f"epoch {epoch}: train loss {train_loss:.4f}, held-out loss {val:.4f} "
            f"({secs:.1f} s)")
        if not held_idx or val < best_loss:
            best_loss, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.eval()
    return head, best_epoch, history
