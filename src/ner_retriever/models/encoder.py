"""Mention vectors: run a language model over each document and read one component of one block
at the last token of every span. Only the blocks up to the chosen one are computed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ner_retriever.errors import ConfigError
from ner_retriever.models.loading import DEFAULT_MODEL, load_model

Component = Literal["query", "key", "value", "hidden"]
COMPONENTS: tuple[str, ...] = ("query", "key", "value", "hidden")

# Block chosen for the packaged models (see docs/PROBE.md); other models default to the middle.
DEFAULT_BLOCKS = {"smollm2-135m": 22, "minilm-l6": 5}


class EncoderConfig(BaseModel):
    """Everything that decides what a vector means; recorded in the index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    block: int | None = Field(default=None, description="0-based block; None = model default")
    component: Component = "value"
    max_length: int = Field(default=512, ge=16, description="tokens per window")
    overlap: int = Field(default=128, ge=0, description="left context shared by windows")
    prepend_bos: bool = True
    # A bare description sits right after BOS, far from any mention's context; a short left
    # context roughly doubles R-Precision (docs/RESULTS.md, chosen on training types).
    query_template: str = "mentions of {}"

    @field_validator("query_template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("query_template must contain exactly one '{}'")
        return value

    def identity(self) -> dict:
        """The fields that must match between an index and the encoder that queries it."""
        return self.model_dump(include={"model", "block", "component", "prepend_bos", "query_template"})


class Encoder(Protocol):
    """Turns character spans into vectors; queries are embedded as one span."""

    config: EncoderConfig
    dim: int

    def encode_spans(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], batch_size: int = 16
    ) -> list[np.ndarray]: ...

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray: ...


# What the one-off model probes (causality, resuming a pass) run on.
PROBE_TEXT = "Paris is a city in France"

# Longest piece of text given to the tokenizer at once (see TransformerEncoder._tokenize).
TOKENIZE_CHARS = 100_000


def _cut_point(text: str, pos: int, size: int) -> int:
    """End of the piece of ``text`` starting at ``pos``: at most ``size`` characters, cut just
    before a single space between two non-space characters in the second half of the piece,
    else before any whitespace there, else at ``size``."""
    end = pos + size
    if end >= len(text):
        return len(text)
    lo = pos + size // 2
    cut = end
    while cut > lo:
        cut = text.rfind(" ", lo, cut)
        if cut <= lo:
            break
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut
    for cut in range(end, lo, -1):
        if text[cut].isspace():
            return cut
    return end


def _last_tokens(starts: np.ndarray, ends: np.ndarray, span_ends: np.ndarray) -> np.ndarray:
    """Per span end: the last real token (one that covers characters) starting before it, 0 if
    none. This is the token whose state is a span's vector, in encoding and in the joint pass."""
    real = ends > starts
    last_real = np.maximum.accumulate(np.where(real, np.arange(len(starts)), -1))
    if np.all(starts[1:] >= starts[:-1]):  # offsets in text order: binary search
        before = np.searchsorted(starts, span_ends, side="left") - 1
        toks = np.where(before >= 0, last_real[np.maximum(before, 0)], -1)
    else:  # pragma: no cover - no tokenizer we know reorders offsets; scan to be safe
        toks = np.array([(lambda c: c[-1] if len(c) else -1)(
            np.nonzero((starts < e) & real)[0]) for e in span_ends], dtype=np.int64)
    return np.maximum(toks, 0)


def _window_count(n_tokens: int, width: int, step: int) -> int:
    return 0 if n_tokens == 0 else (1 if n_tokens <= width else (n_tokens - 1 - width) // step + 2)


def _first_window(token: int, width: int, step: int) -> int:
    """The first window holding ``token``: the one that gives it the most left context."""
    return 0 if token < width else (token - width) // step + 1


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


class _Stop(Exception):
    """Raised from a hook once every requested activation is captured: skips the rest."""


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks, for the architecture families we know."""
    for path in ("layers", "h", "encoder.layer", "model.layers", "language_model.layers",
                 "transformer.h", "decoder.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ConfigError(f"model type {type(model).__name__!r}: cannot find its transformer blocks")


def _component_module(block: torch.nn.Module, component: str) -> tuple[torch.nn.Module, int | None]:
    """Return the module whose output is the component, and the slot if it packs q/k/v (GPT-2)."""
    if component == "hidden":
        return block, None
    names = {"query": ("q_proj", "query"), "key": ("k_proj", "key"), "value": ("v_proj", "value")}
    for attn_name in ("self_attn", "attention.self", "attn", "self_attention"):
        attn = block
        for part in attn_name.split("."):
            attn = getattr(attn, part, None)
            if attn is None:
                break
        if attn is None:
            continue
        for name in names[component]:
            module = getattr(attn, name, None)
            if isinstance(module, torch.nn.Module):
                return module, None
        packed = getattr(attn, "c_attn", None)
        if packed is not None:
            return packed, COMPONENTS.index(component)
    raise ConfigError(f"block type {type(block).__name__!r} has no {component!r} projection")


class TransformerEncoder:
    """Encoder over any Hugging Face model (causal LM or bidirectional encoder)."""

    def __init__(self, config: EncoderConfig | None = None, model=None, tokenizer=None,
                 device: str | None = None):
        config = config or EncoderConfig()
        if model is None:
            model, tokenizer = load_model(config.model)
        self.model, self.tokenizer = model, tokenizer
        blocks = transformer_blocks(model)
        block = config.block
        if block is None:
            block = DEFAULT_BLOCKS.get(config.model, len(blocks) // 2)
            config = config.model_copy(update={"block": block})
        if not 0 <= block < len(blocks):
            raise ConfigError(
                f"block {block} is out of range: model {config.model!r} has {len(blocks)} blocks "
                f"(0..{len(blocks) - 1})"
            )
        self.config = config
        self._blocks = blocks
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.model.to(self.device, dtype=dtype)
        else:
            self.model.to(self.device, dtype=torch.float32)
        self._prefix, self._suffix = self._special_tokens(config.prepend_bos)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.dim = int(self._probe_dim())
        self.causal = self._probe_causal()

    # -- tokenisation --------------------------------------------------------------------------
    def _special_tokens(self, prepend_bos: bool) -> tuple[list[int], list[int]]:
        """Learn which special tokens the tokenizer wraps around text (BOS, CLS/SEP)."""
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        start = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        prefix, suffix = list(full[:start]), list(full[start + len(plain):])
        bos = self.tokenizer.bos_token_id
        if not prefix and prepend_bos and bos is not None:
            prefix = [bos]
        return prefix, suffix

    @property
    def window(self) -> int:
        return self.config.max_length - len(self._prefix) - len(self._suffix)

    @property
    def _step(self) -> int:
        """Tokens between the starts of consecutive windows."""
        return max(1, self.window - min(self.config.overlap, self.window - 1))

    def _tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids and character start/end offsets as compact arrays.

        A text longer than ``TOKENIZE_CHARS`` is tokenized in pieces, each cut just before a
        single space between two words (a boundary that whitespace, BPE and SentencePiece
        pre-tokenizers all keep), so the tokenizer's per-token Python objects (~600 bytes a
        token) never exist for a whole long document at once: 12 bytes a token here (a 10 MB
        text: 2.5M tokens, 30 MB) instead of ~1.5 GB."""
        ids, starts, ends = [], [], []
        pos = 0
        while pos < len(text):
            cut = _cut_point(text, pos, TOKENIZE_CHARS)
            enc = self.tokenizer(text[pos:cut], add_special_tokens=False,
                                 return_offsets_mapping=True, return_attention_mask=False,
                                 return_token_type_ids=False, verbose=False)
            if enc["input_ids"]:
                ids.append(np.asarray(enc["input_ids"], dtype=np.int32))
                offsets = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2) + pos
                starts.append(offsets[:, 0])
                ends.append(offsets[:, 1])
            pos = cut
        if not ids:
            empty = np.zeros(0, np.int32)
            return empty, empty, empty
        return np.concatenate(ids), np.concatenate(starts), np.concatenate(ends)

    def _pieces(self, doc_idx: int, text: str, spans: Sequence[tuple[int, int]]):
        """Split one document into windows; yield (input_ids, [(doc, span, position)]).

        Only windows that hold a span's last token are yielded, and memory stays linear in
        the number of tokens with a small constant (numpy arrays, see ``_tokenize``)."""
        for s, e in spans:
            if not 0 <= s < e <= len(text):
                raise ConfigError(f"document {doc_idx}: span ({s}, {e}) is empty or outside the "
                                  f"text ({len(text)} characters)")
        if not spans:
            return
        ids, starts, ends = self._tokenize(text)
        if not len(ids):
            raise ConfigError(f"document {doc_idx}: text produced no tokens")
        width, step = self.window, self._step
        toks = _last_tokens(starts, ends, np.array([e for _, e in spans], dtype=np.int64))
        targets: dict[int, list[tuple[int, int, int]]] = {}
        for span_idx, tok in enumerate(toks.tolist()):
            w = _first_window(tok, width, step)
            targets.setdefault(w, []).append((doc_idx, span_idx, tok - w * step))
        prefix = np.asarray(self._prefix, dtype=np.int64)
        suffix = np.asarray(self._suffix, dtype=np.int64)
        p = len(self._prefix)
        for w, items in targets.items():
            if self.causal:  # nothing after the window's last span token changes its vectors
                chunk = ids[w * step: w * step + max(pos for _, _, pos in items) + 1]
                yield (np.concatenate((prefix, chunk)), [(d, s, pos + p) for d, s, pos in items])
                continue
            chunk = ids[w * step: w * step + width]
            yield (np.concatenate((prefix, chunk, suffix)),
                   [(d, s, pos + p) for d, s, pos in items])

    @property
    def n_blocks(self) -> int:
        return len(self._blocks)

    # -- forward -------------------------------------------------------------------------------
    def _capture(self, batch_ids: list[list[int]], targets: Sequence[tuple[int, str]],
                 on_device: bool = False):
        """Run the model on a right-padded batch and return one tensor per target: float32 on
        the CPU, or with ``on_device`` as the model made it (its device and dtype), for states
        that go back into the model."""
        longest = max(len(x) for x in batch_ids)
        input_ids = torch.full((len(batch_ids), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), longest), dtype=torch.long)
        for i, row in enumerate(batch_ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        captured: dict[tuple[int, str], torch.Tensor] = {}
        handles = []

        def make_hook(key, slot):
            def hook(_module, _inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                if slot is not None:
                    out = out.chunk(3, dim=-1)[slot]
                captured[key] = out.detach() if on_device else out.detach().float().cpu()
                if len(captured) == len(targets):
                    raise _Stop
            return hook

        for key in targets:
            module, slot = _component_module(self._blocks[key[0]], key[1])
            handles.append(module.register_forward_hook(make_hook(key, slot)))
        try:
            with torch.inference_mode():
                self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return [captured[key] for key in targets]

    def _probe_dim(self) -> int:
        return self._capture([self._prefix + [self._pad_id] + self._suffix],
                             [(self.config.block, self.config.component)])[0].shape[-1]

    def _probe_causal(self) -> bool:
        """Whether a token's state ignores the tokens after it (decoder LMs, not BERT).

        Then a window is cut after its last span token: on sentence corpora that skips a quarter
        to half of the tokens (docs/PERFORMANCE.md). Probed, not looked up by architecture name,
        so any model works: two texts that differ in their last word only, in one batch, must
        give the same states before it. Strict, so that a doubt means no cutting (slower, never
        wrong)."""
        a = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        b = self.tokenizer(PROBE_TEXT.replace("France", "Spain"),
                           add_special_tokens=False)["input_ids"]
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if n == 0 or len(a) != len(b):  # pragma: no cover - a tokenizer without such words
            return False
        try:  # the block's output: it has seen every earlier block's attention
            states = self._capture([self._prefix + a + self._suffix,
                                    self._prefix + b + self._suffix],
                                   [(self.config.block, "hidden")])[0]
        except Exception:  # noqa: BLE001 - a model we cannot probe: whole windows, as before
            return False
        same = states[:, : len(self._prefix) + n]
        gap = torch.linalg.vector_norm(same[0] - same[1])
        return bool(gap <= 1e-5 * torch.linalg.vector_norm(same[0]))

    def encode_targets(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                       targets: Sequence[tuple[int, str]], batch_size: int = 16
                       ) -> list[list[np.ndarray]]:
        """Vectors for several (block, component) pairs in one pass: ``[target][doc] -> (n, d)``."""
        for block, component in targets:
            if not 0 <= block < len(self._blocks):
                raise ConfigError(f"block {block} is out of range (0..{len(self._blocks) - 1})")
            if component not in COMPONENTS:
                raise ConfigError(f"unknown component {component!r}; choose from {COMPONENTS}")
        pieces = [p for i, (t, sp) in enumerate(zip(texts, spans)) for p in self._pieces(i, t, sp)]
        pieces.sort(key=lambda p: len(p[0]))
        out: list[list[np.ndarray]] = []
        dims = None
        for b in range(0, len(pieces), batch_size):
            chunk = pieces[b: b + batch_size]
            tensors = self._capture([p[0] for p in chunk], targets)
            if dims is None:
                dims = [t.shape[-1] for t in tensors]
                out = [[np.zeros((len(sp), d), np.float32) for sp in spans] for d in dims]
            for row, (_, items) in enumerate(chunk):
                for doc, span, pos in items:
                    for t_idx, tensor in enumerate(tensors):
                        out[t_idx][doc][span] = tensor[row, pos].numpy()
        if dims is None:  # no spans at all
            dims = [self.dim] * len(targets)
            out = [[np.zeros((len(sp), d), np.float32) for sp in spans] for d in dims]
        return out

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int = 16) -> list[np.ndarray]:
        """One ``(n_spans, dim)`` float32 array per document (not normalised)."""
        target = (self.config.block, self.config.component)
        return self.encode_targets(texts, spans, [target], batch_size)[0]

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """A type description is embedded like a mention spanning the whole (templated) text."""
        texts, spans = [], []
        for q in queries:
            q = q.strip()
            if not q:
                raise ConfigError("query is empty")
            template = self.config.query_template
            start = template.index("{}")  # not text.index(q): "men" is inside "mentions"
            text = template.replace("{}", q, 1)
            texts.append(text)
            spans.append([(start, start + len(q))])
        return np.stack([v[0] for v in self.encode_spans(texts, spans, batch_size)])

    # -- one pass for detection and encoding ---------------------------------------------------
    def detect_encode(self, texts: Sequence[str], features: Sequence[tuple[int, str]],
                      decide: Callable[[list[int], list[np.ndarray], list[list[tuple[int, int]]]],
                                       list[list[tuple[int, int]]]],
                      vectors: bool = True, batch_size: int = 16, max_tokens: int = 32768,
                      token_head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[list[list[tuple[int, int]]], list[np.ndarray] | None]:
        """Detect spans from early-block states and encode them, in ONE forward pass per window.

        Every window of every document is run once, capturing the ``features`` (block,
        component) pairs at every token and, with ``vectors=True``, the encoder's own (block,
        component). ``decide(doc_indices, per_doc_features, per_doc_offsets)`` then gets one
        float32 ``(n_tokens, sum of feature dims)`` array per document (each token taken from the
        window where it has the most context on both sides) and the tokens' character offsets, and
        returns character spans per document. With ``token_head``, a function of a batch of
        windows' features ``(windows, tokens, dims)`` and their token counts, run where the model
        runs, ``decide`` gets its per-token outputs instead: a detector head's per-token part
        run per window on a GPU sends fewer numbers per token to the CPU than the states.
        The spans' vectors are read from the captured activations exactly as ``encode_spans``
        reads them (last token of the span, in the first window that contains it). Returns
        ``(spans, vectors or None)``.

        Memory stays bounded whatever the length: documents are processed in groups of about
        ``max_tokens`` tokens (the states a group resumes from stay on the model's device: about
        ``max_tokens`` x hidden size x 2 bytes in bf16), and a longer document in pieces of
        consecutive windows (:meth:`_detect_pieces`). ``decide`` then sees one piece at a time: a
        document index may repeat, offsets are always into the whole text, and only the spans
        whose last token lies in the piece's own part are kept, so that every kept span has the
        states and the vector a pass over the whole document gives it."""
        target = (self.config.block, self.config.component)
        feats = list(dict.fromkeys(features))
        for block, component in feats:
            if not 0 <= block < len(self._blocks):
                raise ConfigError(f"block {block} is out of range (0..{len(self._blocks) - 1})")
            if component not in COMPONENTS:
                raise ConfigError(f"unknown component {component!r}; choose from {COMPONENTS}")
        resume = self._resume_block(feats) if vectors else None
        keep = target if resume is None else (resume, "hidden")  # what each window keeps
        targets = feats + ([keep] if vectors and keep not in feats else [])
        slot = targets.index(keep) if vectors else -1
        width, step, p = self.window, self._step, len(self._prefix)
        tokens = [self._tokenize(text) for text in texts]  # compact arrays, 12 bytes a token
        pieces = [piece for d, (ids, _, _) in enumerate(tokens)
                  for piece in self._detect_pieces(d, len(ids), max_tokens)]
        groups, group, size = [], [], 0
        for q, (_, first, end, _, _) in enumerate(pieces):
            if group and size + end - first > max_tokens:
                groups.append(group)
                group, size = [], 0
            group.append(q)
            size += end - first
        if group:
            groups.append(group)

        # width of what decide gets per token, also for a document without tokens
        feat_dim = sum(self._dims(feats))
        if token_head is not None:
            dtype = next(self.model.parameters()).dtype
            probe = torch.zeros((1, 1, feat_dim), dtype=dtype, device=self.device)
            feat_dim = token_head(probe, torch.ones(1, dtype=torch.long, device=self.device)
                                  ).shape[-1]
        kept: list[list[tuple[int, int]]] = [[] for _ in texts]
        kept_vecs: list[list[np.ndarray]] = [[] for _ in texts]
        frontier = [0] * len(texts)  # end of the spans that earlier pieces of a document kept
        for group in groups:
            wanted: dict[tuple[int, int], list[tuple[np.ndarray, int, int]]] = {}
            windows = []  # (piece, window start, ids); windows are those of the whole document
            for q in group:
                d, first, end = pieces[q][:3]
                for w in range(first // step, _window_count(end, width, step)):
                    ids = tokens[d][0][w * step: min(w * step + width, end)]
                    windows.append((q, w * step, ids))
            windows.sort(key=lambda x: len(x[2]))
            feat_rows: dict[int, np.ndarray | None] = {q: None for q in group}
            best = {q: np.full(pieces[q][2] - pieces[q][1], -1, np.int64) for q in group}
            states: dict[tuple[int, int], Any] = {}  # arrays, or tensors to resume from
            for b in range(0, len(windows), batch_size):
                chunk = windows[b: b + batch_size]
                # the states to resume from stay on the model's device (a GPU would otherwise
                # copy every token's state out and back), and so do the features a token head
                # reads
                tensors = self._capture([self._prefix + c[2].tolist() + self._suffix
                                         for c in chunk], targets,
                                        on_device=resume is not None or token_head is not None)
                counts = [len(c[2]) for c in chunk]
                x = torch.cat(tensors[: len(feats)], dim=-1)[:, p: p + max(counts)]
                if token_head is not None:
                    x = token_head(x, torch.tensor(counts, device=x.device))
                feat = x.float().cpu().numpy()
                # the encoder's vectors, one copy per batch (resuming keeps states where they are)
                vecs = (tensors[slot][:, p:].float().cpu().numpy()
                        if vectors and resume is None else None)
                for row, (q, start, chunk_ids) in enumerate(chunk):
                    d, first, end = pieces[q][:3]
                    n_tok = len(chunk_ids)
                    if feat_rows[q] is None:
                        feat_rows[q] = np.zeros((end - first, feat.shape[-1]), np.float32)
                    local = np.arange(n_tok)
                    # context a token keeps on each side; a window edge at a document edge
                    # cuts nothing off
                    big = 1 << 30
                    left = local if start > 0 else np.full(n_tok, big)
                    right = n_tok - 1 - local if start + n_tok < len(tokens[d][0]) \
                        else np.full(n_tok, big)
                    context = np.minimum(left, right)
                    glob = start - first + local
                    take = context > best[q][glob]
                    best[q][glob[take]] = context[take]
                    feat_rows[q][glob[take]] = feat[row, local[take]]
                    if vectors:  # the encoder's vectors, or the states to resume from
                        states[(q, start)] = (vecs[row, :n_tok] if vecs is not None
                                              else tensors[slot][row, : p + n_tok])
            doc_feats = [feat_rows[q] if feat_rows[q] is not None
                         else np.zeros((0, feat_dim), np.float32) for q in group]
            offsets = []
            for q in group:
                d, first, end = pieces[q][:3]
                _, starts, ends = tokens[d]
                offsets.append(list(zip(starts[first:end].tolist(), ends[first:end].tolist())))
            spans = decide([pieces[q][0] for q in group], doc_feats, offsets)
            for q, sp in zip(group, spans):
                d, _, _, own_from, own_to = pieces[q]
                sp = [(int(s), int(e)) for s, e in sp]
                _, starts, ends = tokens[d]
                last = (_last_tokens(starts, ends, np.array([e for _, e in sp], np.int64))
                        if sp and len(starts) else np.zeros(len(sp), np.int64))
                # pieces agree on what they share; should a span still overlap one that an
                # earlier piece kept, the earlier one wins
                mine = [(span, int(tok)) for span, tok in zip(sp, last.tolist())
                        if own_from <= tok < own_to and span[0] >= frontier[d]]
                frontier[d] = max([frontier[d]] + [e for (_, e), _ in mine])
                kept[d].extend(span for span, _ in mine)
                if vectors:
                    out = np.zeros((len(mine), self.dim), np.float32)
                    for k, (_, tok) in enumerate(mine):
                        if len(starts):
                            start = _first_window(tok, width, step) * step
                            if resume is None:
                                out[k] = states[(q, start)][tok - start]
                            else:
                                wanted.setdefault((q, start), []).append((out, k, tok - start))
                    kept_vecs[d].append(out)
            if wanted:
                self._resume(resume, states, wanted, batch_size)
        if not vectors:
            return kept, None
        return kept, [np.concatenate(v) if v else np.zeros((0, self.dim), np.float32)
                      for v in kept_vecs]

    def _resume_block(self, features: Sequence[tuple[int, str]]) -> int | None:
        """The block whose output the joint pass resumes from, or None for one pass.

        For a causal model the pass can stop after the detector's last feature block, keep that
        block's output, and run the later blocks only on windows that hold a detected span, cut
        after its last token (``_resume``). Documents where nothing is detected then cost the
        early blocks only. Checked once on a probe text against a plain pass; a model the
        trick does not reproduce exactly keeps the single pass."""
        last = max(block for block, _ in features)
        if not self.causal or last >= self.config.block:
            return None
        cache = self.__dict__.setdefault("_resume_ok", {})
        if last not in cache:
            ids = self._prefix + self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
            target = (self.config.block, self.config.component)
            plain, hidden = self._capture([ids], [target, (last, "hidden")])
            got: dict = {}
            try:
                self._resume(last, {(0, 0): hidden[0]},
                             {(0, 0): [(got, 0, len(ids) - 1 - len(self._prefix))]}, 1)
                cache[last] = bool(np.allclose(got[0], plain[0, -1].numpy(), rtol=1e-4,
                                               atol=1e-5 * float(plain.abs().max()) + 1e-7))
            except Exception:  # noqa: BLE001 - an architecture we cannot resume: one pass
                cache[last] = False
        return last if cache[last] else None

    def _resume(self, block: int, states: dict, wanted: dict, batch_size: int) -> None:
        """Run the blocks after ``block`` from stored outputs and fill in span vectors.

        ``states[key]``: ``block``'s output for one window (prefix included); ``wanted[key]``:
        ``(array, row, position)`` to receive the encoder's vector at that position of the
        window's text (after the prefix). Each window is cut after its last wanted position.
        The first blocks are swapped for stand-ins that hand back the stored output, so they
        cost nothing; the model's own code runs the rest."""
        shift = len(self._prefix)
        target = (self.config.block, self.config.component)
        keys = sorted(wanted, key=lambda k: max(pos for _, _, pos in wanted[k]))
        originals = [self._blocks[i] for i in range(block + 1)]
        try:
            for b in range(0, len(keys), batch_size):
                chunk = keys[b: b + batch_size]
                cut = [states[k][: shift + max(pos for _, _, pos in wanted[k]) + 1]
                       for k in chunk]
                longest = max(len(x) for x in cut)
                stored = cut[0].new_zeros((len(cut), longest, cut[0].shape[-1]))
                for row, x in enumerate(cut):
                    stored[row, : len(x)] = x
                for i, module in enumerate(originals):
                    self._blocks[i] = _Replay(module, stored if i == block else None)
                out = self._capture([[self._pad_id] * len(x) for x in cut], [target])[0]
                for row, k in enumerate(chunk):
                    for array, idx, pos in wanted[k]:
                        array[idx] = out[row, shift + pos].numpy()
        finally:
            for i, module in enumerate(originals):
                self._blocks[i] = module

    def _detect_pieces(self, doc: int, n_tokens: int, max_tokens: int
                       ) -> list[tuple[int, int, int, int, int]]:
        """``(doc, first token, end token, own from, own to)`` pieces of one document.

        A piece is a run of the document's own windows (at most ``max_tokens`` tokens); the
        next piece starts ``shared`` windows before this one ends, and each piece owns the
        tokens up to the middle of what it shares with the next. ``shared`` is chosen so that
        every window holding an owned token, or a token a few places away (the detector head
        looks 3 tokens each side), lies inside the piece: an owned token then gets exactly the
        states (and a span ending there exactly the vector) of a pass over the whole document.
        A document that fits is one piece, processed as before (one without tokens keeps the
        spans ``decide`` gives it, with zero vectors)."""
        width, step = self.window, self._step
        count = _window_count(n_tokens, width, step)
        shared = 2 + -(-width // step)
        per_piece = max(shared + 1, (max_tokens - width) // step + 1)
        if count <= per_piece:
            return [(doc, 0, n_tokens, 0, max(n_tokens, 1))]
        stride = per_piece - shared
        margin = ((shared - 1) * step + width) // 2  # middle of the tokens two pieces share
        out, w = [], 0
        while True:
            last = min(w + per_piece, count)
            own_from = 0 if w == 0 else w * step + margin
            own_to = n_tokens if last == count else (w + stride) * step + margin
            out.append((doc, w * step, min((last - 1) * step + width, n_tokens), own_from, own_to))
            if last == count:
                return out
            w += stride

    def _dims(self, targets: Sequence[tuple[int, str]]) -> list[int]:
        """Width of each (block, component) activation (probed once, then remembered)."""
        cache = self.__dict__.setdefault("_dim_cache", {})
        missing = [t for t in targets if t not in cache]
        if missing:
            probe = self._capture([self._prefix + [self._pad_id] + self._suffix], missing)
            cache.update({t: x.shape[-1] for t, x in zip(missing, probe)})
        return [cache[t] for t in targets]
