"""The query pass: a type description is embedded like a mention spanning it inside the query
template, but faster than the document pass can do it.

* The template's leading tokens (BOS, "mentions of") are the same for every query: a causal
  model's keys and values there are computed once, and each query runs only its own tokens
  (exact: the states do not depend on what follows, checked by the encoder's causality probe).
* On CPUs where it measures faster (``quantize.faster``, probed on first use), those tokens
  go through a copy of the linear layers with fp16 weights (``precision``: auto / fp32 /
  fp16 / int8; ``models.quantize``).

Anything this pass cannot do exactly (a bidirectional model, a query longer than a window, a
text whose tokens do not start with the cached ones) goes through the document pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from ner_retriever.errors import ConfigError
from ner_retriever.models.hooks import capturing, component_module, transformer_blocks
from ner_retriever.models.quantize import (check_precision, faster, quantized_available,
                                           quantized_copy)
from ner_retriever.models.windows import last_tokens, tokenize

# Two words that tell which template tokens do not depend on the query (see ``_stable``).
PROBE_WORDS = ("river", "politician")


class QueryPass:
    """Embeds queries for one :class:`~ner_retriever.models.encoder.TransformerEncoder`."""

    def __init__(self, enc: Any, precision: str = "fp32"):
        self.enc = enc
        self.requested = check_precision(precision)
        if precision in ("fp16", "int8") and not quantized_available(enc.device):
            raise ConfigError(f"{precision} queries need a CPU with the fbgemm / x86 "
                              f"quantized engine; this model runs on {enc.device}")
        self.precision: str | None = None  # decided on first use ("auto": by the probe)
        self.probe_ms: tuple[float, float] | None = None  # (fp32, fp16) query times (auto)
        self._model = enc.model
        template = enc.config.query_template
        self._slot = template.index("{}")
        self._stable = self._stable_prefix() if enc.causal else []
        self._past = self._prefix_states() if len(self._stable) > 1 else None

    # -- constants, computed once --------------------------------------------------------------
    def _ids(self, query: str) -> tuple[list[int], int] | None:
        """The tokens the vector needs (up to the query's last token) and that token's
        position; None when the document pass must run (see the module docstring)."""
        enc = self.enc
        text = enc.config.query_template.replace("{}", query, 1)
        ids, starts, ends = tokenize(enc.tokenizer, text)
        end = self._slot + len(query)
        pos = int(last_tokens(starts, ends, np.array([end], np.int64))[0])
        if not enc.causal or pos >= enc.window:
            return None
        return list(enc._prefix) + ids[:pos + 1].tolist(), len(enc._prefix) + pos

    def _stable_prefix(self) -> list[int]:
        """Leading tokens shared by the template filled with two different words: a BPE
        merge across the slot can change the last template token, never the earlier ones."""
        a, b = (self._ids(w) for w in PROBE_WORDS)
        if a is None or b is None:
            return []
        n = next((i for i, (x, y) in enumerate(zip(a[0], b[0])) if x != y), 0)
        return a[0][:n]

    def _prefix_states(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of the stable prefix in blocks up to the deepest one a vector
        reads (fp32 model)."""
        enc, cache = self.enc, DynamicCache()
        ids = torch.tensor([self._stable], device=enc.device)
        with capturing(enc._blocks, [(enc.config.deepest, "hidden")]), torch.inference_mode():
            enc.model(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache,
                      use_cache=True)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _choose(self) -> None:
        """Settle the precision: fp16 / int8 when asked, fp16 on "auto" when the probe
        measures it faster on this machine; fp32 otherwise."""
        enc = self.enc
        self.precision = "fp32"
        if self.requested == "fp32" or self._past is None or not quantized_available(enc.device):
            return
        names = {id(m): name for name, m in enc.model.named_modules()}
        read = {names[id(component_module(enc._blocks[b], c)[0])] for b, c in enc.config.targets}
        wanted = "fp16" if self.requested == "auto" else self.requested
        twin = quantized_copy(enc.model, enc._blocks, enc.config.deepest, wanted,
                              lambda name: name in read)  # what is read stays fp32
        if self.requested == "auto":
            probe = [self._ids(w) for w in PROBE_WORDS]
            win, t32, t16 = faster(lambda: self._run(enc.model, probe),
                                   lambda: self._run(twin, probe))
            self.probe_ms = (1e3 * t32, 1e3 * t16)
            if not win:
                return
        self._model, self.precision = twin, wanted

    # -- the pass ------------------------------------------------------------------------------
    def encode(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """``(len(queries), dim)`` float32, as ``encode_spans`` of the templated text gives."""
        if self.precision is None:
            self._choose()
        todo = [self._ids(q) for q in queries]
        fast = [i for i, t in enumerate(todo) if t is not None and self._cached(t[0])]
        out = np.zeros((len(queries), self.enc.dim), np.float32)
        if self.precision == "int8":  # int8 activations are scaled per call: one at a time,
            batch_size = 1            # so a query's vector never depends on its neighbours
        for b in range(0, len(fast), batch_size):
            part = fast[b:b + batch_size]
            out[part] = self._run(self._model, [todo[i] for i in part])
        rest = [i for i in range(len(queries)) if i not in set(fast)]
        if rest:
            texts = [self.enc.config.query_template.replace("{}", queries[i], 1) for i in rest]
            spans = [[(self._slot, self._slot + len(queries[i]))] for i in rest]
            out[rest] = np.stack([v[0] for v in self.enc.encode_spans(texts, spans)])
        return out

    def encode_example(self, text: str, start: int, end: int) -> np.ndarray:
        """The vector of the mention ``text[start:end]`` in its text (query by example), as
        ``encode_spans`` gives it, through this pass's precision (fp16 / int8 where chosen)."""
        if self.precision is None:
            self._choose()
        enc = self.enc
        exact = lambda: enc.encode_spans([text], [[(start, end)]])[0][0]  # noqa: E731
        if self.precision == "fp32" or not enc.causal:
            return exact()
        ids, starts, ends = tokenize(enc.tokenizer, text)
        pos = int(last_tokens(starts, ends, np.array([end], np.int64))[0])
        if pos >= enc.window:
            return exact()
        todo = [(list(enc._prefix) + ids[:pos + 1].tolist(), len(enc._prefix) + pos)]
        return self._run(self._model, todo, cached=False)[0]

    def _cached(self, ids: list[int]) -> bool:
        n = len(self._stable)
        return self._past is not None and len(ids) > n and ids[:n] == self._stable

    def _run(self, model: torch.nn.Module, todo: list[tuple[list[int], int]],
             cached: bool = True) -> np.ndarray:
        """One batch after the cached prefix (``cached=False``: from the first token):
        right-padded rest tokens, the component read at each query's last token."""
        enc, n = self.enc, len(todo)
        p = len(self._stable) if cached else 0
        rest = [ids[p:] for ids, _ in todo]
        longest = max(len(r) for r in rest)
        input_ids = torch.full((n, longest), enc._pad_id, dtype=torch.long)
        mask = torch.zeros((n, p + longest), dtype=torch.long)
        mask[:, :p] = 1
        for i, r in enumerate(rest):
            input_ids[i, :len(r)] = torch.tensor(r)
            mask[i, p:p + len(r)] = 1
        cache = DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))
                                             for k, v in self._past]) if cached else DynamicCache()
        blocks = enc._blocks if model is enc.model else transformer_blocks(model)
        targets = enc.config.targets
        with capturing(blocks, targets) as captured, torch.inference_mode():
            model(input_ids=input_ids.to(enc.device), attention_mask=mask.to(enc.device),
                  cache=cache, use_cache=True)
        last = torch.tensor([pos - p for _, pos in todo])
        out = torch.cat([captured[i] for i in range(len(targets))], dim=-1)
        return out[torch.arange(n), last].float().cpu().numpy()


