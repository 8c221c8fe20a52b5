"""Soak test of ``ner-retriever serve`` on loopback: mixed search/add load for a bounded time.

Builds a small index (``ner-retriever index``), starts ``ner-retriever serve INDEX --host
127.0.0.1 --write-token ...`` on a free port, and runs N concurrent clients for a fixed duration
(and at most ``--max-requests`` requests): mostly ``GET /search``, some ``POST /documents`` of
1-3 new documents, some ``GET /documents/{id}`` and a few deliberately invalid requests (bad
token, bad parameters, duplicate ids) that must be 4xx. It samples the server's resident
memory (RSS) throughout. Then it checks:

* zero 5xx and zero transport errors (timeouts, resets);
* zero lost writes: every document acknowledged by a 201 is served by ``GET /documents/{id}``
  and counted by ``/health``, before and after the server is killed with SIGKILL and
  restarted, and its mention vectors are in the searchable store (each one's nearest
  neighbour is itself), checked offline on the index files;
* memory: RSS after warm-up vs at the end, next to what the added vectors account for.

It talks to 127.0.0.1 only and stops by itself. Exit status 1 if a check fails.

    python benchmarks/soak.py --seconds 300 --clients 8            # figures in RELIABILITY.md
    python benchmarks/soak.py --seconds 20 --clients 4 --model PATH --detector spacy-ents
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = "soak-token-" + "0123456789abcdef"
PEOPLE = ["Angela Merkel", "Emmanuel Macron", "Marie Curie", "Lionel Messi", "Serena Williams",
          "Barack Obama", "Olaf Scholz", "Paul McCartney", "Ada Lovelace", "Nelson Mandela"]
PLACES = ["Paris", "Berlin", "Vienna", "Tokyo", "Seattle", "Budapest", "Lisbon", "Nairobi",
          "Toronto", "Oslo"]
ORGS = ["Toyota", "Amazon", "the United Nations", "Microsoft", "Ferrari", "the Lakers",
        "Greenpeace", "Siemens", "the BBC", "Interpol"]
TEMPLATES = [
    "{p} met {q} in {c} to discuss a deal with {o}.",
    "{o} opened a new office in {c}, led by {p}.",
    "In {c}, {p} and {q} spoke about {o} and the budget.",
    "{p} visited {c} before flying to {d} with {q}.",
]
QUERIES = ["politician", "city", "company", "athlete", "scientist", "musician", "country",
           "capital city", "sports team", "organization", "car maker", "person", "river",
           "head of state", "tech company", "football player"]


def make_text(rng: random.Random, tag: str) -> str:
    p, q = rng.sample(PEOPLE, 2)
    c, d = rng.sample(PLACES, 2)
    body = rng.choice(TEMPLATES).format(p=p, q=q, c=c, d=d, o=rng.choice(ORGS))
    return f"Report {tag}: {body}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


# -- index and server -----------------------------------------------------------------------------
def build_index(workdir: Path, model: str | None, detector: str, docs: int, seed: int) -> Path:
    """A base index of ``docs`` generated documents, built by the CLI."""
    rng = random.Random(seed)
    corpus = workdir / "base.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"base-{i}", "text": make_text(rng, f"b{i}")})
                              + "\n" for i in range(docs)))
    index = workdir / "index"
    cmd = [sys.executable, "-m", "ner_retriever.cli.main", "index", str(corpus), "--index",
           str(index), "--detector", detector]
    if model:
        cmd += ["--model", model]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return index


class Server:
    """``ner-retriever serve`` in a child process, on 127.0.0.1 only."""

    def __init__(self, index: Path, log: Path, token: str | None = TOKEN):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "ner_retriever.cli.main", "serve", str(index), "--host",
               "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = _env()
        if token:
            env["NER_RETRIEVER_WRITE_TOKEN"] = token
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=self._log)

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)
        self._log.close()


# -- load -----------------------------------------------------------------------------------------
@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)      # (op, status) -> count
    latencies: dict = field(default_factory=dict)           # op -> [seconds]
    acked: dict = field(default_factory=dict)               # doc id -> text
    transport_errors: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)          # (op, status, body) that broke rules
    requests: int = 0

    def record(self, op: str, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[(op, status)] += 1
            self.latencies.setdefault(op, []).append(seconds)


def client_loop(cid: int, url: str, deadline: float, budget: list[int], tally: Tally,
                add_share: float, bad_share: float, seed: int) -> None:
    rng = random.Random(seed * 1000 + cid)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seq = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            with tally.lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
                tally.requests += 1
            roll = rng.random()
            started = time.perf_counter()
            try:
                if roll < bad_share:
                    op, response, expect = _bad_request(http, rng, auth)
                    ok = response.status_code in expect
                elif roll < bad_share + add_share:
                    op = "add"
                    seq += 1
                    docs = [{"id": f"soak-{cid}-{seq}-{j}",
                             "text": make_text(rng, f"c{cid}-{seq}-{j}")}
                            for j in range(rng.randint(1, 3))]
                    response = http.post("/documents", json={"documents": docs}, headers=auth)
                    ok = response.status_code == 201
                    if ok:
                        body = response.json()
                        ok = body["added"] == len(docs)
                        with tally.lock:
                            tally.acked.update({d["id"]: d["text"] for d in docs})
                elif roll < bad_share + add_share + 0.1 and tally.acked:
                    op = "get"
                    with tally.lock:
                        doc_id = rng.choice(list(tally.acked))
                    response = http.get(f"/documents/{quote(doc_id, safe='')}")
                    ok = response.status_code == 200 and response.json()["id"] == doc_id
                else:
                    op = "search"
                    q = rng.choice(QUERIES) if rng.random() < 0.7 else \
                        f"{rng.choice(QUERIES)} {rng.randint(0, 10_000)}"
                    response = http.get("/search", params={"q": q, "k": rng.choice([5, 10, 20])})
                    ok = response.status_code == 200 and len(response.json()["results"]) <= 20
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.transport_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            tally.record(op, response.status_code, time.perf_counter() - started)
            if not ok or response.status_code >= 500:
                with tally.lock:
                    tally.unexpected.append((op, response.status_code, response.text[:300]))


def _bad_request(http: httpx.Client, rng: random.Random, auth: dict):
    """A request that must be refused with a 4xx (and never change the index)."""
    kind = rng.randrange(5)
    if kind == 0:
        return "bad-token", http.post("/documents", json={"documents": [
            {"id": "never", "text": "Oslo."}]}, headers={"Authorization": "Bearer nope"}), {401}
    if kind == 1:
        return "bad-k", http.get("/search", params={"q": "city", "k": 0}), {422}
    if kind == 2:
        return "bad-json", http.post("/documents", content=b"{not json", headers={
            **auth, "Content-Type": "application/json"}), {400}
    if kind == 3:
        return "duplicate", http.post("/documents", json={"documents": [
            {"id": "base-0", "text": "Oslo."}]}, headers=auth), {409}
    return "missing-doc", http.get("/documents/no-such-document"), {404}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- checks ---------------------------------------------------------------------------------------
def check_served(url: str, acked: dict, base_docs: int) -> dict:
    """Every acknowledged document is served with its text; /health counts them all."""
    missing, wrong = [], []
    with httpx.Client(base_url=url, timeout=60) as http:
        count = http.get("/health").json()["documents"]
        for doc_id, text in acked.items():
            response = http.get(f"/documents/{quote(doc_id, safe='')}")
            if response.status_code != 200:
                missing.append(doc_id)
            elif response.json()["text"] != text or not response.json()["mentions"]:
                wrong.append(doc_id)
        search = http.get("/search", params={"q": "politician", "k": 10})
    return {"documents": count, "expected": base_docs + len(acked), "missing": missing,
            "wrong": wrong, "search_status": search.status_code}


def check_vectors(index_path: Path, acked: dict) -> dict:
    """Offline: each acknowledged document's mentions are in the searchable store, and each
    mention vector's nearest neighbour is itself (same score as the best hit)."""
    import numpy as np

    from ner_retriever.indexes.index import CATALOG_NAME, Index

    not_found = []
    with Index.open(index_path) as index:
        vectors = np.concatenate([np.load(index_path / "vectors" / s.name)
                                  for s in index.segments()]).astype(np.float32)
        db = sqlite3.connect(f"file:{index_path / CATALOG_NAME}?mode=ro", uri=True)
        try:
            for doc_id in acked:
                found = db.execute("SELECT d.key, m.row FROM documents d JOIN mentions m "
                                   "ON m.doc_key = d.key WHERE d.id = ?", (doc_id,)).fetchall()
                if not found:
                    not_found.append(doc_id)
                    continue
                key, row = found[-1]
                scores, rows = index.search(vectors[row][None], 5)
                keys = index.row_doc_keys(rows[0])
                best = scores[0][0]
                tied = {int(k) for k, s in zip(keys, scores[0]) if s >= best - 1e-4}
                self_score = float(vectors[row] @ vectors[row])
                if key not in tied or abs(best - self_score) > 1e-3:
                    not_found.append(doc_id)
        finally:
            db.close()
        total = (len(index), index.num_mentions(), index.ntotal)
    return {"not_searchable": not_found, "documents": total[0], "mentions": total[1],
            "vectors": total[2]}


# -- the run --------------------------------------------------------------------------------------
def run_soak(index: Path, seconds: float = 300, clients: int = 8, max_requests: int = 200_000,
             add_share: float = 0.15, bad_share: float = 0.05, seed: int = 0,
             restart: str = "kill", workdir: Path | None = None, log=print) -> dict:
    workdir = workdir or index.parent
    from ner_retriever.indexes.index import Index

    with Index.open(index) as idx:
        base_docs, dim = len(idx), idx.config.dim
    server = Server(index, workdir / "server.log")
    try:
        ready = server.wait_ready()
        log(f"server ready in {ready:.1f} s on {server.url} (pid {server.proc.pid}); "
            f"{clients} clients for {seconds:.0f} s")
        tally = Tally()
        budget = [max_requests]
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        deadline = start + seconds
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                value = rss_mb(server.proc.pid)
                if value is not None:
                    samples.append((time.monotonic() - start, value))
                stop.wait(min(5.0, max(seconds / 60, 0.5)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client_loop, args=(
            c, server.url, deadline, budget, tally, add_share, bad_share, seed), daemon=True)
            for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 600)
        elapsed = time.monotonic() - start
        stop.set()
        sampler.join(timeout=30)
        log(f"load done: {tally.requests} requests in {elapsed:.1f} s; checking")
        before = check_served(server.url, tally.acked, base_docs)
        rss_end = rss_mb(server.proc.pid)
        server.stop(signal.SIGKILL if restart == "kill" else signal.SIGTERM)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    # restart (after SIGKILL: no shutdown hook ran) and check again
    server = Server(index, workdir / "server.log")
    try:
        restart_ready = server.wait_ready()
        after = check_served(server.url, tally.acked, base_docs)
    finally:
        server.stop()
    vectors = check_vectors(index, tally.acked)

    statuses = Counter()
    for (_op, status), n in tally.statuses.items():
        statuses[status] += n
    fivexx = sum(n for s, n in statuses.items() if s >= 500)
    warm = [v for t, v in samples if t >= elapsed * 0.2] or [v for _, v in samples]
    rss = {"start_mb": round(samples[0][1], 1) if samples else None,
           "after_warmup_mb": round(warm[0], 1) if warm else None,
           "max_mb": round(max(v for _, v in samples), 1) if samples else None,
           "end_mb": round(rss_end, 1) if rss_end else None,
           "samples": len(samples)}
    added_mentions = vectors["mentions"]  # all rows; flat store keeps one float32 vector each
    result = {
        "seconds": round(elapsed, 1), "clients": clients, "requests": tally.requests,
        "requests_per_s": round(tally.requests / elapsed, 1),
        "by_op": {op: {"count": len(v), "p50_ms": round(1000 * statistics.median(v), 1),
                       "p95_ms": round(1000 * percentile(v, 0.95), 1),
                       "p99_ms": round(1000 * percentile(v, 0.99), 1)}
                  for op, v in sorted(tally.latencies.items())},
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": fivexx, "transport_errors": len(tally.transport_errors),
        "unexpected": tally.unexpected[:10], "unexpected_count": len(tally.unexpected),
        "acknowledged_documents": len(tally.acked), "base_documents": base_docs,
        "served_before_restart": {k: (len(v) if isinstance(v, list) else v)
                                  for k, v in before.items()},
        "served_after_restart": {k: (len(v) if isinstance(v, list) else v)
                                 for k, v in after.items()},
        "not_searchable": len(vectors["not_searchable"]),
        "index": {k: vectors[k] for k in ("documents", "mentions", "vectors")},
        "restart": restart, "restart_ready_s": round(restart_ready, 1),
        "rss": rss, "vector_bytes_per_mention": dim * 4,
        "vectors_mb_total": round(added_mentions * dim * 4 / 2**20, 1),
        "rss_timeline": [(round(t, 1), round(v, 1)) for t, v in samples],
    }
    lost = (len(before["missing"]) + len(before["wrong"]) + len(after["missing"])
            + len(after["wrong"]) + len(vectors["not_searchable"])
            + abs(before["documents"] - before["expected"])
            + abs(after["documents"] - after["expected"]))
    result["lost_writes"] = lost
    result["passed"] = (fivexx == 0 and not tally.transport_errors and not tally.unexpected
                        and lost == 0 and before["search_status"] == after["search_status"]
                        == 200)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--add-share", type=float, default=0.15)
    parser.add_argument("--bad-share", type=float, default=0.05)
    parser.add_argument("--base-docs", type=int, default=200)
    parser.add_argument("--model", default=None, help="default: the CLI's (smollm2-135m)")
    parser.add_argument("--detector", default="spacy")
    parser.add_argument("--restart", choices=["kill", "term"], default="kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="soak-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.monotonic()
        index = build_index(workdir, args.model, args.detector, args.base_docs, args.seed)
        print(f"base index: {args.base_docs} documents in {time.monotonic() - t0:.1f} s "
              f"(model {args.model or 'smollm2-135m'}, detector {args.detector}); "
              f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
        result = run_soak(index, args.seconds, args.clients, args.max_requests, args.add_share,
                          args.bad_share, args.seed, args.restart, workdir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    timeline = result.pop("rss_timeline")
    print(json.dumps(result, indent=1))
    print("rss timeline (s, MB):", timeline[:: max(1, len(timeline) // 20)])
    print("PASSED" if result["passed"] else "FAILED")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
