"""The joint pass: detect spans from early-block states and encode them, in ONE forward pass
per window (``TransformerEncoder.detect_encode``).

Every window of every document is run once, capturing the detector's feature (block,
component) pairs at every token and, when vectors are wanted, the encoder's own (block,
component). ``decide`` turns the per-document features into spans; their vectors are read from
the captured activations exactly as ``encode_spans`` reads them (last token of the span, in the
first window that contains it). For a causal model the pass may stop after the last feature
block and resume the later blocks only on windows that hold a span (``resume``).

Memory stays bounded whatever the length: documents are processed in groups of about
``max_tokens`` tokens, and a longer document in pieces of consecutive windows
(``windows.detect_pieces``); ``decide`` then sees one piece at a time and only the spans whose
last token lies in the piece's own part are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ner_retriever.models.windows import detect_pieces, first_window, last_tokens, window_count

__all__ = ["JointPass", "resume", "resume_block"]

Decide = Callable[[list[int], list[np.ndarray], list[list[tuple[int, int]]]],
                  list[list[tuple[int, int]]]]
TokenHead = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# What the one-off resume check runs on.
PROBE_TEXT = "Paris is a city in France"
# A context larger than any window: a window edge at a document edge cuts nothing off.
_UNBOUNDED = 1 << 30
# How close a resumed vector must be to a plain pass's for resuming to be used.
_RESUME_RTOL, _RESUME_ATOL = 1e-4, 1e-5


class _Replay(torch.nn.Module):
    """Stands in for a block during a resumed pass: returns the stored output (or, with
    none, its input unchanged), shaped like the real block's output."""

    def __init__(self, block: torch.nn.Module, stored: torch.Tensor | None):
        super().__init__()
        self.stored = stored
        if hasattr(block, "attention_type"):  # models that pick each block's mask by it
            self.attention_type = block.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        if self.stored is None:
            return hidden_states
        return self.stored.to(device=hidden_states.device, dtype=hidden_states.dtype)


def resume_block(enc: Any, features: Sequence[tuple[int, str]]) -> int | None:
    """The block whose output the joint pass resumes from, or None for one pass.

    For a causal model the pass can stop after the detector's last feature block, keep that
    block's output, and run the later blocks only on windows that hold a detected span, cut
    after its last token (``resume``). Documents where nothing is detected then cost the
    early blocks only. Checked once on a probe text against a plain pass; a model the
    trick does not reproduce exactly keeps the single pass."""
    last = max(block for block, _ in features)
    if not enc.causal or last >= min(block for block, _ in enc.config.targets):
        return None
    cache = enc.__dict__.setdefault("_resume_ok", {})
    if last not in cache:
        ids = enc._prefix + enc.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        *parts, hidden = enc._capture([ids], [*enc.config.targets, (last, "hidden")])
        plain = torch.cat(parts, dim=-1)
        got: dict = {}
        try:
            resume(enc, last, {(0, 0): hidden[0]},
                   {(0, 0): [(got, 0, len(ids) - 1 - len(enc._prefix))]}, 1)
            cache[last] = bool(np.allclose(
                got[0], plain[0, -1].numpy(), rtol=_RESUME_RTOL,
                atol=_RESUME_ATOL * float(plain.abs().max()) + 1e-7))
        except Exception:  # noqa: BLE001 - an architecture we cannot resume: one pass
            cache[last] = False
    return last if cache[last] else None


def resume(enc: Any, block: int, states: dict, wanted: dict, batch_size: int) -> None:
    """Run the blocks after ``block`` from stored outputs and fill in span vectors.

    ``states[key]``: ``block``'s output for one window (prefix included); ``wanted[key]``:
    ``(array, row, position)`` to receive the encoder's vector at that position of the
    window's text (after the prefix). Each window is cut after its last wanted position.
    The first blocks are swapped for stand-ins that hand back the stored output, so they
    cost nothing; the model's own code runs the rest."""
    shift = len(enc._prefix)
    keys = sorted(wanted, key=lambda k: max(pos for _, _, pos in wanted[k]))
    blocks = enc._blocks
    originals = [blocks[i] for i in range(block + 1)]
    try:
        for b in range(0, len(keys), batch_size):
            chunk = keys[b: b + batch_size]
            cut = [states[k][: shift + max(pos for _, _, pos in wanted[k]) + 1] for k in chunk]
            longest = max(len(x) for x in cut)
            stored = cut[0].new_zeros((len(cut), longest, cut[0].shape[-1]))
            for row, x in enumerate(cut):
                stored[row, : len(x)] = x
            for i, module in enumerate(originals):
                blocks[i] = _Replay(module, stored if i == block else None)
            out = torch.cat(enc._capture([[enc._pad_id] * len(x) for x in cut],
                                         enc.config.targets), dim=-1)
            for row, k in enumerate(chunk):
                for array, idx, pos in wanted[k]:
                    array[idx] = out[row, shift + pos].numpy()
    finally:
        for i, module in enumerate(originals):
            blocks[i] = module


class JointPass:
    """One ``detect_encode`` call over ``texts`` on encoder ``enc`` (see the module docstring
    and ``TransformerEncoder.detect_encode`` for the arguments); ``run`` returns
    ``(spans, vectors or None)``."""

    def __init__(self, enc: Any, texts: Sequence[str], features: Sequence[tuple[int, str]],
                 decide: Decide, vectors: bool, batch_size: int, max_tokens: int,
                 token_head: TokenHead | None):
        self.enc, self.decide, self.vectors = enc, decide, vectors
        self.batch_size, self.token_head = batch_size, token_head
        self.feats = list(dict.fromkeys(features))
        self.resume = resume_block(enc, self.feats) if vectors else None
        # kept per window: the vector's activations, or the state to resume from
        keep = enc.config.targets if self.resume is None else [(self.resume, "hidden")]
        self.targets = self.feats + ([k for k in keep if k not in self.feats] if vectors else [])
        self.slots = [self.targets.index(k) for k in keep] if vectors else []
        self.width, self.step, self.p = enc.window, enc._step, len(enc._prefix)
        self.tokens = [enc._tokenize(text) for text in texts]  # compact, 12 bytes a token
        self.pieces = [piece for d, (ids, _, _) in enumerate(self.tokens)
                       for piece in detect_pieces(d, len(ids), self.width, self.step,
                                                  max_tokens)]
        self.groups = self._groups(max_tokens)
        self.feat_dim = self._out_dim()
        self.kept: list[list[tuple[int, int]]] = [[] for _ in texts]
        self.kept_vecs: list[list[np.ndarray]] = [[] for _ in texts]
        self.frontier = [0] * len(texts)  # end of the spans earlier pieces of a doc kept

    def _groups(self, max_tokens: int) -> list[list[int]]:
        """Consecutive pieces in groups of about ``max_tokens`` tokens."""
        groups, group, size = [], [], 0
        for q, (_, first, end, _, _) in enumerate(self.pieces):
            if group and size + end - first > max_tokens:
                groups.append(group)
                group, size = [], 0
            group.append(q)
            size += end - first
        if group:
            groups.append(group)
        return groups

    def _out_dim(self) -> int:
        """Width of what ``decide`` gets per token, also for a document without tokens."""
        feat_dim = sum(self.enc._dims(self.feats))
        if self.token_head is None:
            return feat_dim
        enc = self.enc
        dtype = next(enc.model.parameters()).dtype
        probe = torch.zeros((1, 1, feat_dim), dtype=dtype, device=enc.device)
        return self.token_head(probe, torch.ones(1, dtype=torch.long, device=enc.device)
                               ).shape[-1]

    def run(self) -> tuple[list[list[tuple[int, int]]], list[np.ndarray] | None]:
        for group in self.groups:
            self._group(group)
        if not self.vectors:
            return self.kept, None
        dim = self.enc.dim
        return self.kept, [np.concatenate(v) if v else np.zeros((0, dim), np.float32)
                           for v in self.kept_vecs]

    def _group(self, group: list[int]) -> None:
        """Run a group's windows, let ``decide`` pick spans, keep them and their vectors."""
        windows = []  # (piece, window start, ids); windows are those of the whole document
        for q in group:
            d, first, end = self.pieces[q][:3]
            for w in range(first // self.step, window_count(end, self.width, self.step)):
                ids = self.tokens[d][0][w * self.step: min(w * self.step + self.width, end)]
                windows.append((q, w * self.step, ids))
        windows.sort(key=lambda x: len(x[2]))
        feat_rows: dict[int, np.ndarray | None] = {q: None for q in group}
        best = {q: np.full(self.pieces[q][2] - self.pieces[q][1], -1, np.int64) for q in group}
        states: dict[tuple[int, int], Any] = {}  # arrays, or tensors to resume from
        for b in range(0, len(windows), self.batch_size):
            self._batch(windows[b: b + self.batch_size], feat_rows, best, states)
        doc_feats = [feat_rows[q] if feat_rows[q] is not None
                     else np.zeros((0, self.feat_dim), np.float32) for q in group]
        offsets = []
        for q in group:
            d, first, end = self.pieces[q][:3]
            _, starts, ends = self.tokens[d]
            offsets.append(list(zip(starts[first:end].tolist(), ends[first:end].tolist())))
        spans = self.decide([self.pieces[q][0] for q in group], doc_feats, offsets)
        wanted: dict[tuple[int, int], list[tuple[np.ndarray, int, int]]] = {}
        for q, sp in zip(group, spans):
            self._keep(q, sp, states, wanted)
        if wanted:
            resume(self.enc, self.resume, states, wanted, self.batch_size)

    def _batch(self, chunk: list, feat_rows: dict, best: dict, states: dict) -> None:
        """One batch of windows: each token's features from the window where it has the most
        context on both sides, and each window's vectors (or states to resume from)."""
        enc, p = self.enc, self.p
        # the states to resume from stay on the model's device (a GPU would otherwise copy
        # every token's state out and back), and so do the features a token head reads
        tensors = enc._capture([enc._prefix + c[2].tolist() + enc._suffix for c in chunk],
                               self.targets,
                               on_device=self.resume is not None or self.token_head is not None)
        counts = [len(c[2]) for c in chunk]
        x = torch.cat(tensors[: len(self.feats)], dim=-1)[:, p: p + max(counts)]
        if self.token_head is not None:
            x = self.token_head(x, torch.tensor(counts, device=x.device))
        feat = x.float().cpu().numpy()
        # the encoder's vectors, one copy per batch (resuming keeps states where they are)
        vecs = (torch.cat([tensors[i][:, p:] for i in self.slots], dim=-1).float().cpu().numpy()
                if self.vectors and self.resume is None else None)
        for row, (q, start, chunk_ids) in enumerate(chunk):
            d, first, end = self.pieces[q][:3]
            n_tok = len(chunk_ids)
            if feat_rows[q] is None:
                feat_rows[q] = np.zeros((end - first, feat.shape[-1]), np.float32)
            local = np.arange(n_tok)
            # context a token keeps on each side
            left = local if start > 0 else np.full(n_tok, _UNBOUNDED)
            right = n_tok - 1 - local if start + n_tok < len(self.tokens[d][0]) \
                else np.full(n_tok, _UNBOUNDED)
            context = np.minimum(left, right)
            glob = start - first + local
            take = context > best[q][glob]
            best[q][glob[take]] = context[take]
            feat_rows[q][glob[take]] = feat[row, local[take]]
            if self.vectors:  # the encoder's vectors, or the states to resume from
                states[(q, start)] = (vecs[row, :n_tok] if vecs is not None
                                      else tensors[self.slots[0]][row, : p + n_tok])

    def _keep(self, q: int, sp: Sequence[tuple[int, int]], states: dict, wanted: dict) -> None:
        """Keep the spans of piece ``q`` whose last token it owns, with their vectors (read
        now, or wanted from a resumed pass)."""
        d, _, _, own_from, own_to = self.pieces[q]
        sp = [(int(s), int(e)) for s, e in sp]
        _, starts, ends = self.tokens[d]
        last = (last_tokens(starts, ends, np.array([e for _, e in sp], np.int64))
                if sp and len(starts) else np.zeros(len(sp), np.int64))
        # pieces agree on what they share; should a span still overlap one that an
        # earlier piece kept, the earlier one wins
        mine = [(span, int(tok)) for span, tok in zip(sp, last.tolist())
                if own_from <= tok < own_to and span[0] >= self.frontier[d]]
        self.frontier[d] = max([self.frontier[d]] + [e for (_, e), _ in mine])
        self.kept[d].extend(span for span, _ in mine)
        if not self.vectors:
            return
        out = np.zeros((len(mine), self.enc.dim), np.float32)
        for k, (_, tok) in enumerate(mine):
            if len(starts):
                start = first_window(tok, self.width, self.step) * self.step
                if self.resume is None:
                    out[k] = states[(q, start)][tok - start]
                else:
                    wanted.setdefault((q, start), []).append((out, k, tok - start))
        self.kept_vecs[d].append(out)
