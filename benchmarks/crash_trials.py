"""Crash safety: SIGKILL the indexing process at seeded random times and check the index.

A writer runs the real indexing command (``ner-retriever index CORPUS --index DIR
--if-exists skip --batch-size B``) on a small CoNLL corpus with a tiny randomly initialised
Llama (so the model costs nothing and the writer spends its time in the commit loop), and is
killed with SIGKILL at a random moment. After every kill the index must:

* open (read-only; every segment checksum verified) or not exist yet (killed before creation);
* hold exactly the first ``m`` documents of the corpus with ``m`` a multiple of the batch size
  (whole committed batches: no duplicate, no partial document);
* have the very mention rows of an uninterrupted run for those documents (same row numbers,
  offsets, texts, labels), as many vectors as mention rows, equal to the uninterrupted run's
  vectors, and answer a search.

The killed run is then resumed (same command, ``--if-exists skip``), itself killed at a random
time, and so on until a run completes; the completed index must equal the uninterrupted run
(ids, mention rows, vectors allclose) and hold no leftover file. Each kill is one trial.

Launchers: ``fork`` (default) forks each writer from a server process that imported torch,
transformers and ner_retriever once (multiprocessing's forkserver), so a trial costs the run,
not the 5-15 s interpreter start-up; it runs the CLI's own command function (typer parsing
included). ``exec`` starts ``python -m ner_retriever.cli.main index ...`` for every run.

    python benchmarks/crash_trials.py --trials 50 --seed 0            # figures in RELIABILITY.md
    python benchmarks/crash_trials.py --trials 50 --launcher exec     # real processes, slower
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

# One thread: identical arithmetic in every process, and no OpenMP spin-waits fighting other
# processes for the cores (on a busy 2-core machine that makes a tiny model 1000x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
PRELOAD = ["numpy", "torch", "transformers", "transformers.models.llama.modeling_llama",
           "faiss", "ner_retriever.cli.main", "ner_retriever.retrieve.retriever",
           "ner_retriever.models.encoder", "ner_retriever.indexes.index", "ner_retriever.io.corpus"]
NAMES = ["Paris", "Berlin", "Angela", "Merkel", "Danube", "Vienna", "Toyota", "Corolla", "Marie",
         "Curie", "Nobel", "Lakers", "Ohio", "Amazon", "Seattle", "Everest", "Lennon", "Tokyo"]
WORDS = ["the", "a", "of", "in", "on", "river", "city", "met", "visited", "near", "across",
         "with", "and", "after", "before", "team", "won", "built"]


# -- fixture: tiny model + corpus ---------------------------------------------------------------
def make_fixture(folder: Path, n_docs: int, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """A tiny random Llama (saved with the packaged MiniLM tokenizer) and a CoNLL corpus."""
    import torch
    import transformers as tf
    from transformers import AutoTokenizer

    from ner_retriever.models.loading import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "tiny-llama"
    if not (model_dir / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6")[0])
        torch.manual_seed(seed)
        config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=64, max_position_embeddings=512)
        tf.LlamaModel(config).eval().save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    rng = random.Random(seed)
    ids, lines = [], []
    for i in range(n_docs):
        doc_id = f"d{i:05d}"
        ids.append(doc_id)
        lines.append(f"# id {doc_id}")
        for _ in range(rng.randint(4, 14)):
            if rng.random() < 0.3:
                lines.append(f"{rng.choice(NAMES)}\tB-{rng.choice(['per', 'loc', 'org'])}")
                if rng.random() < 0.3:
                    lines.append(f"{rng.choice(NAMES)}\tI-per")
            else:
                lines.append(f"{rng.choice(WORDS)}\tO")
        lines.append("")
    corpus = folder / "corpus.conll"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model_dir, corpus, ids


def index_argv(corpus: Path, index_dir: Path, model_dir: Path, batch_size: int) -> list[str]:
    return ["index", str(corpus), "--index", str(index_dir), "--model", str(model_dir),
            "--detector", "gold", "--batch-size", str(batch_size), "--if-exists", "skip"]


# -- launchers -----------------------------------------------------------------------------------
def _forked_writer(argv: list[str], log: str) -> None:
    """Child of the fork server: run the CLI command, output to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        from ner_retriever.cli.main import app

        result = app(argv, prog_name="ner-retriever", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported through the exit code and the log
        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Run:
    """One writer process: ``poll()`` -> exit code or None; ``kill()`` sends SIGKILL."""

    def __init__(self, launcher: str, argv: list[str], log: Path, ctx=None):
        self.started = time.perf_counter()
        if launcher == "exec":
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
            self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
            self._proc = subprocess.Popen([sys.executable, "-m", "ner_retriever.cli.main", *argv],
                                          stdout=self._log, stderr=self._log, env=env)
            self._mp = None
        else:
            self._mp = ctx.Process(target=_forked_writer, args=(argv, str(log)), daemon=True)
            self._mp.start()
            self._proc = None

    def poll(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        return self._mp.exitcode

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
        else:
            os.kill(self._mp.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if self._proc is not None:
            try:
                return self._proc.wait(timeout)
            finally:
                self._log.close()
        self._mp.join(timeout)
        if self._mp.exitcode is None:
            raise TimeoutError("writer did not finish")
        return self._mp.exitcode


def _noop() -> None:
    pass


def fork_context():
    """A forkserver that imported everything once (started now, so no run pays for it)."""
    ctx = multiprocessing.get_context("forkserver")
    for folder in (str(SRC), str(Path(__file__).resolve().parent)):  # importable there too
        if folder not in sys.path:
            sys.path.insert(0, folder)
    ctx.set_forkserver_preload([m for m in PRELOAD] + [__name__])
    warm = ctx.Process(target=_noop)
    warm.start()
    warm.join()
    return ctx


# -- reading an index back -----------------------------------------------------------------------
@dataclass
class Snapshot:
    ids: list[str]
    rows: list[tuple]          # (row, doc id, start, end, text, label) in row order
    vectors: np.ndarray        # (rows, dim) in row order
    segments: list[str]
    ntotal: int
    files: list[str] = field(default_factory=list)  # what lies in vectors/
    uncommitted: int = 0       # segment/temp files that no commit references (crash leftovers)


def snapshot(path: Path) -> Snapshot | None:
    """The committed content of an index (None if creation never completed)."""
    from ner_retriever.indexes.index import CATALOG_NAME, Index

    if not Index.exists(path):
        return None
    with Index.open(path) as index:  # verifies config and segment checksums
        db = sqlite3.connect(f"file:{path / CATALOG_NAME}?mode=ro", uri=True)
        try:
            ids = [r[0] for r in db.execute("SELECT id FROM documents ORDER BY key")]
            rows = db.execute(
                "SELECT m.row, d.id, m.start, m.end, m.text, m.label FROM mentions m "
                "JOIN documents d ON d.key = m.doc_key ORDER BY m.row").fetchall()
            (orphans,) = db.execute("SELECT COUNT(*) FROM mentions WHERE doc_key NOT IN "
                                    "(SELECT key FROM documents)").fetchone()
        finally:
            db.close()
        segments = index.segments()
        parts, expect = [], 0
        for seg in segments:
            if seg.first_row != expect:
                raise AssertionError(f"segments not contiguous at row {expect}: {seg}")
            parts.append(np.load(path / "vectors" / seg.name))
            expect += seg.rows
        vectors = (np.concatenate(parts) if parts
                   else np.zeros((0, index.config.dim), np.float32))
        if orphans:
            raise AssertionError(f"{orphans} mention rows without a document")
        if len(rows) and index.ntotal:  # the committed state answers a search
            scores, found = index.search(vectors[:1], 3)
            if not (0 <= found[0, 0] < len(rows)):
                raise AssertionError(f"search returned row {found[0, 0]}")
        ntotal = index.ntotal
    folder = path / "vectors"
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    committed = {s.name for s in segments}
    return Snapshot(ids, rows, vectors, [s.name for s in segments], ntotal, files,
                    sum(1 for f in files if f not in committed))


def check_prefix(snap: Snapshot | None, ref: Snapshot, batch: int) -> int:
    """Assert the index holds whole committed batches equal to the reference; return m."""
    if snap is None:
        return 0
    m = len(snap.ids)
    assert len(set(snap.ids)) == m, "duplicate documents"
    assert snap.ids == ref.ids[:m], "documents are not the corpus prefix in order"
    assert m % batch == 0 or m == len(ref.ids), f"{m} documents is not a whole number of batches"
    n = sum(1 for r in ref.rows if r[1] in set(snap.ids))
    assert snap.rows == ref.rows[:n], "mention rows differ from the uninterrupted run"
    assert snap.ntotal == len(snap.rows) == len(snap.vectors), \
        f"vectors {snap.ntotal}/{len(snap.vectors)} != mention rows {len(snap.rows)}"
    np.testing.assert_allclose(snap.vectors, ref.vectors[:n], rtol=1e-5, atol=1e-6,
                               err_msg="vectors differ from the uninterrupted run")
    return m


def check_complete(snap: Snapshot | None, ref: Snapshot) -> None:
    assert snap is not None, "completed run left no index"
    assert snap.ids == ref.ids and snap.rows == ref.rows and snap.ntotal == ref.ntotal
    np.testing.assert_allclose(snap.vectors, ref.vectors, rtol=1e-5, atol=1e-6)
    assert snap.uncommitted == 0, f"leftover files in vectors/: {snap.files}"


# -- trials --------------------------------------------------------------------------------------
def _first_segment_time(run: Run, index_dir: Path, timeout: float) -> tuple[float | None, int]:
    """Poll until the writer's first segment file appears; returns (seconds, exit code)."""
    first = None
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if first is None and (index_dir / "vectors").is_dir() and any(
                (index_dir / "vectors").iterdir()):
            first = time.perf_counter() - run.started
        code = run.poll()
        if code is not None:
            return first, code
        time.sleep(0.002)
    run.kill()
    raise TimeoutError("reference run timed out")


def run_trials(workdir: Path, trials: int = 50, seed: int = 0, launcher: str = "fork",
               n_docs: int = 240, batch_size: int = 3, startup_share: float = 0.2,
               timeout: float = 300.0, log=print) -> dict:
    """Run ``trials`` kills (plus the resumes that complete each chain); returns the figures.

    Raises AssertionError on the first violated guarantee (the message says which)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, corpus, ids = make_fixture(workdir / "fixture", n_docs, seed)
    ctx = fork_context() if launcher == "fork" else None
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)

    # Uninterrupted reference run (same launcher, same environment), timed.
    ref_dir = workdir / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    run = Run(launcher, index_argv(corpus, ref_dir, model_dir, batch_size), logs / "ref.log", ctx)
    startup, code = _first_segment_time(run, ref_dir, timeout)
    total = time.perf_counter() - run.started
    run.wait(timeout)
    if code != 0:
        output = (logs / "ref.log").read_text() if (logs / "ref.log").is_file() else "no log"
        raise RuntimeError(f"reference run failed ({code}): {output}")
    ref = snapshot(ref_dir)
    assert ref is not None and len(ref.ids) == n_docs and ref.uncommitted == 0
    startup = startup if startup is not None else total
    indexing = max(total - startup, 0.05)
    log(f"reference: {n_docs} documents, {len(ref.rows)} mentions, {n_docs // batch_size} "
        f"batches of {batch_size}; start-up {startup:.2f} s, indexing {indexing:.2f} s "
        f"({launcher} launcher)")

    rng = random.Random(seed)
    stats = {"trials": 0, "chains": 0, "completions": 0, "killed_before_index": 0,
             "killed_with_uncommitted_files": 0, "killed_mid_indexing": 0,
             "killed_after_last_commit": 0, "finished_before_kill": 0,
             "documents_at_kill": [], "check_seconds": 0.0, "runs": 0}
    per_doc = indexing / n_docs  # updated from every run that finishes
    started = time.perf_counter()
    chain = 0
    while stats["trials"] < trials:
        # A chain: a fresh index, 1-5 runs killed at random times, then a resume that must
        # complete to an index identical to the uninterrupted run.
        chain += 1
        stats["chains"] += 1
        chain_dir = workdir / f"chain-{chain:03d}"
        shutil.rmtree(chain_dir, ignore_errors=True)
        log_file = logs / f"{chain_dir.name}.log"
        kills = min(rng.randint(1, 5), trials - stats["trials"])
        finished = False
        for _ in range(kills):
            before = snapshot(chain_dir)
            done = len(before.ids) if before else 0
            remaining = per_doc * (n_docs - done)
            # Mostly during indexing; a share during start-up (creation, corpus validation).
            delay = (rng.uniform(0, startup) if rng.random() < startup_share
                     else startup + rng.uniform(0, remaining))
            run = Run(launcher, index_argv(corpus, chain_dir, model_dir, batch_size), log_file,
                      ctx)
            stats["runs"] += 1
            while time.perf_counter() - run.started < delay and run.poll() is None:
                time.sleep(0.001)
            killed = run.poll() is None
            if killed:
                run.kill()
            code = run.wait(timeout)
            elapsed = time.perf_counter() - run.started
            t0 = time.perf_counter()
            try:
                snap = snapshot(chain_dir)
            except Exception as exc:  # an index that does not open after a kill: failure
                raise AssertionError(f"index {chain_dir} does not open after SIGKILL at "
                                     f"{delay:.3f} s: {exc}") from exc
            if not killed:
                if code != 0:
                    raise AssertionError(f"writer exited with {code}: "
                                         f"{log_file.read_text(errors='replace')[-2000:]}")
                stats["finished_before_kill"] += 1
                if n_docs > done:
                    per_doc = 0.5 * per_doc + 0.5 * max(elapsed - startup, 0.01) / (n_docs - done)
                finished = True
                break
            stats["trials"] += 1
            try:
                m = check_prefix(snap, ref, batch_size)
            except AssertionError as exc:
                raise AssertionError(f"trial {stats['trials']} ({chain_dir}, killed at "
                                     f"{delay:.3f} s): {exc}") from exc
            stats["documents_at_kill"].append(m)
            if snap is None:
                stats["killed_before_index"] += 1
            elif m == n_docs:
                stats["killed_after_last_commit"] += 1
            else:
                stats["killed_mid_indexing"] += 1
            if snap is not None and snap.uncommitted:
                stats["killed_with_uncommitted_files"] += 1
            stats["check_seconds"] += time.perf_counter() - t0
            if stats["trials"] % 10 == 0 or stats["trials"] == trials:
                log(f"  {stats['trials']}/{trials} kills checked "
                    f"({time.perf_counter() - started:.0f} s)")
        if not finished:  # resume without a kill
            run = Run(launcher, index_argv(corpus, chain_dir, model_dir, batch_size), log_file,
                      ctx)
            stats["runs"] += 1
            code = run.wait(timeout)
            if code != 0:
                raise AssertionError(f"resume exited with {code}: "
                                     f"{log_file.read_text(errors='replace')[-2000:]}")
        try:
            check_complete(snapshot(chain_dir), ref)
        except AssertionError as exc:
            raise AssertionError(f"{chain_dir}: resumed index differs from the uninterrupted "
                                 f"run: {exc}") from exc
        stats["completions"] += 1
        shutil.rmtree(chain_dir)
    at_kill = stats.pop("documents_at_kill")
    stats.update({
        "launcher": launcher, "seed": seed, "documents": n_docs, "batch_size": batch_size,
        "mentions": len(ref.rows), "reference_startup_s": round(startup, 3),
        "reference_indexing_s": round(indexing, 3),
        "distinct_kill_states": len(set(at_kill)),
        "documents_at_kill_min_median_max": [min(at_kill), int(np.median(at_kill)), max(at_kill)]
        if at_kill else None,
        "check_seconds": round(stats["check_seconds"], 2),
        "seconds": round(time.perf_counter() - started, 1),
        "failures": 0,
    })
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="SIGKILLs (each one checked)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launcher", choices=["fork", "exec"], default="fork")
    parser.add_argument("--docs", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the indexes and logs here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="crash-trials-")
        workdir = Path(tmp)
    try:
        stats = run_trials(workdir, args.trials, args.seed, args.launcher, args.docs,
                           args.batch_size)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(stats, indent=1))
        return
    print(f"{stats['trials']} SIGKILL trials, {stats['failures']} failures "
          f"({stats['launcher']} launcher, seed {stats['seed']}, {stats['seconds']} s)")
    print(f"  corpus: {stats['documents']} documents, {stats['mentions']} mentions, "
          f"batches of {stats['batch_size']}")
    print(f"  kills before the index existed: {stats['killed_before_index']}; during indexing: "
          f"{stats['killed_mid_indexing']}; after the last commit: "
          f"{stats['killed_after_last_commit']}")
    print(f"  kills that left an uncommitted segment or temp file: "
          f"{stats['killed_with_uncommitted_files']}")
    print(f"  distinct committed states seen at a kill: {stats['distinct_kill_states']} "
          f"(documents min/median/max {stats['documents_at_kill_min_median_max']})")
    print(f"  chains resumed to completion, each identical to the uninterrupted run: "
          f"{stats['completions']} (writer runs {stats['runs']}, "
          f"{stats['finished_before_kill']} finished before their kill time)")


if __name__ == "__main__":
    main()
