"""Command line: ``ner-retriever index | search | info | demo``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from enum import Enum
from functools import wraps
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ner_retriever.errors import CorpusError, NerRetrieverError

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


def friendly_errors(func):
    """Known errors become one line on stderr and exit code 1; never a traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NerRetrieverError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
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


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} docs/s, {task.fields[mentions]} mentions"),
                    TimeElapsedColumn(), console=err, transient=False)


def run_index(corpus: Path, index_dir: Path, fmt: str = "auto", model: str | None = None,
              block: int | None = None, component: str | None = None, detector: str = "spacy",
              head: Path | None = None, batch_size: int = 256, if_exists: str = "error",
              max_length: int = 512) -> dict:
    """Validate the whole corpus first (so bad input never half-writes), then index it."""
    import time

    from ner_retriever.corpus import read_corpus
    from ner_retriever.encode import EncoderConfig
    from ner_retriever.retriever import Retriever

    _quiet_transformers()
    total, ids = 0, set()
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
    settings = {k: v for k, v in {"block": block, "component": component}.items() if v is not None}
    encoder = EncoderConfig(model=model, max_length=max_length, **settings) if model else \
        EncoderConfig(max_length=max_length, **settings)
    with _progress() as bar:
        task = bar.add_task("loading model", total=total, rate="-", mentions=0)
        retriever = Retriever.open_or_create(index_dir, encoder=encoder, detector=detector,
                                             head=head)
        bar.update(task, description="indexing")
        start, done, mentions = time.perf_counter(), 0, 0

        def tick(n_docs: int, n_mentions: int) -> None:
            nonlocal done, mentions
            done += n_docs
            mentions += n_mentions
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n_docs, rate=f"{rate:.1f}", mentions=mentions)

        with retriever:
            stats = retriever.add(read_corpus(corpus, fmt), if_exists=if_exists,
                                  commit_every=batch_size, progress=tick)
            info = retriever.info()
    return {"added": stats.documents, "skipped": stats.skipped, "mentions": stats.mentions,
            "seconds": round(stats.seconds, 2), "documents": info["documents"]}


@app.command()
@friendly_errors
def index(
    corpus: Annotated[Path, typer.Argument(help="JSONL, text file, folder of .txt, or CoNLL/BIO")],
    index_dir: Annotated[Path, typer.Option("--index", "-i", help="index directory")],
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|text|folder|conll")] = "auto",
    model: Annotated[Optional[str], typer.Option(help="HF id, local path, .gguf or packaged alias (default smollm2-135m)")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "--block", help="0-based block")] = None,
    component: Annotated[Optional[ComponentOpt], typer.Option(help="attention component or block output")] = None,
    detector: Annotated[str, typer.Option(help="spacy | spacy-ents | gold | a+b")] = "spacy",
    head: Annotated[Optional[Path], typer.Option(help="projection head folder or .pth")] = None,
    batch_size: Annotated[int, typer.Option(help="documents per committed batch")] = 256,
    if_exists: Annotated[IfExistsOpt, typer.Option(help="a document id already indexed: error, skip (resume) or update")] = IfExistsOpt.error,
    max_length: Annotated[int, typer.Option(help="tokens per window")] = 512,
) -> None:
    """Detect mentions, embed them and add the documents to an index (created if missing)."""
    result = run_index(corpus, index_dir, fmt, model, layer,
                       component.value if component else None, detector, head, batch_size,
                       if_exists.value, max_length)
    err.print(f"indexed {result['added']} documents ({result['mentions']} mentions, "
              f"{result['skipped']} skipped) in {result['seconds']} s; "
              f"index holds {result['documents']} documents")


def print_results(query: str, results, console: Console = out) -> None:
    table = Table(title=f"[bold]{query}[/bold]", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("doc")
    table.add_column("score", justify="right")
    table.add_column("snippet (best mention highlighted)")
    for rank, r in enumerate(results, 1):
        best = r.mentions[0]
        start = r.snippet.find(best.text)
        text = Text(r.snippet)
        if start >= 0:
            text.stylize("bold reverse", start, start + len(best.text))
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
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Rank the indexed documents by how well their mentions match an entity type."""
    from ner_retriever.retriever import Retriever

    _quiet_transformers()
    with Retriever.open(index_dir) as retriever:
        results = retriever.search(query, k=k)
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
    from ner_retriever.index import Index
    from ner_retriever.retriever import index_info

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
    from ner_retriever.retriever import Retriever

    sample = resources.files("ner_retriever") / "data" / "sample.jsonl"
    index_dir = index_dir or Path(tempfile.gettempdir()) / "ner-retriever-demo"
    with resources.as_file(sample) as path:
        run_index(path, index_dir, if_exists="skip")
    with Retriever.open(index_dir) as retriever:
        for query in queries or ["politician", "car model", "river", "sports team", "award"]:
            print_results(query, retriever.search(query, k=k))
    err.print(f"index kept at {index_dir}; try: ner-retriever search {index_dir} \"athlete\"")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ner-retriever")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
