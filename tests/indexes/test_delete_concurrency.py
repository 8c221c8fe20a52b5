"""Delete (and compact) while searching: threads on one Retriever, and a reader process beside
a writer process. No search errs, and no deleted document comes back: a thread never sees a
document whose delete had returned before its search began, and each state a reader process
opens holds a subset of the documents of the state it opened before."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from ner_retriever.indexes.base import store_settings
from ner_retriever.retrieve.retriever import Retriever
from tests.indexes.test_delete import build, corpus

N_DOCS = 120
ROOT = Path(__file__).resolve().parents[2]


def test_threads_search_while_one_deletes_and_compacts(tmp_path):
    index = build(tmp_path / "idx", store_settings(), n_docs=N_DOCS, hybrid=True)
    retriever = Retriever(index, encoder=None, detector={"name": "gold"})
    _, _, vectors, dense = corpus(N_DOCS)
    queries = [np.concatenate([vectors[i][0], dense[i]]) for i in range(N_DOCS)]
    deleted_at: dict[str, float] = {}
    seen: list[tuple[float, list[str]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search(worker: int) -> None:
        i = worker
        while not stop.is_set():
            started = time.perf_counter()
            try:
                mode = i % 2  # hybrid, then mention-only (the dense part dropped)
                v = queries[i % N_DOCS] if mode == 0 else queries[i % N_DOCS][:16]
                results = retriever.search_vector(v, k=10, feedback=0)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            seen.append((started, [r.doc_id for r in results]))
            i += 3

    threads = [threading.Thread(target=search, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for batch in range(0, 90, 5):
        ids = [f"d{i}" for i in range(batch, batch + 5)]
        retriever.delete(ids)
        now = time.perf_counter()
        deleted_at.update({i: now for i in ids})
        if batch in (40, 85):
            retriever.compact()
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seen) > 50
    for started, ids in seen:
        back = [i for i in ids if deleted_at.get(i, np.inf) < started]
        assert not back, f"deleted documents returned: {back}"
    assert len(index) == N_DOCS - 90
    index.close()


READER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from pathlib import Path
    from ner_retriever.config import FusionConfig
    from ner_retriever.indexes.index import Index
    from ner_retriever.retrieve.fusion import Queries, hybrid_rank
    from ner_retriever.retrieve.sources import IndexSource
    from tests.indexes.test_delete import corpus

    path, done, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    _, _, vectors, dense = corpus(n)
    all_ids = [f"d{i}" for i in range(n)]
    before, rounds, last = set(all_ids), 0, False
    while not last:
        last = done.exists()
        with Index.open(path) as index:
            present = index.existing_ids(all_ids)
            assert present <= before, f"resurrected: {sorted(present - before)}"
            for i in range(rounds % 7, n, 7):
                ranked = hybrid_rank(IndexSource(index), Queries(vectors[i][0], dense[i],
                                     dense[i]), 10, FusionConfig(feedback_docs=0))
                top = ranked.top(10, 2)
                docs = index.documents_by_key([g.doc_key for g in top])
                index.mention_rows([r for g in top for r, _ in g.hits])
                found = {d.id for d in docs.values()}
                assert found <= present, f"not in its own state: {sorted(found - present)}"
        before, rounds = present, rounds + 1
        (done.parent / "ready").touch()
    print(json.dumps({"rounds": rounds, "left": len(before)}))
""")


def test_a_reader_process_beside_a_deleting_and_compacting_writer(tmp_path):
    path, done = tmp_path / "idx", tmp_path / "done"
    index = build(path, store_settings(), n_docs=N_DOCS, hybrid=True)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(done), str(N_DOCS)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and reader.poll() is None:
            assert time.monotonic() < deadline, "the reader did not start"
            time.sleep(0.05)  # until the reader has searched once
        for batch in range(0, 100, 10):
            index.delete([f"d{i}" for i in range(batch, batch + 10)])
            if batch in (30, 70):
                index.compact()
            time.sleep(0.2)
        done.touch()
        out, err = reader.communicate(timeout=120)
    finally:
        reader.kill()
        index.close()
    assert reader.returncode == 0, err
    report = json.loads(out)
    assert report["left"] == N_DOCS - 100 and report["rounds"] >= 3, report
