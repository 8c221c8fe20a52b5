"""The ranking runs with one BLAS thread (retrieve/threads.py), gives the pool back after, lists
the loaded libraries only at import (a scan during a search deadlocked `serve`: issue 20) and
limits numpy's BLAS only."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import threadpoolctl
from threadpoolctl import threadpool_info

from ner_retriever.retrieve import threads
from ner_retriever.retrieve.threads import RANKING_BLAS_THREADS, numpy_blas, ranking_threads


def blas_threads(filepaths=None) -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and (filepaths is None or lib["filepath"] in filepaths)}


def numpy_paths() -> set[str]:
    return {lib.filepath for lib in threads._RANKING.lib_controllers
            if lib.user_api == "blas"}


def test_ranking_threads_limits_numpy_blas_inside_and_restores_it():
    np.ones((4, 4)) @ np.ones(4)  # numpy's BLAS is loaded
    if not numpy_paths():
        pytest.skip("numpy runs on no BLAS library threadpoolctl can control")
    before = blas_threads()
    with ranking_threads():
        assert set(blas_threads(numpy_paths()).values()) == {RANKING_BLAS_THREADS}
    assert blas_threads() == before


def test_ranking_threads_lists_no_libraries(monkeypatch):
    """dl_iterate_phdr with a Python callback, racing another thread's dlopen (an extension
    module import) holding the GIL, deadlocks: a search must never list the libraries."""
    def scan(*args, **kwargs):
        raise AssertionError("ThreadpoolController() built during a search")

    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "__init__", scan)
    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "_load_libraries", scan)
    for _ in range(3):
        with ranking_threads():
            np.ones((8, 8)) @ np.ones(8)


def test_only_numpys_blas_is_limited():
    faiss = pytest.importorskip("faiss")  # ships its own (OpenMP) OpenBLAS
    assert faiss is not None
    controller = threadpoolctl.ThreadpoolController()
    picked = {lib.filepath for lib in numpy_blas(controller).lib_controllers}
    others = {lib.filepath for lib in controller.lib_controllers if lib.user_api == "blas"} - picked
    if not picked:
        pytest.skip("numpy runs on no BLAS library threadpoolctl can control")
    before = blas_threads(others)
    with ranking_threads():
        assert blas_threads(others) == before  # faiss's thread count is never touched
    np_dir = np.__file__.rsplit("/", 2)[0]
    assert all(p.startswith(np_dir) for p in picked)


def test_limit_while_other_threads_run_blas():
    """The per-search limit, set and reset while another thread multiplies matrices on
    numpy's BLAS (the add path's projection runs outside the index lock): no hang, and the
    products stay right."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    expected = a @ b
    stop, errors = threading.Event(), []

    def multiply() -> None:
        while not stop.is_set():
            if not np.allclose(a @ b, expected):
                errors.append("wrong product")

    worker = threading.Thread(target=multiply, daemon=True)
    worker.start()
    try:
        for _ in range(300):
            with ranking_threads():
                a[0] @ b
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive() and not errors


def test_ranking_limits_openmp_in_its_own_thread_only():
    """faiss's search loops run on OpenMP (torch's libgomp): limited inside the ranking, in the
    ranking's thread only (an OpenMP thread count is per thread), restored after."""
    omp = [lib for lib in threads._RANKING.lib_controllers if lib.user_api == "openmp"]
    if not omp:
        pytest.skip("no OpenMP runtime loaded")
    before = [lib.get_num_threads() for lib in omp]
    seen: list[list[int]] = []
    inside, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        inside.wait(30)
        seen.append([lib.get_num_threads() for lib in omp])
        done.set()

    worker = threading.Thread(target=other_thread, daemon=True)
    worker.start()
    with ranking_threads():
        assert [lib.get_num_threads() for lib in omp] == [RANKING_BLAS_THREADS] * len(omp)
        inside.set()
        done.wait(30)
    worker.join(timeout=30)
    assert seen == [before]
    assert [lib.get_num_threads() for lib in omp] == before
