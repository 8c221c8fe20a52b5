"""The ranking's numpy work runs with one BLAS thread.

numpy's OpenBLAS and torch each keep a pool of threads on the same two cores, and OpenBLAS's
threads spin for a while after every call: a query's next language-model pass then ran 2-4x
slower (SmolLM2 int8 query: 22 ms alone, 45-90 ms right after a ranking; docs/PERFORMANCE.md).
The ranking's products are one query against many vectors, bound by memory, not arithmetic, so
one thread costs them nothing measurable.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

RANKING_BLAS_THREADS = 1
_controller: ThreadpoolController | None = None


def ranking_threads() -> AbstractContextManager:
    """A context in which BLAS libraries (loaded when first called) use RANKING_BLAS_THREADS."""
    global _controller
    if _controller is None:  # inspecting the loaded libraries once: a limit then costs ~5 us
        _controller = ThreadpoolController()
    return _controller.limit(limits=RANKING_BLAS_THREADS, user_api="blas")
