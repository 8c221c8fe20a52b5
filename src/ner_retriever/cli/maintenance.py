"""``delete`` and ``compact``: remove documents from an index and reclaim the space they held.

Both open the index for writing without loading any model (no torch import), so they run in
the time the catalog commit takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ner_retriever.cli.common import JsonOption, friendly_errors, out

BYTES_PER_MB = 1024 * 1024


@friendly_errors
def delete(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    ids: Annotated[list[str], typer.Argument(help="ids of the documents to delete")],
    as_json: JsonOption = False,
) -> None:
    """Delete documents by id, all in one commit. Ids the index does not hold are reported,
    not an error (a repeated delete succeeds)."""
    from ner_retriever.indexes.deletion import delete_documents
    from ner_retriever.indexes.index import Index

    with Index.open(index_dir, writable=True) as index:
        stats = delete_documents(index, ids)
    if as_json:
        print(json.dumps(stats.to_dict(), ensure_ascii=False))
        return
    out.print(f"deleted {stats.deleted} document{'s' * (stats.deleted != 1)} from {index_dir}",
              highlight=False, soft_wrap=True)
    if stats.missing:
        out.print(f"not in the index: {', '.join(stats.missing)}", highlight=False)


@friendly_errors
def compact(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    as_json: JsonOption = False,
) -> None:
    """Rewrite the index without the rows of deleted or replaced documents and reclaim their
    disk space (crash-safe: the old state stays until one commit switches to the new)."""
    from ner_retriever.indexes.index import Index

    with Index.open(index_dir, writable=True) as index:
        stats = index.compact()
    if as_json:
        print(json.dumps(stats.to_dict()))
        return
    out.print(f"compacted {index_dir}: {stats.bytes_before / BYTES_PER_MB:.2f} MB -> "
              f"{stats.bytes_after / BYTES_PER_MB:.2f} MB, mention rows {stats.rows_before} -> "
              f"{stats.rows_after} ({stats.documents} documents, {stats.seconds:.2f} s)",
              highlight=False, soft_wrap=True)
