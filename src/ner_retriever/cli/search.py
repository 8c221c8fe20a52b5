"""``search``: rank an index's documents for an entity type, as a table or JSON."""

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
    query: Annotated[str, typer.Argument(help='entity type in your words, e.g. "politician"')],
    k: Annotated[int, typer.Option("-k", "--k", help="documents to return")] = 10,
    mode: Annotated[ModeOpt, typer.Option(help="auto (hybrid when the index has document vectors), hybrid, or mentions (best-mention cosine only)")] = ModeOpt("auto"),
    feedback: Annotated[Optional[int], typer.Option(min=0, help="hybrid: rank again with the queries moved toward the first ranking's top N documents (0: off; default 20)")] = None,
    as_json: JsonOption = False,
    precision: Annotated[Optional[str], typer.Option(help="query pass: fp32, int8, or auto (int8 where a start-up probe measures it faster; the default on hybrid indexes)")] = None,
    where: Annotated[Optional[list[str]], typer.Option("--where", help="metadata filter, repeatable (all must hold): field=value, field>=n, field<=n")] = None,
    must: Annotated[Optional[str], typer.Option("--must", help="only documents whose text contains this word or phrase (case-insensitive)")] = None,
) -> None:
    """Rank the indexed documents by how well their mentions match an entity type."""
    from ner_retriever.config import FEEDBACK_DOCS
    from ner_retriever.retrieve.retriever import Retriever

    quiet_transformers()
    with Retriever.open(index_dir, precision=precision) as retriever:
        results = retriever.search(query, k=k, mode=mode.value,
                                   feedback=FEEDBACK_DOCS if feedback is None else feedback,
                                   where=where, must=must)
    if as_json:
        print(json.dumps({"query": query, "results": [r.to_dict() for r in results]},
                         ensure_ascii=False))
    else:
        print_results(query, results)
