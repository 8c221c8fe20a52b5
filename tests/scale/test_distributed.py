"""The Ray Data path on a local Ray (2 CPUs): same results as the single-process path, and an
interrupted run resumes. Ray starts once for the module; each run starts its own actors."""

from __future__ import annotations

import itertools
import json
from importlib import resources

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ner_retriever.scale.ray import add_with_ray, start_ray  # noqa: E402
from ner_retriever.retrieve.retriever import Retriever  # noqa: E402
from ner_retriever.types import Document  # noqa: E402

N_DOCS, SHARD = 20, 6
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own


@pytest.fixture(scope="module")
def local_ray():
    started = start_ray(num_cpus=2)  # as the CLI starts it without --address
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sample = resources.files("ner_retriever") / "data" / "sample.jsonl"
    lines = list(itertools.islice(sample.read_text(encoding="utf-8").splitlines(), N_DOCS))
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs = [Document(**json.loads(line)) for line in lines]
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = folder / "docs.parquet"  # the same documents, for Ray's own reader
    pq.write_table(pa.table({"id": [d.id for d in docs], "text": [d.text for d in docs]}),
                   parquet, row_group_size=7)
    return path, parquet, docs


def _snapshot(index):
    """Per document (in row order): its mentions and their vectors."""
    rows = index._db.execute(
        "SELECT m.row, d.id, m.start, m.end, m.text FROM mentions m JOIN documents d "
        "ON m.doc_key = d.key ORDER BY m.row").fetchall()
    vectors = np.concatenate([np.load(index.path / "vectors" / s.name)
                              for s in index.segments()]).astype(np.float32)
    docs = [r[0] for r in index._db.execute("SELECT id FROM documents ORDER BY key")]
    return docs, [r[1:] for r in rows], vectors[[r[0] for r in rows]]


@pytest.mark.slow
def test_ray_interrupted_then_resumed_equals_single_process(tmp_path, corpus, local_ray,
                                                             smol_encoder):
    """Run 1: JSONL shipped by the driver, 2 actors, interrupted after the first shard.
    Run 2: the same corpus as Parquet read by Ray, 1 actor, resuming with skip."""
    path, parquet, docs = corpus
    with Retriever.create(tmp_path / "local", encoder=smol_encoder, detector="spacy") as local:
        local.add(docs, commit_every=SHARD)
        expected = _snapshot(local.index)
        expected_hits = [r.to_dict() for r in local.search("car model", k=5)]
    assert len(expected[1]) >= N_DOCS  # a real corpus: mentions in most documents

    class Interrupt(Exception):
        pass

    committed = []

    def stop_after_first_shard(n_docs, n_mentions):
        committed.append(n_docs)
        raise Interrupt

    target = tmp_path / "ray"
    with Retriever.create(target, encoder=smol_encoder, detector="spacy") as r:
        with pytest.raises(Interrupt):
            add_with_ray(r, path, batch_size=SHARD, workers=2, progress=stop_after_first_shard)
        assert len(r.index) == SHARD == committed[0]  # the first shard is committed
    with Retriever.open(target, writable=True, encoder=smol_encoder) as r:
        stats = add_with_ray(r, parquet, if_exists="skip", batch_size=SHARD, workers=1)
        assert (stats.documents, stats.skipped) == (N_DOCS - SHARD, SHARD)
        got = _snapshot(r.index)
        assert got[0] == expected[0]  # same documents, in corpus order
        assert got[1] == expected[1]  # same mentions on the same rows
        np.testing.assert_allclose(got[2], expected[2], atol=1e-4)
        hits = [x.to_dict() for x in r.search("car model", k=5)]
    assert [h["doc_id"] for h in hits] == [h["doc_id"] for h in expected_hits]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected_hits],
                                                       abs=1e-4)


@pytest.mark.slow
def test_ray_with_the_default_detector_equals_single_process(tmp_path, corpus, local_ray,
                                                                     smol_encoder):
    """Ray actors run the default detector's joint pass (their own model copy) and weight the
    vectors by confidence exactly as ``Retriever.add`` does in one process."""
    path, _, docs = corpus
    with Retriever.create(tmp_path / "local", encoder=smol_encoder) as local:
        assert local.detector.config()["name"] == "union"  # learned + spacy
        local.add(docs, commit_every=SHARD)
        expected = _snapshot(local.index)
    with Retriever.create(tmp_path / "ray", encoder=smol_encoder) as r:
        add_with_ray(r, path, batch_size=SHARD, workers=1)
        got = _snapshot(r.index)
    assert got[:2] == expected[:2] and len(got[1]) >= N_DOCS
    np.testing.assert_allclose(got[2], expected[2], atol=1e-4)
