"""Command line: ``ner-retriever index | search | detect | info | demo`` and the training,
evaluation and serving commands.

The commands live in one module per group (``cli.index``, ``cli.search``, ``cli.train``,
``cli.serve``); this module only registers them on the Typer ``app``. Each command imports
its heavy dependencies (torch, faiss, uvicorn) when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from ner_retriever.cli import index, maintenance, search, serve, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Zero-shot named entity retrieval: find documents by entity type.")

for command in (index.index, index.detect, search.search, search.entities, index.info,
                index.demo, train.train,
                train.evaluate, train.probe, serve.serve, maintenance.delete,
                maintenance.compact):
    app.command()(command)
app.command("train-detector")(train.train_detector)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ner-retriever")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
