"""What every command shares: the consoles, the error handling, progress bars, the option
choices and the option types that several commands declare alike.

Importing this module must stay cheap (no torch, no faiss): ``ner-retriever --help`` and
``info`` import it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from enum import Enum
from functools import wraps
from typing import Annotated, Optional

import pydantic
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ner_retriever.choices import (COMPONENTS, ENGINES, INDEX_TYPES, MENTION_SOURCES,
                                   SEARCH_MODES, STORAGES, STORE_NAMES)
from ner_retriever.config import IF_EXISTS
from ner_retriever.errors import NerRetrieverError

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

out = Console()
err = Console(stderr=True)
INTERRUPTED_EXIT = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


def _choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A string enum for Typer, built from the constant that the code acting on it checks."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


ComponentOpt = _choices("ComponentOpt", COMPONENTS)
IndexTypeOpt = _choices("IndexTypeOpt", INDEX_TYPES)
StorageOpt = _choices("StorageOpt", STORAGES)
StoreOpt = _choices("StoreOpt", STORE_NAMES)
IfExistsOpt = _choices("IfExistsOpt", IF_EXISTS)
ModeOpt = _choices("ModeOpt", SEARCH_MODES)
EngineOpt = _choices("EngineOpt", ENGINES)
MentionsOpt = _choices("MentionsOpt", MENTION_SOURCES)

# Options that several commands declare with the same name, type and help.
ModelOption = Annotated[Optional[str], typer.Option(
    help="HF id, local path, .gguf or packaged alias (default gemma3-270m)")]
LayerOption = Annotated[Optional[str], typer.Option(
    "--layer", "--block", help="0-based block, or blocks joined by + whose vectors are "
    "concatenated (e.g. 15+7)")]
COMPONENT_HELP = "attention component or block output"
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]
SeedOption = Annotated[int, typer.Option(help="seed of the sample")]


def friendly_errors(func):
    """Known errors become one line on stderr and exit code 1; never a traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NerRetrieverError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except pydantic.ValidationError as exc:  # a setting a config model refused
            err.print(f"[red]error:[/red] {settings_error(exc)}", highlight=False, markup=True,
                      soft_wrap=True)
            raise typer.Exit(1) from None
        except sqlite3.DatabaseError as exc:  # damage that the checks on open could not see
            err.print(f"[red]error:[/red] index file is corrupt: catalog.sqlite: {exc}",
                      highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: committed batches are kept; rerun with --if-exists skip "
                      "to resume")
            raise typer.Exit(INTERRUPTED_EXIT) from None

    return wrapper


def settings_error(exc: pydantic.ValidationError) -> str:
    """A refused setting as one line per field: ``block: ...``, without pydantic's links."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def quiet_transformers() -> None:
    """Transformers' warnings and download bars would bury the command's own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def log(message: str) -> None:
    """A training log line on stderr, printed as is."""
    err.print(message, highlight=False, markup=False)


def progress(redirect_stdout: bool = True) -> Progress:
    """A bar on stderr; ``redirect_stdout=False`` where stdout carries data printed meanwhile."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} docs/s, {task.fields[mentions]} mentions"),
                    TimeElapsedColumn(), console=err, transient=False,
                    redirect_stdout=redirect_stdout)


def stage_progress():
    """A rich progress bar driven by ``(stage, done, total)`` callbacks, on stderr."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    return bar, update


def split_list(values: Optional[list[str]]) -> Optional[list[str]]:
    """Repeatable options that also take comma-separated lists: ``--type a,b --type c``."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]
