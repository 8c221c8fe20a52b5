"""Smaller weights for the query pass, chosen per machine by measuring them.

A query is a handful of tokens: its cost is reading the weights of every block up to the
chosen one, not arithmetic, so fewer bytes per weight make it several times faster where the
CPU has the kernels (fbgemm / x86 engines):

* **fp16**: weights stored in half precision, activations and accumulation in fp32. Within
  float tolerance of fp32 (relative error ~2e-4) and independent of the batch, so queries
  batch; on this project's AVX2 CPU a Gemma 3 270M query ran 19 ms against 70 ms in fp32.
* **int8**: per-channel int8 weights with int8 activations scaled per call (dynamic). A few
  ms faster than fp16 there but further from fp32 (cosine ~0.99), and a call's activation
  scale covers the whole batch, so each query runs alone.

Whether a copy is faster is probed at run time (:func:`faster`), never assumed: another CPU
may make fp32 as fast. Only the query side uses the copy; documents are always encoded at the
encoder's own precision.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable

import torch

from ner_retriever.errors import ConfigError

# "auto": fp16 where the start-up probe measures it faster, else fp32.
QUERY_PRECISIONS = ("auto", "fp32", "fp16", "int8")
# Linear layers the int8 copy keeps in fp16 instead: an MLP's output projection reads
# activations with a few huge channels, which per-tensor int8 activations cannot hold (SmolLM2
# queries: cosine to fp32 0.93 with it in int8, 0.98-0.99 without); names as Llama/Mistral/Qwen
# (down_proj), GPT-2 (mlp.c_proj), OPT/Phi (fc2) and BERT (an output dense) call them.
KEEP_FP16 = ("down_proj", "mlp.c_proj", "fc2", ".output.dense")
# The probe: best of PROBE_RUNS timed passes each; int8 must be PROBE_MARGIN times faster.
PROBE_RUNS = 5
PROBE_MARGIN = 1.2
INT8_ENGINES = ("x86", "fbgemm")


def check_precision(precision: str) -> str:
    if precision not in QUERY_PRECISIONS:
        raise ConfigError(f"query precision must be {', '.join(QUERY_PRECISIONS)}, not "
                          f"{precision!r}")
    return precision


def quantized_available(device: torch.device) -> bool:
    """A CPU model with the fbgemm / x86 engine (its fp16 and int8 dynamic linear kernels)."""
    engines = torch.backends.quantized.supported_engines
    return device.type == "cpu" and any(e in engines for e in INT8_ENGINES)


def _twin(model: torch.nn.Module, copied: set[int], spec: dict) -> torch.nn.Module:
    """A copy of ``model`` in which only the tensors whose ids are in ``copied`` are copied
    (every other one is shared), with the layers ``spec`` names dynamically quantised."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in copied}
    twin = copy.deepcopy(model, memo)
    with warnings.catch_warnings():  # torch marks the eager quantisation API deprecated
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(twin, spec, inplace=True)
    return twin


def quantized_copy(model: torch.nn.Module, blocks: torch.nn.ModuleList, upto: int,
                   precision: str, keep: Callable[[str], bool]) -> torch.nn.Module:
    """A copy of ``model`` whose Linear layers in blocks ``0..upto`` hold ``precision``
    ("fp16" or "int8") weights, except those ``keep(name)`` picks (left as they are); int8
    keeps KEEP_FP16 layers in fp16. Every other tensor (embeddings, later blocks) is shared,
    not copied."""
    inside = {id(t) for b in blocks[:upto + 1] for t in (*b.parameters(), *b.buffers())}
    names = {id(m): name for name, m in model.named_modules()}
    inner = tuple(f"{names[id(b)]}." for b in blocks[:upto + 1])
    half, eight = (torch.ao.quantization.float16_dynamic_qconfig,
                   torch.ao.quantization.per_channel_dynamic_qconfig)
    spec = {name: half if precision == "fp16" or any(k in name for k in KEEP_FP16) else eight
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith(inner) and not keep(name)}
    return _twin(model, inside, spec)


def half_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose Linear layers all hold fp16 weights (fp32 activations); every
    other tensor (embeddings, norms) is shared, not copied."""
    linear = {id(t) for m in model.modules() if isinstance(m, torch.nn.Linear)
              for t in m.parameters()}
    return _twin(model, linear, {torch.nn.Linear: torch.ao.quantization.float16_dynamic_qconfig})


def best_time(run: Callable[[], object], runs: int = PROBE_RUNS) -> float:
    """The fastest of ``runs`` timed calls (after one untimed warm-up)."""
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def faster(fp32: Callable[[], object], other: Callable[[], object]
           ) -> tuple[bool, float, float]:
    """Whether ``other`` beats ``fp32`` by PROBE_MARGIN on this machine, with both times (s)."""
    t32, t_other = best_time(fp32), best_time(other)
    return t_other * PROBE_MARGIN < t32, t32, t_other
