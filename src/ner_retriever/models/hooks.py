"""Where a vector is read inside a Hugging Face model: its list of transformer blocks, the module
whose output is a block's query / key / value (or the block itself, for its hidden state), and
the hooks that read them and stop a forward pass once what was asked for is captured
(``capturing``). Shared by the document pass (``encoder``) and the query pass (``query``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from ner_retriever.choices import COMPONENTS
from ner_retriever.errors import ConfigError


class Stop(Exception):
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


def component_module(block: torch.nn.Module, component: str) -> tuple[torch.nn.Module, int | None]:
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


@contextmanager
def capturing(blocks: torch.nn.ModuleList, targets: Sequence[tuple[int, str]],
              keep: Callable[[torch.Tensor], torch.Tensor] = lambda out: out
              ) -> Iterator[dict[int, torch.Tensor]]:
    """Run a forward pass inside this block to read the (block, component) ``targets``: the
    yielded dict gets ``keep(activation)`` of target ``i`` at key ``i``, the pass stops once
    every target is read (:class:`Stop`, swallowed here), and the hooks are removed after."""
    captured: dict[int, torch.Tensor] = {}

    def make_hook(i: int, slot: int | None):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[i] = keep(out if slot is None else out.chunk(3, dim=-1)[slot])
            if len(captured) == len(targets):
                raise Stop
        return hook

    handles = [module.register_forward_hook(make_hook(i, slot))
               for i, (module, slot) in enumerate(component_module(blocks[b], c)
                                                  for b, c in targets)]
    try:
        yield captured
    except Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
