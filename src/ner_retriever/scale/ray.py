"""Distributed indexing on Ray Data: detection + encoding in an actor pool, one writer.

The expensive part of indexing is the language model's forward pass, so that is what runs in
parallel: ``map_batches`` over an actor pool whose actors load the detector, encoder and head
once, take a shard of documents and hand back mentions and vectors. The driver is the single
writer: it commits each shard to the index (catalog + store) as it arrives, in corpus order, so

* results are the same as the single-process path (same documents, same shards, the same code
  per shard: vectors agree to float tolerance and rows come out in the same order), and
* an interrupted run keeps every committed shard; rerunning with ``if_exists="skip"`` drops the
  documents already in the catalog before they reach the actors.

Input: the project's readers (JSONL, text, folder, CoNLL) run on the driver, which validates the
corpus and ships it to the cluster in shards; Parquet files (columns ``id`` and ``text``, other
columns become metadata) are read by Ray itself, in parallel, which is the format to use when
the corpus does not fit the driver's memory. Without an address a local Ray instance is started.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ner_retriever.errors import (ConfigError, CorpusError, DuplicateDocumentError,
                                  IndexStateError)
from ner_retriever.indexes.schema import DenseRecord
from ner_retriever.types import Document

Progress = Callable[[int, int], None]  # (documents, mentions) committed
LIGHT_CPUS = 0.1  # CPU request of Ray's reading and filtering tasks
MIN_ACTOR_CPUS = 0.25  # an actor's smallest CPU reservation


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


def is_parquet(corpus: Path, fmt: str) -> bool:
    if fmt == "parquet":
        return True
    if fmt != "auto":
        return False
    if corpus.is_dir():
        return any(corpus.glob("*.parquet")) and not any(corpus.rglob("*.txt"))
    return corpus.suffix == ".parquet"


class MentionWorker:
    """A Ray actor: loads detector, encoder and head once, then turns shards into encoded
    batches with the pipeline's own :class:`~ner_retriever.pipeline.BatchEmbedder`."""

    def __init__(self, encoder: dict, detector: dict, head: Any = None, dim: int = 0,
                 threads: int = 0, dense: DenseRecord | None = None, names: bool = False,
                 confidence_weight: float = 0.0):
        import torch

        from ner_retriever.detect.registry import build_detector
        from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
        from ner_retriever.pipeline import BatchEmbedder

        if threads:
            torch.set_num_threads(threads)
        dense_encoder = None
        if dense is not None:  # a hybrid index: every document also gets its dense vector
            from ner_retriever.models.dense import DenseEncoder

            dense_encoder = DenseEncoder(dense.model, dense.max_length)
        lm = TransformerEncoder(EncoderConfig(**encoder))
        self.embed = BatchEmbedder(build_detector(detector, encoder=lm), lm, head, dim,
                                   dense_encoder, names, confidence_weight)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "docs" in batch:  # shards shipped by the driver: one pickled list per row
            shards = [pickle.loads(p) for p in batch["docs"]]
        else:  # rows read by Ray (Parquet): this batch is one shard
            shards = [documents_from_columns(batch)]
        payload = [pickle.dumps(self.embed(docs)) for docs in shards if docs]
        return {"payload": np.array(payload, dtype=object)}


def documents_from_columns(batch: dict[str, np.ndarray]) -> list[Document]:
    """Rows of a Parquet batch -> documents (``id``, ``text``; other columns -> metadata)."""
    if "id" not in batch or "text" not in batch:
        raise CorpusError(f"Parquet rows need 'id' and 'text' columns, got {sorted(batch)}")
    extra = [c for c in batch if c not in ("id", "text")]
    docs = []
    for i, (raw_id, text) in enumerate(zip(batch["id"], batch["text"])):
        doc_id = str(raw_id.item() if hasattr(raw_id, "item") else raw_id)
        if not doc_id.strip() or not isinstance(text, str) or not text.strip():
            raise CorpusError(f"Parquet row with id {doc_id!r} has an empty id or text")
        metadata = {c: _plain(batch[c][i]) for c in extra}
        docs.append(Document(id=doc_id, text=text, metadata=metadata))
    return docs


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.loads(
        json.dumps(value, default=str))


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; returns True when this call started it."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("NER_RETRIEVER_CACHE", "HF_HOME", "TRANSFORMERS_OFFLINE",
                                      "HF_HUB_OFFLINE") if k in os.environ}
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["TRANSFORMERS_VERBOSITY"] = "error"
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
                              "include_dashboard": False, "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 2
        # Ray nices its workers (15) by default; on a shared machine the encoding actors would
        # then starve behind every other process, which the single-process path never does.
        kwargs["_system_config"] = {"worker_niceness": 0}
    for attempt in (1, 2):  # a busy machine can miss Ray's start-up deadline once
        try:
            ray.init(**kwargs)
            return True
        except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, ConnectionError, ...
            ray.shutdown()
            if attempt == 2 or address:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise IndexStateError(f"could not start or reach {where}: {exc}") from None
    return True


@dataclass
class RayPlan:
    """How the actor pool is sized: CPUs each actor reserves, torch threads it runs."""

    per_actor: float
    threads: int

    @classmethod
    def for_cluster(cls, ray, workers: int, address: str | None) -> RayPlan:
        # The actors run CPUs/N torch threads each but reserve one logical CPU less in all:
        # Ray Data's own tasks (file listing takes a whole CPU; reading and filtering a sliver)
        # must never wait behind the actors, or the pipeline stalls.
        if address:
            return cls(1.0, 1)
        cpus = float(ray.cluster_resources().get("CPU", 1))
        return cls(max(MIN_ACTOR_CPUS, (cpus - 1) / workers), max(1, round(cpus / workers)))


def add_with_ray(retriever, corpus: str | Path, fmt: str = "auto", if_exists: str = "error",
                 batch_size: int = 256, workers: int = 1, gpus_per_worker: float = 0.0,
                 address: str | None = None, progress: Progress | None = None):
    """Index ``corpus`` into the (writable) ``retriever``'s index with a Ray actor pool.

    ``batch_size`` documents form a shard: one actor call and one committed batch, as in the
    single-process path. Returns ``AddStats``."""
    from ner_retriever.pipeline import Admission

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    admission = Admission(retriever.index, if_exists)  # checks if_exists
    detector = retriever.detector.config()  # built here: a missing detector fails before Ray
    ray = _import_ray()
    corpus = Path(corpus)
    started = start_ray(address)
    start = time.perf_counter()
    try:
        _configure_ray_data(ray)
        if is_parquet(corpus, fmt):
            dataset, parquet_rows = _parquet_dataset(ray, corpus, admission)
            batch_rows = batch_size
        else:
            dataset, parquet_rows, batch_rows = _shard_dataset(ray, corpus, fmt, batch_size,
                                                               admission), None, 1
        if dataset is not None:
            encoded = _encode(ray, dataset, retriever, detector, workers, gpus_per_worker,
                              RayPlan.for_cluster(ray, workers, address), batch_rows)
            processed = _write(encoded, retriever.index, admission, progress)
            if parquet_rows is not None:  # rows dropped before the actors (already indexed)
                admission.stats.skipped += parquet_rows - processed
    finally:
        if started:
            ray.shutdown()
    admission.stats.seconds = time.perf_counter() - start
    return admission.stats


def _configure_ray_data(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # commit in corpus order: same row ids
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _parquet_dataset(ray, corpus: Path, admission):
    """Ray reads the Parquet files itself; a resumed run drops finished rows before the
    actors. Returns the dataset and its row count (from the file footers)."""
    dataset = ray.data.read_parquet(str(corpus), num_cpus=LIGHT_CPUS)
    rows = dataset.count()
    if admission.if_exists == "skip":
        dataset = dataset.map_batches(
            _drop_present, fn_kwargs={"present": frozenset(admission.index.document_ids())},
            batch_format="numpy", num_cpus=LIGHT_CPUS)
    return dataset, rows


def _shard_dataset(ray, corpus: Path, fmt: str, batch_size: int, admission):
    """The project's readers on the driver: every shard validated and admitted exactly as
    ``Retriever.add`` admits a batch, then shipped pickled (None: nothing left to index)."""
    from ner_retriever.io.corpus import iter_batches, read_corpus

    items = [{"docs": pickle.dumps(shard)}
             for shard in map(admission.admit, iter_batches(read_corpus(corpus, fmt), batch_size))
             if shard]
    return ray.data.from_items(items, override_num_blocks=len(items)) if items else None


def _encode(ray, dataset, retriever, detector: dict, workers: int, gpus_per_worker: float,
            plan: RayPlan, batch_rows: int):
    cfg = retriever.index.config
    return dataset.map_batches(
        MentionWorker,
        fn_constructor_kwargs={"encoder": retriever.encoder.config.model_dump(),
                               "detector": detector, "head": retriever.head, "dim": cfg.dim,
                               "dense": cfg.dense, "names": cfg.names is not None,
                               "confidence_weight": cfg.confidence_weight,
                               "threads": plan.threads if not gpus_per_worker else 0},
        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=batch_rows,
        batch_format="numpy", num_cpus=plan.per_actor, num_gpus=gpus_per_worker or None)


def _write(encoded, index, admission, progress: Progress | None) -> int:
    """The single writer: commits each encoded batch in corpus order; returns the documents
    that reached it. An explicit iterator, closed on every exit: closing it shuts the
    streaming executor down at once, so an interrupted run frees its actors right away."""
    from ner_retriever.pipeline import commit

    seen: set[str] = set()
    processed = 0
    batches = iter(encoded.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for out in batches:
            for payload in out["payload"]:
                batch = pickle.loads(payload)
                for d in batch.docs:
                    if d.id in seen:
                        raise DuplicateDocumentError(d.id, d.source)
                    seen.add(d.id)
                added = commit(index, batch, admission.if_exists, admission.stats)
                admission.stats.skipped += len(batch.docs) - added
                processed += len(batch.docs)
                if progress is not None:
                    progress(len(batch.docs), batch.n_mentions)
    finally:
        batches.close()
    return processed


def _drop_present(batch: dict[str, np.ndarray], present: frozenset) -> dict[str, np.ndarray]:
    """Filters out rows whose id is already indexed (resume of a Parquet run)."""
    keep = np.array([str(i.item() if hasattr(i, "item") else i) not in present
                     for i in batch["id"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}
