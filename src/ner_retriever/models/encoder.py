"""Mention vectors: run a language model over each document and read one component of one block
at the last token of every span. Only the blocks up to the chosen one are computed.

Windows and tokenisation of long texts are in ``models.windows``; the pass that detects and
encodes at once (``TransformerEncoder.detect_encode``) is in ``models.joint``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from ner_retriever.choices import COMPONENTS
from ner_retriever.errors import ConfigError
from ner_retriever.models.hooks import capturing, transformer_blocks
from ner_retriever.models.joint import PROBE_TEXT, JointPass, resume_block
from ner_retriever.models.loading import load_model
from ner_retriever.models.quantize import check_precision
from ner_retriever.models.query import QueryPass
from ner_retriever.models.settings import (DEFAULT_BLOCKS, DEFAULT_EXTRA_BLOCKS,  # noqa: F401
                                           Component, EncoderConfig, resolved_config)
from ner_retriever.models.windows import detect_pieces, first_window, last_tokens, tokenize

class Encoder(Protocol):
    """Turns character spans into vectors; queries are embedded as one span."""

    config: EncoderConfig
    dim: int

    def encode_spans(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], batch_size: int = 16
    ) -> list[np.ndarray]: ...

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray: ...

    def encode_example(self, text: str, start: int, end: int) -> np.ndarray: ...



def join_targets(per_target: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-document vectors of several targets (``[target][doc] -> (n, d)``) side by side:
    ``[doc] -> (n, sum of d)``; one target is returned as it is."""
    if len(per_target) == 1:
        return list(per_target[0])
    return [np.concatenate(parts, axis=-1) for parts in zip(*per_target)]


class TransformerEncoder:
    """Encoder over any Hugging Face model (causal LM or bidirectional encoder)."""

    def __init__(self, config: EncoderConfig | None = None, model=None, tokenizer=None,
                 device: str | None = None, query_precision: str = "fp32"):
        """``query_precision``: how queries run (``models.query``): fp32, fp16, int8, or auto
        (fp16 weights where a probe on first use measures them faster); documents always run
        at ``precision``."""
        config = config or EncoderConfig()
        if model is None:
            model, tokenizer = load_model(config.model)
        self.model, self.tokenizer = model, tokenizer
        blocks = transformer_blocks(model)
        self.config = config = resolved_config(config, len(blocks))
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
        self._query_precision = check_precision(query_precision)
        self._query_pass: QueryPass | None = None

    @property
    def precision(self) -> str:
        """What document vectors are computed in: fp32 on a CPU, bf16 / fp16 on a GPU."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.").replace(
            "float32", "fp32").replace("bfloat16", "bf16").replace("float16", "fp16")

    @property
    def query_pass(self) -> QueryPass:
        """The query side (built on first use: the precision probe runs then)."""
        if self._query_pass is None:
            self._query_pass = QueryPass(self, self._query_precision)
        return self._query_pass

    @property
    def query_precision(self) -> str:
        """The precision asked for queries (``query_pass.precision``: what was chosen)."""
        return self._query_precision

    def set_query_precision(self, precision: str) -> None:
        """fp32 / fp16 / int8 / auto for the queries embedded from now on."""
        if check_precision(precision) != self._query_precision:
            self._query_precision, self._query_pass = precision, None

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
        """Token ids and character start/end offsets as compact arrays (``windows.tokenize``:
        long texts in pieces, 12 bytes a token)."""
        return tokenize(self.tokenizer, text)

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
        toks = last_tokens(starts, ends, np.array([e for _, e in spans], dtype=np.int64))
        targets: dict[int, list[tuple[int, int, int]]] = {}
        for span_idx, tok in enumerate(toks.tolist()):
            w = first_window(tok, width, step)
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
        keep = (lambda out: out.detach()) if on_device else \
            (lambda out: out.detach().float().cpu())
        with capturing(self._blocks, targets, keep) as captured, torch.inference_mode():
            self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        return [captured[i] for i in range(len(targets))]

    def _probe_dim(self) -> int:
        probe = self._capture([self._prefix + [self._pad_id] + self._suffix], self.config.targets)
        return sum(t.shape[-1] for t in probe)

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
                                   [(self.config.deepest, "hidden")])[0]
        except Exception:  # noqa: BLE001 - a model we cannot probe: whole windows, as before
            return False
        same = states[:, : len(self._prefix) + n]
        gap = torch.linalg.vector_norm(same[0] - same[1])
        return bool(gap <= 1e-5 * torch.linalg.vector_norm(same[0]))

    def encode_targets(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                       targets: Sequence[tuple[int, str]], batch_size: int = 16
                       ) -> list[list[np.ndarray]]:
        """Vectors for several (block, component) pairs in one pass: ``[target][doc] -> (n, d)``."""
        self._check_targets(targets)
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
            dims = self._dims(targets)
            out = [[np.zeros((len(sp), d), np.float32) for sp in spans] for d in dims]
        return out

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int = 16) -> list[np.ndarray]:
        """One ``(n_spans, dim)`` float32 array per document (not normalised)."""
        return join_targets(self.encode_targets(texts, spans, self.config.targets, batch_size))

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """A type description is embedded like a mention spanning the whole (templated) text."""
        stripped = [q.strip() for q in queries]
        if not all(stripped):
            raise ConfigError("query is empty")
        return self.query_pass.encode(stripped, batch_size)

    def encode_example(self, text: str, start: int, end: int) -> np.ndarray:
        """One mention in its text as a query (query by example): ``encode_spans``' vector,
        through the query pass's precision."""
        return self.query_pass.encode_example(text, start, end)

    def _check_targets(self, targets: Sequence[tuple[int, str]]) -> None:
        """Refuse a (block, component) pair this model does not have."""
        for block, component in targets:
            if not 0 <= block < len(self._blocks):
                raise ConfigError(f"block {block} is out of range (0..{len(self._blocks) - 1})")
            if component not in COMPONENTS:
                raise ConfigError(f"unknown component {component!r}; choose from {COMPONENTS}")

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
        consecutive windows (``windows.detect_pieces``). ``decide`` then sees one piece at a time: a
        document index may repeat, offsets are always into the whole text, and only the spans
        whose last token lies in the piece's own part are kept, so that every kept span has the
        states and the vector a pass over the whole document gives it."""
        self._check_targets(list(dict.fromkeys(features)))
        return JointPass(self, texts, features, decide, vectors, batch_size, max_tokens,
                         token_head).run()

    def _resume_block(self, features: Sequence[tuple[int, str]]) -> int | None:
        """The block the joint pass resumes from, or None (``joint.resume_block``)."""
        return resume_block(self, features)

    def _detect_pieces(self, doc: int, n_tokens: int, max_tokens: int
                       ) -> list[tuple[int, int, int, int, int]]:
        """The joint pass's pieces of one document (``windows.detect_pieces``)."""
        return detect_pieces(doc, n_tokens, self.window, self._step, max_tokens)

    def _dims(self, targets: Sequence[tuple[int, str]]) -> list[int]:
        """Width of each (block, component) activation (probed once, then remembered)."""
        cache = self.__dict__.setdefault("_dim_cache", {})
        missing = [t for t in targets if t not in cache]
        if missing:
            probe = self._capture([self._prefix + [self._pad_id] + self._suffix], missing)
            cache.update({t: x.shape[-1] for t, x in zip(missing, probe)})
        return [cache[t] for t in targets]
