"""The ranking's numpy work runs with one BLAS thread.

numpy's OpenBLAS and torch each keep a pool of threads on the same two cores, and OpenBLAS's
threads spin for a while after every call: a query's next language-model pass then ran 2-4x
slower (SmolLM2 int8 query: 22 ms alone, 45-90 ms right after a ranking; docs/PERFORMANCE.md).
The ranking's products are one query against many vectors, bound by memory, not arithmetic, so
one thread costs them nothing measurable.

Two rules keep this safe in a threaded server (issue 20: ``serve`` hung under load):

* The loaded libraries are listed once, when this module is imported, never during a search.
  Listing them (threadpoolctl's ``ThreadpoolController()``) walks the dynamic loader's list with
  ``dl_iterate_phdr`` and calls back into Python for each library: the walk holds the loader's
  lock and the callback waits for the GIL, while another thread that is importing an extension
  module (the first ``POST /documents`` loads spaCy) holds the GIL and waits in ``dlopen`` for
  the loader's lock - a deadlock that froze every search behind the index lock
  (joblib/threadpoolctl#239).
* Only numpy's own BLAS is limited among the BLAS libraries: the ranking's products are
  numpy's. Other BLAS libraries (faiss's OpenMP OpenBLAS, which frees and reallocates its
  per-thread buffers whenever its thread count changes) are left alone, so no other thread's
  call into them can be disturbed; torch's MKL is linked into torch and never listed.
* OpenMP runtimes are limited too: faiss's search loops run on OpenMP (on torch's libgomp,
  whose symbols torch loads globally), and with two threads on two loaded cores a ranking took
  ~70 ms instead of ~34 ms. An OpenMP thread count is the calling thread's own setting, so
  this leaves the language-model pass on another thread as it is.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch  # noqa: F401 - loads the OpenMP runtime (libgomp) the listing below must see
from threadpoolctl import ThreadpoolController

RANKING_BLAS_THREADS = 1


def _numpy_dirs() -> tuple[str, ...]:
    """Where numpy's wheel keeps the BLAS it ships (Linux: numpy.libs, macOS: numpy/.dylibs)."""
    package = os.path.realpath(os.path.dirname(np.__file__))
    return tuple(os.path.join(d, "") for d in (package, package + ".libs"))


def numpy_blas(controller: ThreadpoolController | None = None) -> ThreadpoolController:
    """The BLAS libraries numpy's products run on, among those ``controller`` lists: the ones
    numpy's wheel ships; for a numpy built against a system BLAS (no such file), the BLAS
    libraries that are not OpenMP builds (whose thread-count change is unsafe to make while
    another thread is inside them)."""
    controller = controller if controller is not None else ThreadpoolController()
    blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    dirs = _numpy_dirs()
    own = [lib for lib in blas if os.path.realpath(lib.filepath).startswith(dirs)]
    if not own:
        own = [lib for lib in blas if getattr(lib, "threading_layer", None) != "openmp"]
    return controller.select(filepath=[lib.filepath for lib in own])


def ranking_libraries(controller: ThreadpoolController | None = None) -> ThreadpoolController:
    """What a ranking limits: numpy's BLAS (:func:`numpy_blas`) and every OpenMP runtime."""
    controller = controller if controller is not None else ThreadpoolController()
    paths = [lib.filepath for lib in numpy_blas(controller).lib_controllers]
    paths += [lib.filepath for lib in controller.lib_controllers if lib.user_api == "openmp"]
    return controller.select(filepath=paths)


# numpy and torch (imported above) have loaded numpy's BLAS and torch's libgomp, which faiss's
# OpenMP loops bind to as well (torch loads it globally): list the libraries now, once, in the
# importing thread. One loaded later is not limited (only slower), never scanned for.
_RANKING = ranking_libraries()


def ranking_threads() -> AbstractContextManager:
    """A context in which the ranking's libraries use RANKING_BLAS_THREADS threads (~5 us;
    no library scan)."""
    if not _RANKING.lib_controllers:
        return nullcontext()
    return _RANKING.limit(limits=RANKING_BLAS_THREADS)
