"""Crash safety, corruption detection and the single-writer rule (docs/RELIABILITY.md).

* SIGKILL trials: a short run of ``benchmarks/crash_trials.py`` (the benchmark runs 50+).
* Corruption: every index file that is truncated, altered or missing gives an
  ``IndexStateError``/``ConfigError`` naming the file (test_index.py has the first cases:
  a flipped segment byte, an edited config, a truncated catalog; these extend them).
* One writer, many readers: a second writer (another process holding ``write.lock``) is refused
  with a clear message, and readers keep serving the state committed when they opened.

Indexes here hold synthetic vectors (no model) unless a head or the CLI is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ner_retriever.detect.registry import build_detector
from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.indexes.index import CATALOG_NAME, CONFIG_NAME, LOCK_NAME, Index, IndexConfig
from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.types import Document, Mention, Span

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
DIM = 8


# -- helpers --------------------------------------------------------------------------------------
def _config() -> IndexConfig:
    return IndexConfig(encoder={"model": "synthetic"}, raw_dim=DIM, dim=DIM, head=None,
                       detector={"name": "gold"})


def _batch(b: int, n: int = 10):
    rng = np.random.default_rng(b)
    docs = [Document(f"{b}-{i}", f"Paris and Rome, batch {b} document {i}.") for i in range(n)]
    mentions = [[Mention(d.id, 0, 5, "Paris"), Mention(d.id, 10, 14, "Rome")] for d in docs]
    vectors = []
    for _ in docs:
        v = rng.standard_normal((2, DIM)).astype(np.float32)
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return docs, mentions, vectors


def _synthetic(path: Path, batches: int = 3) -> Path:
    with Index.create(path, _config()) as index:
        for b in range(batches):
            index.add(*_batch(b))
    return path


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(BENCH))
    try:
        import crash_trials
    finally:
        sys.path.remove(str(BENCH))
    model, _, _ = crash_trials.make_fixture(folder, n_docs=1)
    return model


# -- SIGKILL ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_times_keeps_whole_batches_and_resumes_identically(tmp_path):
    """5 seeded SIGKILLs of ``ner-retriever index`` (forked from a pre-imported server), each
    checked, plus the resumes; ``python benchmarks/crash_trials.py`` runs 50."""
    sys.path.insert(0, str(BENCH))
    try:
        import crash_trials
    finally:
        sys.path.remove(str(BENCH))
    stats = crash_trials.run_trials(tmp_path, trials=5, seed=1, n_docs=120, batch_size=3,
                                    log=lambda _msg: None)
    assert stats["trials"] == 5 and stats["failures"] == 0
    assert stats["completions"] >= 1  # every chain ended identical to the uninterrupted run


# -- corruption -----------------------------------------------------------------------------------
def _segment(path: Path) -> Path:
    return sorted((path / "vectors").glob("seg-*.npy"))[1]


def _truncate(file: Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def _replace_segment_with_other_vectors(path: Path) -> None:
    seg = _segment(path)
    vectors = np.load(seg)
    np.save(seg, vectors[::-1].copy())  # a valid file of the right shape, other content


CORRUPTIONS = {
    "segment truncated": (lambda p: _truncate(_segment(p)), "seg-"),
    "segment emptied": (lambda p: _segment(p).write_bytes(b""), "seg-"),
    "segment header altered": (lambda p: _flip(_segment(p), 9), "seg-"),
    "segment replaced by other vectors": (_replace_segment_with_other_vectors, "seg-"),
    "segment missing": (lambda p: _segment(p).unlink(), "seg-"),
    "config truncated": (lambda p: _truncate(p / CONFIG_NAME), CONFIG_NAME),
    "config not UTF-8": (lambda p: (p / CONFIG_NAME).write_bytes(b"\xff\xfe{}"), CONFIG_NAME),
    "config missing": (lambda p: (p / CONFIG_NAME).unlink(), CONFIG_NAME),
    "config reformatted": (  # same settings, other bytes: still not the recorded file
        lambda p: (p / CONFIG_NAME).write_text(json.dumps(json.loads(
            (p / CONFIG_NAME).read_text()))), CONFIG_NAME),
    "catalog header altered": (lambda p: _flip(p / CATALOG_NAME, 0), CATALOG_NAME),
    "catalog page zeroed": (lambda p: (p / CATALOG_NAME).write_bytes(
        (p / CATALOG_NAME).read_bytes()[:4096] + bytes(4096)
        + (p / CATALOG_NAME).read_bytes()[8192:]), CATALOG_NAME),
    "catalog emptied": (lambda p: (p / CATALOG_NAME).write_bytes(b""), CATALOG_NAME),
    "catalog missing": (lambda p: (p / CATALOG_NAME).unlink(), CATALOG_NAME),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damaged_index_files_give_a_clear_error_naming_the_file(tmp_path, case):
    """... and a failed open for writing releases the writer lock: once the index is repaired
    (here: replaced by its intact copy), the same process opens it for writing again."""
    path = _synthetic(tmp_path / "idx")
    shutil.copytree(path, tmp_path / "intact")
    mutate, name = CORRUPTIONS[case]
    mutate(path)
    for writable in (False, True):
        with pytest.raises(IndexStateError) as info:
            Index.open(path, writable=writable)
        assert name in str(info.value), str(info.value)
    for file in path.rglob("*"):  # repair in place: the lock file itself must stay
        if file.is_file() and file.name != LOCK_NAME:
            file.unlink()
    shutil.copytree(tmp_path / "intact", path, dirs_exist_ok=True)
    with Index.open(path, writable=True) as index:  # the failed open left no lock behind
        assert len(index) == 30
    mutate(path)
    # the CLI says the same in one line, without a traceback
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and name in result.output and "Traceback" not in result.output


def test_crash_leftovers_are_ignored_by_readers_and_removed_by_the_next_writer(tmp_path):
    """A segment written but never committed (the kill came before the catalog commit) and a
    half-written temporary file: invisible to readers, deleted when a writer opens."""
    path = _synthetic(tmp_path / "idx", batches=2)
    vectors = path / "vectors"
    np.save(vectors / "seg-000000000040-20.npy", np.ones((20, DIM), np.float32))
    (vectors / ".seg-000000000060-5.npy.tmp").write_bytes(b"\x93NUMPY partial")
    with Index.open(path) as reader:
        assert len(reader) == 20 and reader.ntotal == reader.num_mentions() == 40
    with Index.open(path, writable=True) as writer:
        assert sorted(p.name for p in vectors.iterdir()) == [s.name for s in writer.segments()]
        writer.add(*_batch(7))
        assert writer.ntotal == writer.num_mentions() == 60


@pytest.mark.slow
def test_head_files_are_checked(tmp_path):
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.models.head import HeadConfig, ProjectionHead

    encoder = TransformerEncoder(EncoderConfig(model=str(_tiny_model(tmp_path / "m"))))
    head = ProjectionHead(HeadConfig(input_dim=encoder.dim, hidden_dim=16, output_dim=8))
    path = tmp_path / "idx"
    with Retriever.create(path, encoder=encoder, detector="gold", head=head) as r:
        r.add([Document("a", "Paris and Rome.", spans=(Span(0, 5), Span(10, 14)))])
    head_dir = path / "head"
    pristine = {f.name: f.read_bytes() for f in head_dir.iterdir()}

    def restore() -> None:
        for name, data in pristine.items():
            (head_dir / name).write_bytes(data)

    cases = [
        ("weights altered", lambda: _flip(head_dir / "head.safetensors", -3), "head.safetensors"),
        ("weights truncated", lambda: _truncate(head_dir / "head.safetensors"), "head"),
        ("weights missing", lambda: (head_dir / "head.safetensors").unlink(), "head.safetensors"),
        ("config altered", lambda: (head_dir / "head.json").write_text(
            (head_dir / "head.json").read_text().replace('"dropout": 0.1', '"dropout": 0.5')),
         "head.json"),
        ("config garbage", lambda: (head_dir / "head.json").write_text("{"), "head"),
    ]
    for label, mutate, name in cases:
        mutate()
        with pytest.raises(ConfigError) as info:
            Retriever.open(path, encoder=encoder)
        assert name in str(info.value), (label, str(info.value))
        restore()
    with Retriever.open(path, encoder=encoder) as r:  # intact again
        assert len(r.index) == 1


def test_damage_inside_a_catalog_page_is_a_clear_error_not_a_traceback(tmp_path):
    """A byte flipped inside a stored row passes SQLite's structural check on open; reading it
    later must still fail cleanly (HTTP: 503 naming the file; CLI: one line), never a 500.
    (Flips that still decode are caught by the row checksums: tests below.)"""
    path = _synthetic(tmp_path / "idx", batches=1)
    catalog = path / CATALOG_NAME
    data = catalog.read_bytes()
    where = data.find("batch 0 document 3".encode())
    assert where > 0
    catalog.write_bytes(data[:where] + b"\xff" + data[where + 1:])  # invalid UTF-8 in a row
    with Index.open(path) as index:
        with pytest.raises(sqlite3.DatabaseError):
            index.get_document("0-3")
    from fastapi.testclient import TestClient

    from ner_retriever.serve.app import create_app

    retriever = Retriever(Index.open(path), encoder=None, detector=build_detector("gold"))
    with TestClient(create_app(retriever, owns_retriever=True)) as client:
        response = client.get("/documents/0-3")
        assert response.status_code == 503
        assert "catalog.sqlite" in response.json()["detail"]
        assert client.get("/documents/0-2").status_code == 200  # the rest still serves


def _set_byte(file: Path, old: bytes, new: bytes) -> None:
    """Overwrite bytes inside the file itself (no SQLite involved), keeping valid UTF-8."""
    data = file.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    file.write_bytes(data.replace(old, new))


def _assert_row_damage(path: Path, doc_id: str, read) -> None:
    """The damaged row passes the checks on open, then every read of it names the document and
    the catalog: the library, search, HTTP (503) and the CLI (one line)."""
    vectors = np.concatenate([_batch(b)[2][i] for b in range(3) for i in range(10)])
    row = [d.id for b in range(3) for d in _batch(b)[0]].index(doc_id) * 2 + 1  # its "Rome"
    expected = f"row checksum mismatch for {read} {doc_id!r}"
    with Index.open(path) as index:
        reader = Retriever(index, encoder=None, detector=build_detector("gold"))
        for call in (lambda: index.get_document(doc_id) and index.mentions_of(doc_id),
                     lambda: reader.search_vector(vectors[row], k=3)):
            with pytest.raises(IndexStateError) as info:
                call()
            assert expected in str(info.value) and str(path / CATALOG_NAME) in str(info.value)
        assert index.get_document("0-2").text == _batch(0)[0][2].text  # the rest still serves
    from fastapi.testclient import TestClient

    from ner_retriever.serve.app import create_app

    retriever = Retriever(Index.open(path), encoder=None, detector=build_detector("gold"))
    with TestClient(create_app(retriever, owns_retriever=True)) as client:
        response = client.get(f"/documents/{doc_id}")
        assert response.status_code == 503 and expected in response.json()["detail"]


def test_an_altered_character_in_a_stored_text_is_detected_not_served(tmp_path):
    path = _synthetic(tmp_path / "idx")
    with Index.open(path) as index:
        assert index.get_document("1-3").text.endswith("batch 1 document 3.")
    _set_byte(path / CATALOG_NAME, b"batch 1 document 3.", b"batch 1 document 8.")
    _assert_row_damage(path, "1-3", "document")


def test_an_altered_mention_offset_is_detected_not_served(tmp_path):
    path = _synthetic(tmp_path / "idx")
    db = sqlite3.connect(path / CATALOG_NAME)
    with db:  # a start offset 10 -> 11, through SQLite (the page stays well-formed)
        db.execute("UPDATE mentions SET start = 11 WHERE row = 2 * 13 + 1")
    db.close()
    _assert_row_damage(path, "1-3", "a mention of document")


def test_a_catalog_without_row_checksums_is_migrated_by_a_writer(tmp_path):
    """Indexes written before row checksums: a reader refuses them with what to do, a writer
    adds the checksums (one transaction) and from then on damage is detected."""
    path = _synthetic(tmp_path / "idx")
    db = sqlite3.connect(path / CATALOG_NAME)
    with db:
        db.execute("ALTER TABLE documents DROP COLUMN checksum")
        db.execute("ALTER TABLE mentions DROP COLUMN checksum")
    db.close()
    with pytest.raises(IndexStateError, match="before catalog rows had checksums.*rebuild"):
        Index.open(path)
    with Index.open(path, writable=True) as writer:
        writer.add(*_batch(3))
    with Index.open(path) as reader:
        assert len(reader) == 40 and reader.mention_rows([27])[27] == (10, 14, "Rome")
        assert [m.text for m in reader.mentions_of("3-9")] == ["Paris", "Rome"]
    _set_byte(path / CATALOG_NAME, b"batch 1 document 3.", b"batch 1 document 8.")
    _assert_row_damage(path, "1-3", "document")


# -- one writer, many readers ----------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ner_retriever.indexes.index import Index
    from ner_retriever.types import Document, Mention

    index = Index.open(sys.argv[1], writable=True)
    print("locked", flush=True)
    for line in sys.stdin:
        verb, doc_id, text = line.rstrip("\\n").split(" ", 2)
        vector = np.ones((1, index.config.dim), np.float32) / np.sqrt(index.config.dim)
        index.add([Document(doc_id, text)], [[Mention(doc_id, 0, 5, text[:5])]], [vector],
                  if_exists="update" if verb == "update" else "error")
        print("committed", flush=True)
""")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def other_writer(tmp_path, tiny_model):
    """A 30-document index (tiny model, gold spans) and another process holding its writer
    lock, which commits on request."""
    from ner_retriever.models.encoder import EncoderConfig

    path = tmp_path / "idx"
    docs = []
    for b in range(3):
        for i in range(10):
            text = f"Report {b}-{i}: Paris and Rome."
            paris, rome = text.index("Paris"), text.index("Rome")
            docs.append(Document(f"{b}-{i}", text,
                                 spans=(Span(paris, paris + 5), Span(rome, rome + 4))))
    with Retriever.create(path, encoder=EncoderConfig(model=str(tiny_model)),
                          detector="gold", hybrid=False) as r:  # the writer adds mentions only
        r.add(docs, commit_every=10)
        assert {m.text for m in r.index.mentions_of("1-4")} == {"Paris", "Rome"}
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"

    def commit(verb: str, doc_id: str, text: str) -> None:
        proc.stdin.write(f"{verb} {doc_id} {text}\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "committed"

    yield path, proc, commit
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_second_writer_is_refused_while_readers_serve_the_committed_state(other_writer,
                                                                           tiny_model):
    from typer.testing import CliRunner

    from ner_retriever.cli.main import app

    path, proc, commit = other_writer
    with pytest.raises(IndexStateError, match="being written by another process") as info:
        Index.open(path, writable=True)
    assert LOCK_NAME in str(info.value)
    # the CLI refuses too, in one line, and changes nothing
    corpus = path.parent / "more.conll"
    corpus.write_text("Oslo\tB-loc\nis\tO\nbig\tO\n\n")
    result = CliRunner().invoke(app, ["index", str(corpus), "--index", str(path),
                                      "--detector", "gold", "--if-exists", "skip"])
    assert result.exit_code == 1 and "another process" in result.output, result.output
    assert "Traceback" not in result.output

    reader = Retriever(Index.open(path), encoder=None, detector=build_detector("gold"))
    segments = reader.index.segments()
    stored = np.concatenate([np.load(path / "vectors" / s.name) for s in segments])
    assert reader.index.mention_rows([29])[29][2] == "Rome"
    query = stored[29]  # the "Rome" mention of document 1-4 (rows 28, 29)
    before = [(r.doc_id, r.score) for r in reader.search_vector(query, k=30)]
    assert len(before) == 30 and before[0][0] == "1-4"
    # the other process appends, replaces and removes documents while the reader is open
    commit("add", "new-1", "Oslo is a city.")
    commit("update", "1-4", "Turin is a city.")
    commit("update", "2-0", "Genoa is a city.")
    # the open reader still serves the state committed when it opened: same ranking, and every
    # document it returns is whole (no KeyError, no new mentions without vectors)
    assert [(r.doc_id, r.score) for r in reader.search_vector(query, k=30)] == before
    assert len(reader.index) == 30 and reader.index.get_document("new-1") is None
    assert reader.index.get_document("1-4").text.startswith("Report")
    reader.close()
    with Index.open(path) as fresh:  # a reader opened now sees the new commits
        assert len(fresh) == 31 and fresh.get_document("1-4").text == "Turin is a city."
        assert fresh.num_mentions() == 59 and fresh.ntotal == 63  # replaced rows stay unused
    # the lock dies with its process (SIGKILL included): the index is writable again
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Index.open(path, writable=True) as writer:
        assert len(writer) == 31 and writer.num_mentions() == 59


def test_readers_open_while_a_writer_commits_continuously(tmp_path):
    """Readers opened at random moments during a stream of commits always see whole batches."""
    path = _synthetic(tmp_path / "idx", batches=1)
    script = tmp_path / "stream.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from ner_retriever.indexes.index import Index
        from ner_retriever.types import Document, Mention
        index = Index.open(sys.argv[1], writable=True)
        for b in range(1, 200):
            docs = [Document(f"{b}-{i}", "Paris and Rome.") for i in range(5)]
            mentions = [[Mention(d.id, 0, 5, "Paris"), Mention(d.id, 10, 14, "Rome")]
                        for d in docs]
            index.add(docs, mentions, [np.ones((2, 8), np.float32)] * 5)
        index.close()
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env)
    seen = set()
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            with Index.open(path) as reader:
                docs, mentions, vectors = len(reader), reader.num_mentions(), reader.ntotal
                assert (docs - 10) % 5 == 0, docs          # whole batches only
                assert mentions == 2 * docs == vectors      # every document has its mentions
                seen.add(docs)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert len(seen) >= 2, seen  # the readers did see the index grow
