"""The query hot path: one model, concurrent queries micro-batched, repeated queries cached.

Every model call of the server goes through :class:`LockedEncoder`, because the encoder
registers forward hooks on shared modules and must not run twice at once. Query embedding runs
on one worker thread that collects the queries waiting (up to ``max_batch``, for at most
``max_wait`` seconds after the first) and embeds them in one forward pass; while it runs, the
next batch fills up. Identical queries in flight share one future; finished vectors go into an
LRU cache, so a repeated query needs no model call at all.
"""

from __future__ import annotations

import functools
import inspect
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

_STOP = object()


def _settle(future: Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Resolve a future unless a waiter already cancelled it."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(encoder: Any) -> threading.RLock:
    with _LOCKS_GUARD:
        try:
            return _LOCKS.setdefault(encoder, threading.RLock())
        except TypeError:  # not weak-referenceable: a lock of its own
            return threading.RLock()


class LockedEncoder:
    """Wraps an encoder so that query and document embedding never run concurrently.

    Document embedding takes the lock a few documents at a time, so searches still get model
    time while a large ``POST /documents`` is being embedded."""

    def __init__(self, inner: Any, docs_per_turn: int = 8):
        self._inner = inner
        self._lock = _lock_for(inner)  # one lock per model, however many apps share it
        self.docs_per_turn = docs_per_turn

    def __getattr__(self, name: str) -> Any:
        """Attributes (config, dim, ...) pass through; any other public method runs under the
        lock too (``detect_encode``, ``encode_targets``, ...), since they all use the model."""
        value = getattr(self._inner, name)
        if name.startswith("_") or not inspect.ismethod(value):  # model, tokenizer stay as is
            return value

        @functools.wraps(value)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray:
        with self._lock:
            return self._inner.encode_queries(queries, batch_size)

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int = 16) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        step = self.docs_per_turn
        for i in range(0, len(texts), step):
            with self._lock:
                out.extend(self._inner.encode_spans(texts[i: i + step], spans[i: i + step],
                                                    batch_size))
        return out


class LRUCache:
    """A small thread-safe LRU map (query text -> read-only vector)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class QueryEmbedder:
    """``submit(query)`` returns ``(future, cached)``; the future resolves to the query vector."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], cache_size: int = 4096,
                 max_batch: int = 32, max_wait: float = 0.002):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._embed = embed
        self.cache = LRUCache(cache_size)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.hits = self.misses = self.batches = self.embedded = self.largest_batch = 0

    # -- client side ---------------------------------------------------------------------------
    def submit(self, query: str) -> tuple[Future, bool]:
        key = query.strip()  # the encoder strips too: " river" and "river" are one query
        with self._lock:
            vector = self.cache.get(key)
            if vector is not None:
                self.hits += 1
                done: Future = Future()
                done.set_result(vector)
                return done, True
            self.misses += 1
            future = self._pending.get(key)
            if future is not None:  # the same query is already being embedded
                return future, False
            future = self._pending[key] = Future()
            self._ensure_started()
        self._queue.put(key)
        return future, False

    def embed(self, query: str, timeout: float | None = None) -> np.ndarray:
        """Blocking convenience wrapper around :meth:`submit`."""
        return self.submit(query)[0].result(timeout)

    def stats(self) -> dict[str, Any]:
        return {"cache_size": len(self.cache), "cache_capacity": self.cache.size,
                "hits": self.hits, "misses": self.misses, "batches": self.batches,
                "embedded": self.embedded, "largest_batch": self.largest_batch,
                "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000}

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=30)
        with self._lock:  # queued behind the stop: tell the waiters instead of hanging them
            left, self._pending = list(self._pending.values()), {}
        for future in left:
            _settle(future, exception=RuntimeError("the query embedder was closed"))

    # -- worker --------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ner-retriever-embed",
                                            daemon=True)
            self._thread.start()

    def _collect(self, first: str) -> tuple[list[str], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            try:
                vectors = np.asarray(self._embed(batch), dtype=np.float32)
            except BaseException as exc:  # hand the error to every waiting request
                with self._lock:
                    futures = [self._pending.pop(key) for key in batch]
                for future in futures:
                    _settle(future, exception=exc)
            else:
                with self._lock:
                    self.batches += 1
                    self.embedded += len(batch)
                    self.largest_batch = max(self.largest_batch, len(batch))
                    futures = []
                    for key, vector in zip(batch, vectors, strict=True):
                        vector = vector.copy()
                        vector.setflags(write=False)
                        self.cache.put(key, vector)
                        futures.append((self._pending.pop(key), vector))
                for future, vector in futures:
                    _settle(future, result=vector)
            if stop:
                return
