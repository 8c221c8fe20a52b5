"""Mention vectors: run a language model over each document and read one component of one block
at the last token of every span. Only the blocks up to the chosen one are computed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ner_retriever.errors import ConfigError
from ner_retriever.models import DEFAULT_MODEL, load_model

Component = Literal["query", "key", "value", "hidden"]
COMPONENTS: tuple[str, ...] = ("query", "key", "value", "hidden")

# Block chosen for the packaged models (see docs/PROBE.md); other models default to the middle.
DEFAULT_BLOCKS = {"smollm2-135m": 10, "minilm-l6": 5}


class EncoderConfig(BaseModel):
    """Everything that decides what a vector means; recorded in the index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    block: int | None = Field(default=None, description="0-based block; None = model default")
    component: Component = "value"
    max_length: int = Field(default=512, ge=16, description="tokens per window")
    overlap: int = Field(default=128, ge=0, description="left context shared by windows")
    prepend_bos: bool = True
    query_template: str = "{}"

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

    def _pieces(self, doc_idx: int, text: str, spans: Sequence[tuple[int, int]]):
        """Split one document into windows; yield (input_ids, [(doc, span, position)])."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if not spans:
            return
        if not ids:
            raise ConfigError(f"document {doc_idx}: text produced no tokens")
        ends = np.array([e if e > s else -1 for s, e in offsets])
        starts = np.array([s for s, _ in offsets])
        width = self.window
        step = max(1, width - min(self.config.overlap, width - 1))
        targets: dict[int, list[tuple[int, int, int]]] = {}
        for span_idx, (s, e) in enumerate(spans):
            # last real token that starts before the span ends
            cand = np.nonzero((starts < e) & (ends > 0))[0]
            tok = int(cand[-1]) if len(cand) else 0
            # first window containing the token = the one giving it the most left context
            w = 0 if tok < width else (tok - width) // step + 1
            targets.setdefault(w, []).append((doc_idx, span_idx, tok - w * step))
        for w, items in targets.items():
            chunk = ids[w * step: w * step + width]
            p = len(self._prefix)
            yield self._prefix + list(chunk) + self._suffix, [(d, s, pos + p) for d, s, pos in items]

    # -- forward -------------------------------------------------------------------------------
    def _capture(self, batch_ids: list[list[int]], targets: Sequence[tuple[int, str]]):
        """Run the model on a right-padded batch and return one tensor per target."""
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
                captured[key] = out.detach().float().cpu()
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
            text = self.config.query_template.format(q)
            start = text.index(q)
            texts.append(text)
            spans.append([(start, start + len(q))])
        return np.stack([v[0] for v in self.encode_spans(texts, spans, batch_size)])
