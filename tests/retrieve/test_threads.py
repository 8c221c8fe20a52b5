"""The ranking runs with one BLAS thread (retrieve/threads.py) and gives the pool back after."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from ner_retriever.retrieve.threads import RANKING_BLAS_THREADS, ranking_threads


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_ranking_threads_limits_blas_inside_and_restores_it():
    np.ones((4, 4)) @ np.ones(4)  # numpy's BLAS is loaded
    before = blas_threads()
    with ranking_threads():
        assert set(blas_threads()) == {RANKING_BLAS_THREADS}
    assert blas_threads() == before
