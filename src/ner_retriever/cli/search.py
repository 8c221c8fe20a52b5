"""``search`` (rank an index's documents for entity types or an example) and ``entities``
(the distinct entities of a type), as tables or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ner_retriever.cli.common import (JsonOption, ModeOpt, friendly_errors, out,
                                      quiet_transformers)
from ner_retriever.config import INVENTORY_TOP


def print_results(query: str, results, console: Console = out) -> None:
    """One table per query: rank, document, score and the snippet, best mention highlighted."""
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


@friendly_errors
def search(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    queries: Annotated[Optional[list[str]], typer.Argument(help='entity type in your words, e.g. "politician"; several types: documents mentioning an entity of each')] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="documents to return")] = 10,
    mode: Annotated[ModeOpt, typer.Option(help="auto (hybrid when the index has document vectors), hybrid, or mentions (best-mention cosine only)")] = ModeOpt("auto"),
    feedback: Annotated[Optional[int], typer.Option(min=0, help="hybrid: rank again with the queries moved toward the first ranking's top N documents (0: off; default 20)")] = None,
    as_json: JsonOption = False,
    precision: Annotated[Optional[str], typer.Option(help="query pass: fp32, fp16, int8, or auto (fp16 weights where a start-up probe measures them faster; the default)")] = None,
    where: Annotated[Optional[list[str]], typer.Option("--where", help="metadata filter, repeatable (all must hold): field=value, field>=n, field<=n")] = None,
    must: Annotated[Optional[str], typer.Option("--must", help="only documents whose text contains this word or phrase (case-insensitive)")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help='query by example instead of a description: "They sailed down the [[Danube]] to Vienna." (the mention in double brackets) or a bare name')] = None,
    exhaustive: Annotated[bool, typer.Option("--all", help="every document past the score cut-off (-k is ignored)")] = False,
) -> None:
    """Rank the indexed documents by how well their mentions match an entity type."""
    from ner_retriever.config import FEEDBACK_DOCS
    from ner_retriever.retrieve.requests import SearchRequest
    from ner_retriever.retrieve.retriever import Retriever

    quiet_transformers()
    req = SearchRequest.of(queries or None, like, where, must, k=k, mode=mode.value,
                           exhaustive=exhaustive,
                           feedback=FEEDBACK_DOCS if feedback is None else feedback)
    with Retriever.open(index_dir, precision=precision) as retriever:
        results = retriever.run(req, retriever.request_vectors(req))
        threshold = retriever.threshold
    if as_json:
        cut = {"threshold": threshold} if req.cut_off else {}
        print(json.dumps({"query": req.query, "queries": req.labels,
                          **cut, "results": [r.to_dict() for r in results]},
                         ensure_ascii=False))
    else:
        print_results(req.query, results)


@friendly_errors
def entities(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    query: Annotated[str, typer.Argument(help='entity type in your words, e.g. "river"')],
    top: Annotated[int, typer.Option("--top", help="entities to list")] = INVENTORY_TOP,
    as_json: JsonOption = False,
    where: Annotated[Optional[list[str]], typer.Option("--where", help="metadata filter, repeatable (all must hold): field=value, field>=n, field<=n")] = None,
    must: Annotated[Optional[str], typer.Option("--must", help="only documents whose text contains this word or phrase (case-insensitive)")] = None,
) -> None:
    """List the distinct entities of a type in the whole index, best first: mentions past the
    exhaustive cut-off, grouped by case-folded text."""
    from ner_retriever.retrieve.retriever import Retriever

    quiet_transformers()
    with Retriever.open(index_dir) as retriever:
        found = retriever.entities(query, top=top, where=where, must=must)
        threshold = retriever.threshold
    if as_json:
        print(json.dumps({"query": query, "threshold": threshold,
                          "entities": [e.to_dict() for e in found]}, ensure_ascii=False))
        return
    table = Table(title=f"[bold]{query}[/bold]")
    for name, justify in (("#", "right"), ("entity", "left"), ("documents", "right"),
                          ("mentions", "right"), ("score", "right"), ("e.g. in", "left")):
        table.add_column(name, justify=justify)
    for rank, e in enumerate(found, 1):
        table.add_row(str(rank), e.text, str(e.documents), str(e.mentions), f"{e.score:.2f}",
                      ", ".join(e.examples))
    out.print(table)
