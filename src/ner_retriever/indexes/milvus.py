"""Milvus store: rows in a Milvus collection with primary key = global row; a local path URI
runs embedded Milvus Lite, ``http://host:19530`` a Milvus server. Rows past the catalog's
last committed row are crash leftovers: ignored by searches, deleted by the next writer.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ner_retriever.errors import ConfigError, IndexStateError
from ner_retriever.indexes.base import (DEFAULT_PARAMS, DEFAULT_STORAGE, Segment, empty_result,
                                        is_server_uri)
from ner_retriever.indexes.faiss_build import pq_subquantizers

# -- Milvus ----------------------------------------------------------------------------------
MILVUS_MAX_TOPK = 16384
_MILVUS_INDEX = {"flat": "FLAT", "hnsw": "HNSW", "ivfpq": "IVF_PQ"}


class MilvusStore:
    """Mention vectors in a Milvus collection (Milvus Lite for a local path, or a server).

    Visibility comes from the catalog: only rows below the last committed row are searched."""

    INSERT_BATCH = 5000

    def __init__(self, folder: str | Path, dim: int, *, index_type: str = "flat",
                 storage: str | None = None, uri: str | None = None,
                 params: dict[str, Any] | None = None, writable: bool = False):
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no fork() notes when Ray starts
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise ConfigError("the milvus store needs pymilvus (and milvus-lite for a local "
                              "file): pip install pymilvus milvus-lite") from None
        self.folder = Path(folder)
        self.dim = dim
        self.index_type = index_type
        self.storage = storage or DEFAULT_STORAGE[index_type]
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.collection = str(self.params.get("collection") or "ner_retriever_mentions")
        self.writable = writable
        uri = uri or "milvus.db"
        if not is_server_uri(uri) and not Path(uri).is_absolute():
            uri = str(self.folder.parent / uri)  # relative to the index folder
        self.uri = uri
        try:
            self._client = MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
        except Exception as exc:  # noqa: BLE001 - lock errors, connection errors, ...
            raise IndexStateError(f"cannot open Milvus at {uri}: {exc} (a Milvus Lite file "
                                  f"can be opened by one process at a time)") from exc
        self._fp16 = self.storage == "fp16"
        self._end = 0          # rows below this are committed (visible)
        self._rows = 0
        self._written_end = 0  # rows this process inserted but may not have committed
        self._checked = False
        if not self._client.has_collection(self.collection):
            self._create(DataType)
        else:
            self._check_schema()
        self._client.load_collection(self.collection)

    def _create(self, DataType) -> None:
        p = self.params
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT16_VECTOR if self._fp16 else
                         DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        if self.index_type == "hnsw":
            extra = {"M": int(p["hnsw_m"]), "efConstruction": int(p["ef_construction"])}
        elif self.index_type == "ivfpq":
            extra = {"nlist": int(p["nlist"] or 1024),
                     "m": int(p["pq_m"] or pq_subquantizers(self.dim)),
                     "nbits": int(p["pq_nbits"])}
        else:
            extra = {}
        index_params.add_index(field_name="vector", index_type=_MILVUS_INDEX[self.index_type],
                               metric_type="IP", params=extra)
        try:
            self._client.create_collection(self.collection, schema=schema,
                                           index_params=index_params)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"Milvus at {self.uri} refused collection {self.collection} "
                              f"({self.index_type}, {self.storage}): {exc}") from exc

    def _check_schema(self) -> None:
        desc = self._client.describe_collection(self.collection)
        for field in desc.get("fields", []):
            if field.get("name") == "vector":
                dim = int(field.get("params", {}).get("dim", self.dim))
                if dim != self.dim:
                    raise IndexStateError(f"Milvus collection {self.collection} holds {dim}-d "
                                          f"vectors, the index expects {self.dim}-d")

    def write_segment(self, first_row: int, vectors: np.ndarray) -> Segment:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        if first_row < self._written_end:  # an earlier write of ours was never committed
            self._client.delete(self.collection, filter=f"row >= {first_row}")
        data = vectors.astype(np.float16) if self._fp16 else vectors
        for start in range(0, len(data), self.INSERT_BATCH):
            chunk = data[start:start + self.INSERT_BATCH]
            self._client.insert(self.collection, [
                {"row": first_row + start + i, "vector": v} for i, v in enumerate(chunk)])
        self._client.flush(self.collection)
        self._written_end = first_row + len(vectors)
        digest = hashlib.sha256(vectors.tobytes()).hexdigest()
        return Segment(f"milvus-{first_row:012d}-{len(vectors)}", first_row, len(vectors), digest)

    def _count(self, end: int) -> int:
        res = self._client.query(self.collection, filter=f"row < {end}",
                                 output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def load(self, segments: Sequence[Segment], dead_rows: np.ndarray | None = None) -> None:
        if not segments:
            return
        end = max(s.first_row + s.rows for s in segments)
        if end <= self._end:
            return
        added = sum(s.rows for s in segments if s.first_row >= self._end)
        if not self._checked:  # on open: the collection must hold every committed live row
            expected = sum(s.rows for s in segments)
            dead = np.asarray(dead_rows if dead_rows is not None else [], np.int64)
            dead = dead[dead < end]
            found = self._count(end)
            if not expected - len(dead) <= found <= expected:
                raise IndexStateError(f"Milvus collection {self.collection} at {self.uri} holds "
                                      f"{found} of the {expected - len(dead)} committed live "
                                      f"mention rows")
            if found > expected - len(dead) and self.writable:
                self.remove(dead)  # a writer killed between its delete commit and this
            self._checked = True
            self._rows = expected
        else:
            self._rows += added
        self._end = end

    def discard_uncommitted(self, committed: Sequence[Segment]) -> None:
        end = max((s.first_row + s.rows for s in committed), default=0)
        self._client.delete(self.collection, filter=f"row >= {end}")
        self._client.flush(self.collection)

    # -- deletion and compaction ---------------------------------------------------------------
    def remove(self, rows: np.ndarray) -> None:
        """Delete the rows from the collection (ids already gone are no error)."""
        rows = [int(r) for r in np.asarray(rows).ravel()]
        for start in range(0, len(rows), self.INSERT_BATCH):
            self._client.delete(self.collection, ids=rows[start:start + self.INSERT_BATCH])
        if rows:
            self._client.flush(self.collection)

    def rewrite(self, live_rows: np.ndarray) -> None:
        """Rows keep their numbers: make sure every dead row is deleted, then let Milvus
        compact its files (Milvus Lite may not; then its space is reused by later inserts)."""
        self.remove(np.setdiff1d(np.arange(self._end, dtype=np.int64), live_rows))
        try:
            self._client.compact(self.collection)
        except Exception:  # noqa: BLE001 - not every deployment compacts on request
            pass
        return None

    def adopt(self, segments: list[Segment] | None, live_rows: np.ndarray) -> None:
        """Nothing to switch: the rows stayed where they were."""

    def _search_params(self, k: int) -> dict[str, Any]:
        p = self.params
        if self.index_type == "hnsw":
            return {"metric_type": "IP", "params": {"ef": max(int(p["ef_search"]), k)}}
        if self.index_type == "ivfpq":
            return {"metric_type": "IP", "params": {"nprobe": int(p["nprobe"])}}
        return {"metric_type": "IP", "params": {}}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ntotal == 0:
            return empty_result(len(queries))
        k = max(1, min(k, self.ntotal))
        data = [q.astype(np.float16) if self._fp16 else q for q in queries]
        if k <= MILVUS_MAX_TOPK:
            hits = self._client.search(self.collection, data=data, limit=k,
                                       filter=f"row < {self._end}", output_fields=["row"],
                                       search_params=self._search_params(k))
        else:  # past Milvus' top-k limit: page through with a search iterator
            hits = [self._iterate(q, k) for q in data]
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, found in enumerate(hits):
            found = list(found)[:k]
            if found:
                rows[i, :len(found)] = [h["row"] if "row" in h else h["id"] for h in found]
                scores[i, :len(found)] = [h["distance"] for h in found]
        return scores, rows

    def _iterate(self, query, k: int) -> list[dict]:
        it = self._client.search_iterator(self.collection, data=[query], limit=k,
                                          batch_size=min(MILVUS_MAX_TOPK, k),
                                          filter=f"row < {self._end}", output_fields=["row"],
                                          search_params=self._search_params(MILVUS_MAX_TOPK))
        out: list[dict] = []
        try:
            while len(out) < k:
                batch = it.next()
                if not batch:
                    break
                out.extend(batch)
        finally:
            it.close()
        return out

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = [int(r) for r in np.asarray(rows).ravel()]
        out = np.zeros((len(rows), self.dim), np.float32)
        if not rows:
            return out
        found = {}
        for start in range(0, len(rows), self.INSERT_BATCH):
            for hit in self._client.get(self.collection, ids=rows[start:start + self.INSERT_BATCH],
                                        output_fields=["row", "vector"]):
                vector = hit["vector"]
                if isinstance(vector, (bytes, bytearray)):  # float16 vectors come back as bytes
                    vector = np.frombuffer(vector, dtype=np.float16)
                elif isinstance(vector, list) and vector and isinstance(vector[0], bytes):
                    vector = np.frombuffer(vector[0], dtype=np.float16)
                found[int(hit["row"])] = np.asarray(vector, dtype=np.float32)
        for i, row in enumerate(rows):
            if row not in found or row >= self._end:
                raise IndexStateError(f"Milvus collection {self.collection} at {self.uri} holds "
                                      f"no committed vector for row {row}")
            out[i] = found[row]
        return out

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing twice or a dropped connection
            pass

    @property
    def ntotal(self) -> int:
        return self._rows
