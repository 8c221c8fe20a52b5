"""Command line: ``ner-retriever index | search | detect | info | demo`` and the training,
evaluation and serving commands."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from enum import Enum
from functools import wraps
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ner_retriever.detect.base import DEFAULT_DETECTOR
from ner_retriever.errors import CorpusError, NerRetrieverError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ner_retriever.types import Document, Span

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Zero-shot named entity retrieval: find documents by entity type.")
out = Console()
err = Console(stderr=True)


class IfExistsOpt(str, Enum):
    error = "error"
    skip = "skip"
    update = "update"


class ComponentOpt(str, Enum):
    value = "value"
    key = "key"
    query = "query"
    hidden = "hidden"


class EngineOpt(str, Enum):
    local = "local"
    ray = "ray"


class StoreOpt(str, Enum):
    faiss = "faiss"
    milvus = "milvus"


class IndexTypeOpt(str, Enum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


class StorageOpt(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    pq = "pq"
    sq8 = "sq8"
    pq_disk = "pq-disk"


class ModeOpt(str, Enum):
    auto = "auto"
    hybrid = "hybrid"
    mentions = "mentions"


def friendly_errors(func):
    """Known errors become one line on stderr and exit code 1; never a traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NerRetrieverError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except sqlite3.DatabaseError as exc:  # damage that the checks on open could not see
            err.print(f"[red]error:[/red] index file is corrupt: catalog.sqlite: {exc}",
                      highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: committed batches are kept; rerun with --if-exists skip "
                      "to resume")
            raise typer.Exit(130) from None

    return wrapper


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _progress(redirect_stdout: bool = True) -> Progress:
    """A bar on stderr; ``redirect_stdout=False`` where stdout carries data printed meanwhile."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} docs/s, {task.fields[mentions]} mentions"),
                    TimeElapsedColumn(), console=err, transient=False,
                    redirect_stdout=redirect_stdout)


def run_index(corpus: Path, index_dir: Path, fmt: str = "auto", model: str | None = None,
              block: int | None = None, component: str | None = None,
              detector: str | None = None,
              head: str = "auto", batch_size: int = 256, if_exists: str = "error",
              max_length: int = 512, engine: str = "local", address: str | None = None,
              workers: int = 1, gpus_per_worker: float = 0.0, store: str | None = None,
              uri: str | None = None, index_type: str | None = None,
              storage: str | None = None, hybrid: bool | None = None,
              names: bool | None = None, confidence_weight: float | None = None) -> dict:
    """Validate the whole corpus first (so bad input never half-writes), then index it.

    ``detector=None``: the default detector for a new index, the index's own when appending
    (so an index built before the default changed can still be resumed).

    ``engine="ray"`` runs detection and encoding on Ray (``ner_retriever.scale.ray``);
    the store options apply when the index is created and must agree when appending."""
    import time

    from ner_retriever.io.corpus import read_corpus
    from ner_retriever.scale.ray import is_parquet
    from ner_retriever.models.encoder import EncoderConfig
    from ner_retriever.errors import ConfigError
    from ner_retriever.retrieve.retriever import Retriever

    _quiet_transformers()
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, not {engine!r}")
    parquet = is_parquet(Path(corpus), fmt)
    if parquet and engine != "ray":
        raise ConfigError("Parquet corpora are read by Ray: add --engine ray")
    total: int | None = 0
    if parquet:
        total = None  # Ray reads (and checks) Parquet itself, in parallel
    else:
        ids = set()
        for doc in read_corpus(corpus, fmt):
            if doc.id in ids:
                raise CorpusError(f"duplicate document id {doc.id!r}", doc.source)
            if not doc.text.strip():
                raise CorpusError(f"document {doc.id!r} has empty text", doc.source)
            ids.add(doc.id)
            total += 1
        if total == 0:
            raise CorpusError("corpus holds no documents", str(corpus))
        del ids
    store_opts = {k: v for k, v in {"store": store, "uri": uri, "index_type": index_type,
                                    "storage": storage, "hybrid": hybrid,
                                    "names": names,
                                    "confidence_weight": confidence_weight}.items()
                  if v is not None}
    settings = {k: v for k, v in {"block": block, "component": component}.items() if v is not None}
    encoder = EncoderConfig(model=model, max_length=max_length, **settings) if model else \
        EncoderConfig(max_length=max_length, **settings)
    with _progress() as bar:
        task = bar.add_task("loading model", total=total, rate="-", mentions=0)
        retriever = Retriever.open_or_create(index_dir, encoder=encoder, detector=detector,
                                             head=head, **store_opts)
        _note_unshared_pass(retriever)
        bar.update(task, description="indexing")
        start, done, mentions = time.perf_counter(), 0, 0

        def tick(n_docs: int, n_mentions: int) -> None:
            nonlocal done, mentions
            done += n_docs
            mentions += n_mentions
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n_docs, rate=f"{rate:.1f}", mentions=mentions)

        with retriever:
            if engine == "ray":
                from ner_retriever.scale.ray import add_with_ray

                stats = add_with_ray(retriever, corpus, fmt, if_exists=if_exists,
                                     batch_size=batch_size, workers=workers,
                                     gpus_per_worker=gpus_per_worker, address=address,
                                     progress=tick)
            else:
                stats = retriever.add(read_corpus(corpus, fmt), if_exists=if_exists,
                                      commit_every=batch_size, progress=tick)
            info = retriever.info()
    return {"added": stats.documents, "skipped": stats.skipped, "mentions": stats.mentions,
            "seconds": round(stats.seconds, 2), "documents": info["documents"]}


def _note_unshared_pass(retriever) -> None:
    """Say so when a learned detector cannot share the encoder's forward pass: it then runs
    its own language model, which costs time and memory the user may not expect."""
    from ner_retriever.detect.learned import LearnedDetector

    detector = retriever.detector
    for member in getattr(detector, "detectors", [detector]):
        if isinstance(member, LearnedDetector) and not member.supports(retriever.encoder):
            err.print(f"note: the learned detector reads {member.tagger.model}, not the "
                      f"encoder's {retriever.encoder.config.model}, so it runs that model "
                      "separately; for one shared pass train one with `train-detector --model "
                      "M --out FOLDER` and index with --detector learned:FOLDER",
                      highlight=False, markup=False)


@app.command()
@friendly_errors
def index(
    corpus: Annotated[Path, typer.Argument(help="JSONL, text file, folder of .txt, or CoNLL/BIO")],
    index_dir: Annotated[Path, typer.Option("--index", "-i", help="index directory")],
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|text|folder|conll|parquet (parquet: --engine ray)")] = "auto",
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "--block", help="0-based block")] = None,
    component: Annotated[Optional[ComponentOpt], typer.Option(help="attention component or block output")] = None,
    detector: Annotated[Optional[str], typer.Option(help=f"learned[:FOLDER] | spacy | spacy-ents | gold | llm[:MODEL] | a+b (default: {DEFAULT_DETECTOR}; when appending, the index's own)")] = None,
    head: Annotated[str, typer.Option(help="auto (the shipped trained head when it fits the "
                                      "encoder), none (raw vectors), or a head folder / .pth")] = "auto",
    batch_size: Annotated[int, typer.Option(help="documents per committed batch")] = 256,
    if_exists: Annotated[IfExistsOpt, typer.Option(help="a document id already indexed: error, skip (resume) or update")] = IfExistsOpt.error,
    max_length: Annotated[int, typer.Option(help="tokens per window")] = 512,
    engine: Annotated[EngineOpt, typer.Option(help="local (this process) or ray (Ray Data actor pool)")] = EngineOpt.local,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local Ray)")] = None,
    workers: Annotated[int, typer.Option(help="Ray actors that detect and encode")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray actor (0 = CPU)")] = 0.0,
    store: Annotated[Optional[StoreOpt], typer.Option(help="vector store of a new index (default faiss)")] = None,
    uri: Annotated[Optional[str], typer.Option(help="milvus: a Milvus Lite file path or http://host:19530")] = None,
    index_type: Annotated[Optional[IndexTypeOpt], typer.Option(help="flat (exact, default), hnsw or ivfpq")] = None,
    storage: Annotated[Optional[StorageOpt], typer.Option(help="fp32, fp16, pq, sq8 or pq-disk (default per index type: flat fp32, hnsw fp16, ivfpq pq; ivfpq also takes sq8, fp16 = PQ re-ranked on fp16 copies in memory, pq-disk = re-ranked on the vectors on disk)")] = None,
    hybrid: Annotated[Optional[bool], typer.Option("--hybrid/--no-hybrid", help="also store a dense vector per document and fuse both scores at search time (default for a new index: on)")] = None,
    names: Annotated[Optional[bool], typer.Option("--names/--no-names", help="hybrid: also embed each mention's text with the dense model, a third score in the fusion (default for a new hybrid index: on)")] = None,
    confidence_weight: Annotated[Optional[float], typer.Option(min=0.0, help="store each mention vector scaled by its detector confidence ** W (0: unscaled; default for a new index: 0.5)")] = None,
) -> None:
    """Detect mentions, embed them and add the documents to an index (created if missing)."""
    result = run_index(corpus, index_dir, fmt, model, layer,
                       component.value if component else None, detector, head, batch_size,
                       if_exists.value, max_length, engine=engine.value, address=address,
                       workers=workers, gpus_per_worker=gpus_per_worker,
                       store=store.value if store else None, uri=uri,
                       index_type=index_type.value if index_type else None,
                       storage=storage.value if storage else None, hybrid=hybrid,
                       names=names, confidence_weight=confidence_weight)
    err.print(f"indexed {result['added']} documents ({result['mentions']} mentions, "
              f"{result['skipped']} skipped) in {result['seconds']} s; "
              f"index holds {result['documents']} documents")


@app.command()
@friendly_errors
def detect(
    corpus: Annotated[Optional[Path], typer.Argument(help="JSONL, text file, folder of .txt, or CoNLL/BIO")] = None,
    texts: Annotated[Optional[list[str]], typer.Option("--text", "-t", help="a text to look at instead of a corpus (repeatable)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|text|folder|conll")] = "auto",
    detector: Annotated[str, typer.Option(help="learned[:FOLDER] | spacy | spacy-ents | gold | llm[:MODEL] | a+b")] = DEFAULT_DETECTOR,
    limit: Annotated[Optional[int], typer.Option(min=1, help="stop after N documents")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="documents per detection batch")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per document (JSON lines)")] = False,
) -> None:
    """Show the mentions a detector finds, to check detection before indexing (what is not
    detected can never be retrieved)."""
    import time
    from itertools import islice

    from ner_retriever.io.corpus import iter_batches, read_corpus
    from ner_retriever.detect.base import build_detector
    from ner_retriever.scale.ray import is_parquet
    from ner_retriever.errors import ConfigError
    from ner_retriever.types import Document

    if texts:
        if corpus is not None:
            raise ConfigError("give either a corpus or --text, not both")
        docs = [Document(str(i), t, source=f"--text #{i}") for i, t in enumerate(texts, 1)]
        total = min(len(docs), limit or len(docs))
    elif corpus is None:
        raise ConfigError("give a corpus or --text")
    elif is_parquet(corpus, fmt):
        raise ConfigError("detect reads JSONL, text, a folder of .txt or CoNLL, not Parquet")
    else:
        docs, total = read_corpus(corpus, fmt), limit
    _quiet_transformers()
    det = build_detector(detector)
    # JSON lines go to stdout, the bar to stderr: it must not capture them
    with _progress(redirect_stdout=False) as bar:
        task = bar.add_task("detecting", total=total, rate="-", mentions=0, visible=as_json)
        start, done, mentions = time.perf_counter(), 0, 0
        for batch in iter_batches(islice(docs, limit), batch_size):
            found = det.detect(batch)
            for doc, spans in zip(batch, found):
                print_mentions(doc, spans, as_json)
            done, mentions = done + len(batch), mentions + sum(map(len, found))
            rate = f"{done / max(time.perf_counter() - start, 1e-9):.1f}"
            bar.update(task, advance=len(batch), rate=rate, mentions=mentions)
        bar.update(task, total=done)  # a corpus shorter than --limit


def print_mentions(doc: Document, spans: Sequence[Span], as_json: bool) -> None:
    """One document's mentions: a JSON line, or its text with each mention highlighted."""
    mentions = [{"start": s.start, "end": s.end, "text": doc.text[s.start:s.end],
                 **({"label": s.label} if s.label is not None else {}),
                 **({"confidence": round(s.confidence, 4)} if s.confidence is not None else {})}
                for s in spans]
    if as_json:
        print(json.dumps({"id": doc.id, "mentions": mentions}, ensure_ascii=False), flush=True)
        return
    text = Text(doc.text)
    for s in spans:
        text.stylize("bold reverse", s.start, s.end)
    listed = ", ".join(m["text"] + (f" [{m['label']}]" if "label" in m else "")
                       + (f" ({m['confidence']:.2f})" if "confidence" in m else "")
                       for m in mentions)
    text.append(f"\n  {len(spans)} mention(s){': ' + listed if listed else ''}", style="dim")
    out.print(Text(doc.id, style="bold"), text, sep="\n", highlight=False)


def print_results(query: str, results, console: Console = out) -> None:
    table = Table(title=f"[bold]{query}[/bold]", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("doc")
    table.add_column("score", justify="right")
    table.add_column("snippet (best mention highlighted)")
    for rank, r in enumerate(results, 1):
        text = Text(r.snippet)
        start = r.snippet.find(r.mentions[0].text) if r.mentions else -1
        if start >= 0:
            text.stylize("bold reverse", start, start + len(r.mentions[0].text))
        others = ", ".join(m.text for m in r.mentions[1:])
        if others:
            text.append(f"\n  also: {others}", style="dim")
        table.add_row(str(rank), r.doc_id, f"{r.score:.3f}", text)
    console.print(table)


@app.command()
@friendly_errors
def search(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    query: Annotated[str, typer.Argument(help='entity type in your words, e.g. "politician"')],
    k: Annotated[int, typer.Option("-k", "--k", help="documents to return")] = 10,
    mode: Annotated[ModeOpt, typer.Option(help="auto (hybrid when the index has document vectors), hybrid, or mentions (best-mention cosine only)")] = ModeOpt.auto,
    feedback: Annotated[Optional[int], typer.Option(min=0, help="hybrid: rank again with the queries moved toward the first ranking's top N documents (0: off; default 20)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Rank the indexed documents by how well their mentions match an entity type."""
    from ner_retriever.retrieve.retriever import Retriever
    from ner_retriever.retrieve.fusion import FEEDBACK_DOCS

    _quiet_transformers()
    with Retriever.open(index_dir) as retriever:
        results = retriever.search(query, k=k, mode=mode.value,
                                   feedback=FEEDBACK_DOCS if feedback is None else feedback)
    if as_json:
        print(json.dumps({"query": query, "results": [r.to_dict() for r in results]},
                         ensure_ascii=False))
    else:
        print_results(query, results)


@app.command()
@friendly_errors
def info(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Show how an index was built and what it holds."""
    from ner_retriever.indexes.index import Index
    from ner_retriever.retrieve.retriever import index_info

    with Index.open(index_dir) as idx:
        data = index_info(idx)
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    table = Table(show_header=False)
    for key in ("path", "documents", "mentions", "model", "block", "component", "dim", "store",
                "created", "size_bytes"):
        table.add_row(key, str(data[key]))
    table.add_row("head", "none (raw vectors)" if data["head"] is None
                  else json.dumps(data["head"]))
    table.add_row("detector", json.dumps(data["detector"]))
    out.print(table)


@app.command()
@friendly_errors
def demo(
    index_dir: Annotated[Optional[Path], typer.Option("--index", help="where to build the sample index")] = None,
    queries: Annotated[Optional[list[str]], typer.Option("--query", "-q")] = None,
    k: Annotated[int, typer.Option("-k")] = 5,
) -> None:
    """Index the bundled sample corpus (300 Few-NERD sentences) and run example searches."""
    import shutil

    from ner_retriever.errors import ConfigError
    from ner_retriever.retrieve.retriever import Retriever

    sample = resources.files("ner_retriever") / "data" / "sample.jsonl"
    default_dir = Path(tempfile.gettempdir()) / "ner-retriever-demo"
    index_dir = index_dir or default_dir
    with resources.as_file(sample) as path:
        try:
            run_index(path, index_dir, if_exists="skip")
        except ConfigError as exc:  # built by an older version with other defaults: rebuild
            if index_dir != default_dir:  # never delete a folder the user named
                raise
            err.print(f"rebuilding the demo index ({exc})", highlight=False, markup=False)
            shutil.rmtree(index_dir)
            run_index(path, index_dir)
    with Retriever.open(index_dir) as retriever:
        for query in queries or ["politician", "car model", "river", "sports team", "award"]:
            print_results(query, retriever.search(query, k=k))
    err.print(f"index kept at {index_dir}; try: ner-retriever search {index_dir} \"athlete\"")


@app.command()
@friendly_errors
def train(
    data: Annotated[list[Path], typer.Argument(help="BIO/CoNLL training files (gold tags)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for head.json + head.safetensors")],
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "--block", help="0-based block")] = None,
    component: Annotated[ComponentOpt, typer.Option(help="attention component or block output")] = ComponentOpt.value,
    descriptions: Annotated[Optional[str], typer.Option(help="JSON map: tag (or its fine part) -> description or list of paraphrases; or a shipped map name (fewnerd, multiconer2, wnut17)")] = None,
    query_template: Annotated[Optional[str], typer.Option(help="template queries are embedded in, e.g. 'mentions of {}' (default: the encoder's)")] = None,
    val_types: Annotated[Optional[list[str]], typer.Option("--val-types", help="held-out validation types (default: a seeded 20% of the types)")] = None,
    val_fraction: Annotated[float, typer.Option(help="share of types held out when --val-types is not given")] = 0.2,
    max_sentences: Annotated[Optional[list[int]], typer.Option(help="seeded sample of sentences: once for every file, or once per file (vectors are cached per sample)")] = None,
    epochs: Annotated[int, typer.Option(help="maximum epochs (selected on held-out types)")] = 30,
    steps_per_epoch: Annotated[int, typer.Option(help="batches per epoch (0 = one pass over the mentions)")] = 10,
    cv_folds: Annotated[int, typer.Option(help="choose the epoch count by cross-validation over type folds, then train on all types (0 or 1 = one held-out split with early stopping)")] = 5,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="mentions per type-balanced batch")] = 256,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature")] = 0.2,
    loss: Annotated[str, typer.Option(help="infonce | triplet")] = "infonce",
    patience: Annotated[int, typer.Option(help="epochs without improvement before stopping")] = 5,
    refit: Annotated[bool, typer.Option(help="retrain on all types for the selected epoch count")] = False,
    seed: Annotated[int, typer.Option(help="seed for sampling, type split and training")] = 0,
) -> None:
    """Train a projection head contrastively on gold mentions (types disjoint from evaluation)."""
    from ner_retriever.training.train import TrainConfig, run_training

    _quiet_transformers()
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature,
                         loss=loss, patience=patience, refit=refit, seed=seed,
                         val_fraction=val_fraction, val_types=val_types or None,
                         steps_per_epoch=steps_per_epoch or None,
                         cv_folds=0 if val_types else cv_folds)
    summary = run_training(data, out_dir, model=model, block=layer, component=component.value,
                           descriptions=descriptions, max_sentences=max_sentences or None,
                           data_seed=seed,
                           config=config, query_template=query_template,
                           log=lambda m: err.print(m, highlight=False, markup=False))
    err.print(f"trained on {len(summary['train_types'])} types; selected epoch "
              f"{summary['best_epoch']}: held-out R-Precision "
              f"{summary['best_val_r_precision']:.3f} (initial head "
              f"{summary['raw_val_r_precision']:.3f}); head saved to {out_dir}")


class MentionsOpt(str, Enum):
    gold = "gold"
    detected = "detected"


def _stage_progress():
    """A rich progress bar driven by ``(stage, done, total)`` callbacks, on stderr."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    return bar, update


def _split_list(values: Optional[list[str]]) -> Optional[list[str]]:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command()
@friendly_errors
def evaluate(
    files: Annotated[list[Path], typer.Argument(help="CoNLL/BIO files; each sentence is a document")],
    descriptions: Annotated[Optional[str], typer.Option(help="JSON map {tag: description} or a shipped map: fewnerd, multiconer2, wnut17 (default: derived from the tag)")] = None,
    methods: Annotated[Optional[list[str]], typer.Option("--methods", help="comma-separated: ner-retriever,bm25,dense,hybrid (default: all)")] = None,
    mentions: Annotated[MentionsOpt, typer.Option(help="gold spans (embedding quality) or detected (end to end)")] = MentionsOpt.gold,
    detector: Annotated[str, typer.Option(help="detector for --mentions detected (names as for index, e.g. learned:FOLDER+spacy)")] = DEFAULT_DETECTOR,
    sample: Annotated[Optional[int], typer.Option(help="evaluate on a random sample of N sentences")] = None,
    seed: Annotated[int, typer.Option(help="seed of the sample")] = 0,
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "--block", help="0-based block")] = None,
    component: Annotated[ComponentOpt, typer.Option(help="attention component or block output")] = ComponentOpt.value,
    head: Annotated[str, typer.Option(help="auto (the shipped head when it fits the encoder, as `index` does), none (raw vectors), or a head folder / .pth")] = "auto",
    query_template: Annotated[Optional[str], typer.Option(help="template around the description, e.g. 'Examples of {}' (default: the encoder's)")] = None,
    hybrid_weight: Annotated[Optional[float], typer.Option(help="weight of the mention score in hybrid (0..1)")] = None,
    names: Annotated[bool, typer.Option("--names/--no-names", help="hybrid: include the mention-name score, as a new hybrid index does")] = True,
    feedback: Annotated[Optional[int], typer.Option(min=0, help="hybrid: pseudo-relevance feedback from the first ranking's top N documents, as search does (0: off; default 20)")] = None,
    confidence_weight: Annotated[Optional[float], typer.Option(min=0.0, help="--mentions detected: mention vectors scaled by detector confidence ** W, as a new index stores them (default 0.5)")] = None,
    types: Annotated[Optional[list[str]], typer.Option("--type", help="evaluate only these tags (repeatable)")] = None,
    include_other: Annotated[bool, typer.Option(help="also evaluate catch-all tags (location-other, OtherPER, MISC)")] = False,
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write cached vectors")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Zero-shot retrieval quality (R-Precision per type) of ner-retriever, bm25, dense, hybrid."""
    from ner_retriever.evaluation.descriptions import load_descriptions
    from ner_retriever.evaluation.evaluate import EvalOptions, load_eval_set
    from ner_retriever.evaluation.evaluate import evaluate as run_evaluation
    from ner_retriever.retrieve.fusion import CONFIDENCE_WEIGHT, FEEDBACK_DOCS, HYBRID_WEIGHT

    _quiet_transformers()
    eval_set = load_eval_set(files, load_descriptions(descriptions), sample=sample, seed=seed,
                             include_other=include_other, types=_split_list(types))
    opts = EvalOptions(methods=_split_list(methods) or ("ner-retriever", "bm25", "dense", "hybrid"),
                       mentions=mentions.value, detector=detector, model=model, block=layer,
                       component=component.value, head=head, query_template=query_template,
                       hybrid_weight=HYBRID_WEIGHT if hybrid_weight is None else hybrid_weight,
                       names=names, feedback=FEEDBACK_DOCS if feedback is None else feedback,
                       confidence_weight=CONFIDENCE_WEIGHT if confidence_weight is None
                       else confidence_weight, batch_size=batch_size,
                       cache=not no_cache)
    bar, update = _stage_progress()
    with bar:
        report = run_evaluation(eval_set, opts, progress=update)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    results = report["results"]
    table = Table(title=f"[bold]{report['dataset']}[/bold]: {report['documents']} documents, "
                        f"{report['types']} types, {report['mentions']} mentions")
    table.add_column("type")
    table.add_column("description")
    table.add_column("R", justify="right")
    for method in results:
        table.add_column(method, justify="right")
    for tag in eval_set.types:
        table.add_row(tag, eval_set.descriptions[tag][0], str(len(eval_set.relevant[tag])),
                      *(f"{results[m]['per_type'][tag]:.3f}" for m in results))
    table.add_section()
    table.add_row("[bold]macro[/bold]", "R-Precision", "",
                  *(f"[bold]{results[m]['r_precision']:.3f}[/bold]" for m in results))
    out.print(table)
    notes = []
    if eval_set.skipped:
        notes.append(f"skipped catch-all tags: {', '.join(eval_set.skipped)}")
    settings = report["settings"]
    if "model" in settings:
        notes.append(f"ner-retriever: {settings['model']} block {settings['block']} "
                     f"{settings['component']}, head {settings['head'] or 'none'}, "
                     f"query template {settings['query_template']!r}")
    if "hybrid_weight" in settings:
        notes.append(f"hybrid weight on mentions: {settings['hybrid_weight']}, on mention names: "
                     f"{settings['name_weight'] or 'off'}; feedback documents: "
                     f"{settings['feedback_docs'] or 'off'}")
    if report["detection_recall"] and report["detection_recall"]["gold"]:
        rec = report["detection_recall"]
        notes.append(f"detection recall: {rec['exact']:.3f} exact, {rec['overlap']:.3f} overlap "
                     f"({rec['detected']} detected spans, {rec['gold']} gold)")
    for note in notes:
        err.print(note, highlight=False)


@app.command()
@friendly_errors
def probe(
    files: Annotated[list[Path], typer.Argument(help="CoNLL/BIO files with gold mentions")],
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    descriptions: Annotated[Optional[str], typer.Option(help="JSON map {tag: description} or a shipped map name")] = None,
    blocks: Annotated[Optional[str], typer.Option(help="blocks to probe, e.g. 0-29 or 3,5,10 (default: all)")] = None,
    components: Annotated[Optional[list[str]], typer.Option(help="comma-separated subset of query,key,value,hidden")] = None,
    sample: Annotated[Optional[int], typer.Option(help="probe on a random sample of N sentences")] = None,
    seed: Annotated[int, typer.Option(help="seed of the sample")] = 0,
    query_template: Annotated[Optional[str], typer.Option(help="template around the description (default: the encoder's)")] = None,
    include_other: Annotated[bool, typer.Option(help="also score catch-all tags")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the JSON here")] = None,
    png: Annotated[Optional[Path], typer.Option(help="draw the heatmap here (needs matplotlib)")] = None,
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Macro R-Precision of raw vectors for every block x component (one pass over the data)."""
    from ner_retriever.evaluation.descriptions import load_descriptions
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.errors import ConfigError
    from ner_retriever.evaluation.evaluate import load_eval_set
    from ner_retriever.evaluation.probe import draw_heatmap, parse_blocks, run_probe

    _quiet_transformers()
    eval_set = load_eval_set(files, load_descriptions(descriptions), sample=sample, seed=seed,
                             include_other=include_other)
    if query_template is not None and query_template.count("{}") != 1:
        raise ConfigError("the query template must contain '{}' once, where the description "
                          "goes")
    settings = {"query_template": query_template} if query_template is not None else {}
    if model:
        settings["model"] = model
    encoder = TransformerEncoder(EncoderConfig(**settings))
    chosen = parse_blocks(blocks, encoder.n_blocks)
    comps = _split_list(components) or ["query", "key", "value", "hidden"]
    bar, update = _stage_progress()
    with bar:
        result = run_probe(eval_set, encoder, chosen, comps, batch_size=batch_size,
                           progress=update)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    if png is not None:
        try:
            draw_heatmap(result, png)
        except ImportError:
            raise ConfigError("--png needs matplotlib: pip install matplotlib") from None
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    table = Table(title=f"[bold]{result['model']}[/bold] on {result['dataset']}: "
                        f"{result['documents']} documents, {result['types']} types "
                        f"(macro R-Precision, raw vectors)")
    table.add_column("block", justify="right")
    for c in comps:
        table.add_column(c, justify="right")
    for i, b in enumerate(result["blocks"]):
        table.add_row(str(b), *(f"{result['grid'][c][i]:.3f}" for c in comps))
    out.print(table)
    best = result["best"]
    err.print(f"best: block {best['block']} {best['component']} "
              f"({best['r_precision']:.3f})", highlight=False)


@app.command()
@friendly_errors
def serve(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    write_token: Annotated[Optional[str], typer.Option(
        "--write-token", envvar="NER_RETRIEVER_WRITE_TOKEN", show_default=False,
        help="enable POST /documents for clients sending 'Authorization: Bearer <token>' "
             "(opens the index writable; prefer the environment variable)")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", help="allow browser pages from this origin (repeatable; off by default)")] = None,
    example: Annotated[Optional[list[str]], typer.Option(
        "--example", help="example query shown on the page (repeatable)")] = None,
    cache_size: Annotated[int, typer.Option(help="query vectors kept in the LRU cache")] = 4096,
    max_batch: Annotated[int, typer.Option(help="most queries embedded in one model call")] = 32,
    body_timeout: Annotated[float, typer.Option(
        help="seconds a client has to send a request body (then 408)")] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve an index over HTTP: JSON API (OpenAPI docs at /docs) and a search page at /."""
    import uvicorn

    from ner_retriever.serve import DEFAULT_EXAMPLES, ServeSettings, open_app, server_config

    _quiet_transformers()
    settings = ServeSettings(write_token=write_token or None,
                             cors_origins=tuple(cors_origin or ()),
                             examples=tuple(example) if example else DEFAULT_EXAMPLES,
                             cache_size=cache_size, max_batch=max_batch,
                             body_timeout_s=body_timeout)
    application = open_app(index_dir, settings)
    mode = "writes enabled with a bearer token" if settings.write_token else "read-only"
    if settings.write_token and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: listening on {host} without TLS: the write token crosses the "
                  "network in clear text; put a TLS proxy in front", soft_wrap=True)
    err.print(f"serving {index_dir} ({mode}) on http://{host}:{port}/ - API docs at /docs",
              soft_wrap=True, highlight=False)
    uvicorn.Server(server_config(application, settings, host, port, log_level)).run()


@app.command("train-detector")
@friendly_errors
def train_detector(
    data: Annotated[list[Path], typer.Argument(help="CoNLL/BIO TRAINING files (gold tags; every type becomes 'mention')")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for detector.json + detector.safetensors")],
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    features: Annotated[Optional[str], typer.Option(help="blocks whose output (hidden state) the head reads, e.g. 9 or 4,8 (default: the block at 30% of the model's depth, 9 for smollm2-135m)")] = None,
    max_sentences: Annotated[Optional[int], typer.Option(help="seeded sample of sentences per file (0 = all)")] = 1000,
    heldout: Annotated[float, typer.Option(help="share of each file's sample held out to choose the threshold")] = 0.1,
    mask_detector: Annotated[str, typer.Option(help="O tokens inside this detector's spans carry no loss (partial annotation); 'none' = off")] = "spacy-ents",
    target_recall: Annotated[float, typer.Option(help="held-out overlap recall the threshold must reach in every file")] = 0.93,
    threshold: Annotated[Optional[float], typer.Option(help="fixed decoding threshold instead of the --target-recall rule (held-out figures are reported at it)")] = None,
    epochs: Annotated[int, typer.Option(help="epochs (the best on held-out loss is kept)")] = 4,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (one-cycle)")] = 2e-3,
    batch_size: Annotated[int, typer.Option(help="sentences per training batch")] = 32,
    seed: Annotated[int, typer.Option(help="seed for sampling and training")] = 0,
    allow_eval_files: Annotated[bool, typer.Option("--allow-eval-files", help="permit known evaluation splits as training data")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write cached hidden states")] = False,
) -> None:
    """Train the learned mention detector (BIO head on the LM's early-block hidden states)."""
    from ner_retriever.errors import ConfigError
    from ner_retriever.detect.learned import TrainDetectorConfig
    from ner_retriever.detect.learned import train_detector as run_detector_training

    _quiet_transformers()
    blocks: list[tuple[int, str]] | None = None  # None: the model's default block
    if features is not None:
        try:
            blocks = [(int(b), "hidden") for b in features.split(",") if b.strip()]
        except ValueError:
            raise ConfigError(f"--features must be block numbers like 6 or 4,8, not "
                              f"{features!r}") from None
        if not blocks:
            raise ConfigError("--features needs at least one block")
    config = TrainDetectorConfig(
        features=blocks, max_sentences=max_sentences or None,
        heldout=heldout, mask_detector=None if mask_detector.lower() == "none" else mask_detector,
        target_recall=target_recall, threshold=threshold, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    summary = run_detector_training(data, out_dir, model=model, config=config,
                                    allow_eval=allow_eval_files, cache=not no_cache,
                                    log=lambda m: err.print(m, highlight=False, markup=False))
    err.print(f"trained on {summary['sentences'] - summary['heldout_sentences']} sentences; best "
              f"epoch {summary['best_epoch']}, threshold {summary['threshold']}; detector saved "
              f"to {out_dir} ({summary['seconds']['total']} s)")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ner-retriever")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
