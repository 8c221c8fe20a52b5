"""Building an index: ``index`` (and :func:`run_index`, which ``demo`` and the tests call),
``detect`` to check detection before indexing, ``info`` and ``demo``."""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ner_retriever.choices import ENGINES
from ner_retriever.cli.common import (COMPONENT_HELP, ComponentOpt, EngineOpt, IfExistsOpt,
                                      IndexTypeOpt, JsonOption, LayerOption, ModelOption,
                                      StorageOpt, StoreOpt, err, friendly_errors, log, out,
                                      progress, quiet_transformers)
from ner_retriever.cli.search import print_results
from ner_retriever.detect.registry import DEFAULT_DETECTOR
from ner_retriever.errors import ConfigError, CorpusError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ner_retriever.types import Document, Span

DEMO_QUERIES = ["politician", "car model", "river", "sports team", "award"]
INFO_ROWS = ("path", "documents", "mentions", "model", "block", "extra_blocks", "component",
             "dim", "store",
             "created", "size_bytes")
MIN_SECONDS = 1e-9  # a rate's divisor, so the first tick never divides by zero


def _count_corpus(corpus: Path, fmt: str, engine: str) -> int | None:
    """Read the whole corpus once, so that bad input fails before anything is written; the
    number of documents (``None`` for Parquet, which Ray reads and checks itself)."""
    from ner_retriever.io.corpus import read_corpus
    from ner_retriever.scale.ray import is_parquet

    if engine not in ENGINES:
        raise ConfigError(f"--engine must be local or ray, not {engine!r}")
    parquet = is_parquet(Path(corpus), fmt)
    if parquet and engine != "ray":
        raise ConfigError("Parquet corpora are read by Ray: add --engine ray")
    if parquet:
        return None  # Ray reads (and checks) Parquet itself, in parallel
    ids: set[str] = set()
    for doc in read_corpus(corpus, fmt):
        if doc.id in ids:
            raise CorpusError(f"duplicate document id {doc.id!r}", doc.source)
        if not doc.text.strip():
            raise CorpusError(f"document {doc.id!r} has empty text", doc.source)
        ids.add(doc.id)
    if not ids:
        raise CorpusError("corpus holds no documents", str(corpus))
    return len(ids)


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set: the rest keep the index's (or the default's) values."""
    return {k: v for k, v in options.items() if v is not None}


def run_index(corpus: Path, index_dir: Path, fmt: str = "auto", model: str | None = None,
              block: int | str | None = None, component: str | None = None,
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
    from ner_retriever.models.encoder import EncoderConfig
    from ner_retriever.retrieve.retriever import Retriever

    quiet_transformers()
    total = _count_corpus(corpus, fmt, engine)
    store_opts = _given(store=store, uri=uri, index_type=index_type, storage=storage,
                        hybrid=hybrid, names=names, confidence_weight=confidence_weight)
    settings = _given(block=block, component=component, model=model or None)
    encoder = EncoderConfig(max_length=max_length, **settings)
    with progress() as bar:
        task = bar.add_task("loading model", total=total, rate="-", mentions=0)
        retriever = Retriever.open_or_create(index_dir, encoder=encoder, detector=detector,
                                             head=head, **store_opts)
        _note_unshared_pass(retriever)
        bar.update(task, description="indexing")
        tick = _ticker(bar, task)
        with retriever:
            if engine == "ray":
                from ner_retriever.scale.ray import add_with_ray

                stats = add_with_ray(retriever, corpus, fmt, if_exists=if_exists,
                                     batch_size=batch_size, workers=workers,
                                     gpus_per_worker=gpus_per_worker, address=address,
                                     progress=tick)
            else:
                from ner_retriever.io.corpus import read_corpus

                stats = retriever.add(read_corpus(corpus, fmt), if_exists=if_exists,
                                      commit_every=batch_size, progress=tick)
            info = retriever.info()
    return {"added": stats.documents, "skipped": stats.skipped, "mentions": stats.mentions,
            "seconds": round(stats.seconds, 2), "documents": info["documents"]}


def _ticker(bar, task):
    """The ``progress(n_docs, n_mentions)`` callback that advances ``task`` with the rate."""
    start, done, mentions = time.perf_counter(), 0, 0

    def tick(n_docs: int, n_mentions: int) -> None:
        nonlocal done, mentions
        done += n_docs
        mentions += n_mentions
        rate = done / max(time.perf_counter() - start, MIN_SECONDS)
        bar.update(task, advance=n_docs, rate=f"{rate:.1f}", mentions=mentions)

    return tick


def _note_unshared_pass(retriever) -> None:
    """Say so when a learned detector cannot share the encoder's forward pass: it then runs
    its own language model, which costs time and memory the user may not expect."""
    from ner_retriever.detect.learned import LearnedDetector

    detector = retriever.detector
    for member in getattr(detector, "detectors", [detector]):
        if isinstance(member, LearnedDetector) and not member.supports(retriever.encoder):
            log(f"note: the learned detector reads {member.tagger.model}, not the "
                f"encoder's {retriever.encoder.config.model}, so it runs that model "
                "separately; for one shared pass train one with `train-detector --model "
                "M --out FOLDER` and index with --detector learned:FOLDER")


def _value(choice) -> str | None:
    return choice.value if choice is not None else None


@friendly_errors
def index(
    corpus: Annotated[Path, typer.Argument(help="JSONL, text file, folder of .txt, or CoNLL/BIO")],
    index_dir: Annotated[Path, typer.Option("--index", "-i", help="index directory")],
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|text|folder|conll|parquet (parquet: --engine ray)")] = "auto",
    model: ModelOption = None,
    layer: LayerOption = None,
    component: Annotated[Optional[ComponentOpt], typer.Option(help=COMPONENT_HELP)] = None,
    detector: Annotated[Optional[str], typer.Option(help=f"learned[:FOLDER] | spacy | spacy-ents | gold | llm[:MODEL] | a+b (default: {DEFAULT_DETECTOR}; when appending, the index's own)")] = None,
    head: Annotated[str, typer.Option(help="auto (the shipped trained head when it fits the "
                                      "encoder), none (raw vectors), or a head folder / .pth")] = "auto",
    batch_size: Annotated[int, typer.Option(help="documents per committed batch")] = 256,
    if_exists: Annotated[IfExistsOpt, typer.Option(help="a document id already indexed: error, skip (resume) or update")] = IfExistsOpt("error"),
    max_length: Annotated[int, typer.Option(help="tokens per window")] = 512,
    engine: Annotated[EngineOpt, typer.Option(help="local (this process) or ray (Ray Data actor pool)")] = EngineOpt("local"),
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
    result = run_index(corpus, index_dir, fmt, model, layer, _value(component), detector, head,
                       batch_size, if_exists.value, max_length, engine=engine.value,
                       address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                       store=_value(store), uri=uri, index_type=_value(index_type),
                       storage=_value(storage), hybrid=hybrid, names=names,
                       confidence_weight=confidence_weight)
    err.print(f"indexed {result['added']} documents ({result['mentions']} mentions, "
              f"{result['skipped']} skipped) in {result['seconds']} s; "
              f"index holds {result['documents']} documents")


def _detect_input(corpus: Path | None, texts: list[str] | None, fmt: str,
                  limit: int | None):
    """The documents ``detect`` looks at, and how many (``None``: unknown until read)."""
    from ner_retriever.io.corpus import read_corpus
    from ner_retriever.scale.ray import is_parquet
    from ner_retriever.types import Document

    if texts:
        if corpus is not None:
            raise ConfigError("give either a corpus or --text, not both")
        docs = [Document(str(i), t, source=f"--text #{i}") for i, t in enumerate(texts, 1)]
        return docs, min(len(docs), limit or len(docs))
    if corpus is None:
        raise ConfigError("give a corpus or --text")
    if is_parquet(corpus, fmt):
        raise ConfigError("detect reads JSONL, text, a folder of .txt or CoNLL, not Parquet")
    return read_corpus(corpus, fmt), limit


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
    from itertools import islice

    from ner_retriever.detect.registry import build_detector
    from ner_retriever.io.corpus import iter_batches

    docs, total = _detect_input(corpus, texts, fmt, limit)
    quiet_transformers()
    det = build_detector(detector)
    # JSON lines go to stdout, the bar to stderr: it must not capture them
    with progress(redirect_stdout=False) as bar:
        task = bar.add_task("detecting", total=total, rate="-", mentions=0, visible=as_json)
        tick, done = _ticker(bar, task), 0
        for batch in iter_batches(islice(docs, limit), batch_size):
            found = det.detect(batch)
            for doc, spans in zip(batch, found):
                print_mentions(doc, spans, as_json)
            done += len(batch)
            tick(len(batch), sum(map(len, found)))
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


@friendly_errors
def info(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    as_json: JsonOption = False,
) -> None:
    """Show how an index was built and what it holds."""
    from ner_retriever.indexes.index import Index
    from ner_retriever.retrieve.info import index_info

    with Index.open(index_dir) as idx:
        data = index_info(idx)
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    table = Table(show_header=False)
    for key in INFO_ROWS:
        table.add_row(key, str(data[key]))
    table.add_row("head", "none (raw vectors)" if data["head"] is None
                  else json.dumps(data["head"]))
    table.add_row("detector", json.dumps(data["detector"]))
    out.print(table)


@friendly_errors
def demo(
    index_dir: Annotated[Optional[Path], typer.Option("--index", help="where to build the sample index")] = None,
    queries: Annotated[Optional[list[str]], typer.Option("--query", "-q")] = None,
    k: Annotated[int, typer.Option("-k")] = 5,
) -> None:
    """Index the bundled sample corpus (300 Few-NERD sentences) and run example searches."""
    import shutil

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
            log(f"rebuilding the demo index ({exc})")
            shutil.rmtree(index_dir)
            run_index(path, index_dir)
    with Retriever.open(index_dir) as retriever:
        for query in queries or DEMO_QUERIES:
            print_results(query, retriever.search(query, k=k))
    err.print(f"index kept at {index_dir}; try: ner-retriever search {index_dir} \"athlete\"")
