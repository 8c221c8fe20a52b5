"""Bounded loopback load test for ``ner-retriever serve``: latency percentiles and throughput.

Starts ``ner-retriever serve INDEX`` on a free loopback port (or uses ``--url`` of a server
already running on this machine), then sends a fixed number of ``GET /search`` requests from
N concurrent clients, in two phases:

* uncached: every query is new, so each one needs the model (micro-batched by the server);
* cached: a few queries repeated, so the query vector comes from the LRU cache and only the
  ranking runs.

It stops by itself after the fixed number of requests and never talks to anything but
127.0.0.1 / localhost.

    python benchmarks/serve_load.py /tmp/nr-sample --requests 300 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ADJECTIVES = ["famous", "european", "american", "asian", "ancient", "modern", "small", "large",
              "british", "french", "german", "italian", "japanese", "african", "fictional",
              "professional", "national", "private", "public", "military"]
NOUNS = ["politician", "river", "car model", "sports team", "award", "city", "musician",
         "company", "athlete", "actor", "writer", "scientist", "airport", "island", "mountain",
         "university", "newspaper", "ship", "aircraft", "band", "film", "novel", "church",
         "painter", "disease", "software", "game", "language", "election", "battle"]
CACHED = ["politician", "river", "car model", "sports team", "award", "city", "musician",
          "company"]


def fresh_queries(n: int, tag: str = "") -> list[str]:
    """``n`` distinct entity-type phrases ("famous politician", ...)."""
    combos = [f"{a} {b}" for a, b in itertools.product(ADJECTIVES, NOUNS)]
    return [combos[i % len(combos)] + (f" {i // len(combos)}" if i >= len(combos) else "") + tag
            for i in range(n)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def run_phase(url: str, queries: list[str], concurrency: int, k: int) -> dict:
    """Send every query once, ``concurrency`` requests in flight at a time."""
    latencies: list[float] = []
    errors: list[str] = []
    cached = 0
    todo = iter(queries)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal cached
            for query in todo:
                start = time.perf_counter()
                try:
                    response = await client.get("/search", params={"q": query, "k": k})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                elif response.json()["cached"]:
                    cached += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return {"requests": len(queries), "concurrency": concurrency, "errors": len(errors),
            "first_error": errors[0] if errors else None, "cached_responses": cached,
            "p50_ms": round(percentile(ms, 0.50), 2), "p95_ms": round(percentile(ms, 0.95), 2),
            "p99_ms": round(percentile(ms, 0.99), 2), "max_ms": round(max(ms, default=0), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
            "req_per_s": round(len(latencies) / elapsed, 1), "seconds": round(elapsed, 2)}


def start_server(index: Path, port: int, max_batch: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NER_RETRIEVER_WRITE_TOKEN", None)  # read-only
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "ner_retriever.cli.main", "serve", str(index), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--max-batch", str(max_batch)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", nargs="?", type=Path, help="index directory to serve")
    parser.add_argument("--url", help="use a server already running on loopback instead")
    parser.add_argument("--requests", type=int, default=300, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in flight")
    parser.add_argument("--k", type=int, default=10, help="results per request")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="server's micro-batch size (1 = no batching)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 256:
        parser.error("--requests must be 1..100000 and --concurrency 1..256")
    if (args.index is None) == (args.url is None):
        parser.error("give an index directory or --url, not both")

    proc = None
    if args.url:
        url = args.url.rstrip("/")
        if urlsplit(url).hostname not in LOOPBACK:
            parser.error("--url must point at this machine (127.0.0.1, localhost or ::1)")
    else:
        url = f"http://127.0.0.1:{free_port()}"
        proc = start_server(args.index, int(url.rsplit(":", 1)[1]), args.max_batch)
    try:
        startup = wait_ready(url, proc)
        index_stats = httpx.get(f"{url}/stats", timeout=30).json()
        # warm-up: the cached phase's queries, one at a time (also loads anything lazy)
        asyncio.run(run_phase(url, CACHED, 1, args.k))
        before = httpx.get(f"{url}/stats", timeout=30).json()["server"]["query_cache"]
        tag = f" {time.time_ns() % 10**6}" if args.url else ""  # new strings for a warm server
        uncached = fresh_queries(args.requests, tag)
        results = {"uncached": asyncio.run(run_phase(url, uncached, args.concurrency, args.k))}
        between = httpx.get(f"{url}/stats", timeout=30).json()["server"]["query_cache"]
        cached = list(itertools.islice(itertools.cycle(CACHED), args.requests))
        results["cached"] = asyncio.run(run_phase(url, cached, args.concurrency, args.k))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    batches = between["batches"] - before["batches"]
    embedded = between["embedded"] - before["embedded"]
    report = {"index_documents": index_stats["documents"],
              "index_mentions": index_stats["mentions"], "model": index_stats["model"],
              "server_startup_s": round(startup, 1), "k": args.k, "max_batch": args.max_batch,
              "phases": results,
              "uncached_model_calls": batches,
              "uncached_mean_batch": round(embedded / max(batches, 1), 2),
              "largest_batch": between["largest_batch"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"index: {report['index_documents']} documents, {report['index_mentions']} mentions, "
          f"model {report['model']}; server ready in {report['server_startup_s']} s; "
          f"k={args.k}, max_batch={args.max_batch}")
    print(f"{'phase':<9} {'requests':>8} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'req/s':>7} {'errors':>6}")
    for name, r in results.items():
        print(f"{name:<9} {r['requests']:>8} {r['concurrency']:>7} {r['p50_ms']:>8} "
              f"{r['p95_ms']:>8} {r['p99_ms']:>8} {r['req_per_s']:>7} {r['errors']:>6}")
    print(f"uncached phase: {embedded} queries embedded in {batches} model calls "
          f"(mean batch {report['uncached_mean_batch']}, largest {report['largest_batch']})")
    if any(r["errors"] for r in results.values()):
        first = next(r["first_error"] for r in results.values() if r["errors"])
        raise SystemExit(f"errors during the run, first: {first}")


if __name__ == "__main__":
    main()
