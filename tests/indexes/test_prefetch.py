"""Read-ahead advice for scattered rows of a memory-mapped matrix: one ``madvise`` per run of
touching pages, covering every asked row (``faiss_build.prefetch_rows``)."""

from __future__ import annotations

import mmap

import numpy as np

from ner_retriever.indexes.faiss_build import prefetch_rows


def test_one_call_per_run_of_pages_covers_every_row(tmp_path, monkeypatch):
    data = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32,
                                     shape=(5000, 64))  # 256-byte rows, 16 to a page
    calls = []
    monkeypatch.setattr(data, "_mmap", type("M", (), {"madvise": lambda self, *a:
                                                       calls.append(a)})())
    rows = np.array([7, 3, 3, 4, 5, 400, 401, 4999, 2000])
    prefetch_rows(data, rows)
    base = data.offset % mmap.ALLOCATIONGRANULARITY
    covered = [(start, start + length) for _, start, length in calls]
    for r in rows:
        lo, hi = base + r * 256, base + (r + 1) * 256
        assert any(a <= lo and hi <= b for a, b in covered), r
    assert len(calls) == 4  # rows 3-7, 400-401, 2000, 4999
    assert all(start % mmap.PAGESIZE == 0 for _, start, _ in calls)
