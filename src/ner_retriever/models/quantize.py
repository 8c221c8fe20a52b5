"""int8 dynamic quantisation for the query pass, chosen per machine by measuring it.

A query is a handful of tokens: its cost is reading the weights of every block up to the
chosen one, not arithmetic, so int8 weights (a quarter of the bytes) make it several times
faster where the CPU has fast int8 kernels (fbgemm / x86 engines). Whether they do is probed
at run time (:func:`faster`), never assumed: another CPU may make fp32 as fast. Only the
query side uses the copy; documents are always encoded at the encoder's own precision.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable

import torch

from ner_retriever.errors import ConfigError

# "auto": int8 where the start-up probe measures it faster, else fp32.
QUERY_PRECISIONS = ("auto", "fp32", "int8")
# Linear layers left in fp32 in the int8 copy: an MLP's output projection reads activations
# with a few huge channels, which per-tensor int8 activations cannot hold (SmolLM2 queries:
# cosine to fp32 0.93 with it quantised, 0.98-0.99 without); names as Llama/Mistral/Qwen
# (down_proj), GPT-2 (mlp.c_proj), OPT/Phi (fc2) and BERT (an output dense) call them.
KEEP_FP32 = ("down_proj", "mlp.c_proj", "fc2", ".output.dense")
# The probe: best of PROBE_RUNS timed passes each; int8 must be PROBE_MARGIN times faster.
PROBE_RUNS = 5
PROBE_MARGIN = 1.2
INT8_ENGINES = ("x86", "fbgemm")


def check_precision(precision: str) -> str:
    if precision not in QUERY_PRECISIONS:
        raise ConfigError(f"query precision must be {', '.join(QUERY_PRECISIONS)}, not "
                          f"{precision!r}")
    return precision


def int8_available(device: torch.device) -> bool:
    """A CPU model with an int8 engine (fbgemm / x86)."""
    engines = torch.backends.quantized.supported_engines
    return device.type == "cpu" and any(e in engines for e in INT8_ENGINES)


def int8_copy(model: torch.nn.Module, blocks: torch.nn.ModuleList, upto: int,
              keep: Callable[[str, torch.nn.Module], bool]) -> torch.nn.Module:
    """A copy of ``model`` whose Linear layers in blocks ``0..upto`` are int8 (dynamic,
    per-channel weights), except those named in KEEP_FP32 or picked by ``keep(name,
    module)``; every other tensor (embeddings, later blocks) is shared, not copied."""
    inside = {id(t) for b in blocks[:upto + 1] for t in (*b.parameters(), *b.buffers())}
    memo = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in inside}
    twin = copy.deepcopy(model, memo)
    names = {id(m): name for name, m in model.named_modules()}
    inner = tuple(f"{names[id(b)]}." for b in blocks[:upto + 1])
    spec = {name: torch.ao.quantization.per_channel_dynamic_qconfig
            for name, module in twin.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith(inner)
            and not any(k in name for k in KEEP_FP32) and not keep(name, module)}
    with warnings.catch_warnings():  # torch marks the eager quantisation API deprecated
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(twin, spec, dtype=torch.qint8, inplace=True)
    return twin


def best_time(run: Callable[[], object], runs: int = PROBE_RUNS) -> float:
    """The fastest of ``runs`` timed calls (after one untimed warm-up)."""
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def faster(fp32: Callable[[], object], int8: Callable[[], object]) -> tuple[bool, float, float]:
    """Whether ``int8`` beats ``fp32`` by PROBE_MARGIN on this machine, with both times (s)."""
    t32, t8 = best_time(fp32), best_time(int8)
    return t8 * PROBE_MARGIN < t32, t32, t8
