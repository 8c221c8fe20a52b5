"""SIGKILL trials for delete and compact: a child process deletes batches of documents and
compacts after each, and is killed at seeded random moments. After every kill the index opens,
holds all documents but a whole number of deleted batches (never half a batch), returns none
of the deleted ones, and the next writer removes every uncommitted file."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ner_retriever.indexes.base import store_settings
from ner_retriever.indexes.index import Index
from tests.indexes.test_delete import build, corpus, ranked_ids

N_DOCS, BATCH = 200, 10
ROOT = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent("""
    import sys
    from ner_retriever.indexes.index import Index
    with Index.open(sys.argv[1], writable=True) as index:
        print("ready", flush=True)  # the parent's random kill time counts from here
        for b in range(0, int(sys.argv[2]), int(sys.argv[3])):
            index.delete([f"d{i}" for i in range(b, b + int(sys.argv[3]))])
            index.compact()
""")


@pytest.mark.slow  # six child processes: about 25 s
def test_sigkill_during_delete_and_compaction_leaves_old_or_new_state(tmp_path):
    source = tmp_path / "source"
    build(source, store_settings(index_type="hnsw", storage="fp32"), n_docs=N_DOCS).close()
    _, _, vectors, _ = corpus(N_DOCS)
    rng, states = random.Random(0), set()
    for trial in range(6):
        path = tmp_path / f"trial-{trial}"
        shutil.copytree(source, path)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(N_DOCS),
                                  str(BATCH)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"  # start-up time varies with load
        time.sleep(rng.uniform(0.0, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with Index.open(path) as index:
            present = index.existing_ids(f"d{i}" for i in range(N_DOCS))
            gone = N_DOCS - len(present)
            assert gone % BATCH == 0, f"trial {trial}: {gone} deleted, not whole batches"
            assert present == {f"d{i}" for i in range(gone, N_DOCS)}
            assert index.num_mentions() == len(present) * 8
            for i in range(0, N_DOCS, 17):
                top = ranked_ids(index, vectors[i][0], 5)
                assert not [d for d in top if d not in present]
                if f"d{i}" in present:
                    assert top[0] == f"d{i}"
        with Index.open(path, writable=True) as writer:
            committed = {s.name for s in writer.segments()}
        left = {p.name for p in (path / "vectors").glob("seg-*")}
        assert left == committed, f"trial {trial}: leftovers {sorted(left - committed)}"
        states.add(gone)
        shutil.rmtree(path)
    assert len(states) >= 2  # the kills landed at different points
