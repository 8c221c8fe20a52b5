"""The contrastive objectives of head training: InfoNCE (supervised contrastive) or batch-hard
triplet, over mention<->mention and description<->mention pairs of one type-balanced batch."""

from __future__ import annotations

SELF_LOGIT_PENALTY = 1e4  # subtracted from a mention's logit with itself: never its own positive
FAR = 1e4  # a distance beyond any cosine distance, masking pairs out of a max/min


def _pad(mask, n: int, value: float):
    """``mask`` with ``n`` extra columns of ``value`` (the negative spans' columns)."""
    import torch

    return torch.cat([mask, torch.full((len(mask), n), value)], dim=1) if n else mask


def contrastive_loss(cfg, h, q, lab, chosen, neg=None):
    """InfoNCE (or batch-hard triplet) over mention<->mention and description<->mention pairs.

    ``cfg`` is a :class:`~ner_retriever.training.train.TrainConfig`; ``h``: projected mentions
    (B, d) with type index ``lab``; ``q``: one projected description per training type (T, d);
    ``chosen``: the type indices present in the batch; ``neg``: projected spans that are no
    mention of any type (detected false positives, N x d), a negative for every anchor and
    query, so a type query learns to rank them below its type's mentions."""
    import torch

    n_neg = 0 if neg is None else len(neg)
    keys = h if not n_neg else torch.cat([h, neg])
    same = _pad((lab[:, None] == lab[None, :]).float(), n_neg, 0.0)
    eye = _pad(torch.eye(len(lab)), n_neg, 0.0)
    pos_q = _pad((chosen[:, None] == lab[None, :]).float(), n_neg, 0.0)  # types x keys
    loss = torch.zeros(())
    if cfg.loss == "infonce":
        if cfg.mention_weight:
            logits = (h @ keys.T) / cfg.temperature - eye * SELF_LOGIT_PENALTY
            loss = loss + cfg.mention_weight * supcon(logits, same - eye)
        if cfg.description_weight:
            to_mentions = supcon((q[chosen] @ keys.T) / cfg.temperature, pos_q)
            to_types = torch.nn.functional.cross_entropy((h @ q.T) / cfg.temperature, lab)
            loss = loss + cfg.description_weight * (to_mentions + to_types)
        return loss
    if cfg.mention_weight:
        loss = loss + cfg.mention_weight * triplet(h @ keys.T, same - eye, 1 - same, cfg.margin)
    if cfg.description_weight:
        onehot = torch.nn.functional.one_hot(lab, len(q)).float()
        loss = loss + cfg.description_weight * (
            triplet(q[chosen] @ keys.T, pos_q, 1 - pos_q, cfg.margin)
            + triplet(h @ q.T, onehot, 1 - onehot, cfg.margin))
    return loss


def supcon(logits, pos_mask):
    """Mean over anchors of -mean log p(positive); anchors without positives are skipped."""
    import torch

    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos_mask.sum(1)
    keep = n_pos > 0
    per = -(log_prob * pos_mask).sum(1)[keep] / n_pos[keep]
    return per.mean() if keep.any() else logits.sum() * 0


def triplet(sim, pos_mask, neg_mask, margin):
    """Batch-hard triplet on cosine distance: hardest positive vs hardest negative per anchor."""
    import torch

    d = 1 - sim
    hardest_pos = torch.where(pos_mask > 0, d, torch.full_like(d, -FAR)).max(1).values
    hardest_neg = torch.where(neg_mask > 0, d, torch.full_like(d, FAR)).min(1).values
    keep = (pos_mask.sum(1) > 0) & (neg_mask.sum(1) > 0)
    loss = torch.relu(hardest_pos - hardest_neg + margin)[keep]
    return loss.mean() if keep.any() else sim.sum() * 0
