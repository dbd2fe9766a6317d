"""What every ``edujobs`` command shares: error exits, ``--json`` and ``--as`` options, JSON payloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from sqlalchemy import Engine

err = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]
Operator = Annotated[
    str | None, typer.Option("--as", help="Who does this, for the audit log (default: OS user)")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error (unwrapped, so logs keep it on one line); return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def database() -> Engine:
    """The configured database, once it is known to be migrated; else exit 1 with one line saying
    to run ``edujobs db upgrade`` (nothing is created: only the migrations make tables). A database
    that does not answer is left to the command, which reports it where it uses it."""
    from sqlalchemy.exc import SQLAlchemyError

    from store.db import get_engine
    from store.migrate import NotMigratedError, check_migrated

    engine = get_engine()
    try:
        check_migrated(engine)
    except NotMigratedError as e:
        raise fail(str(e), 1) from None
    except SQLAlchemyError:
        pass
    return engine


def parse_payload(text: str) -> dict[str, Any]:
    """An actor's arguments given as a JSON object on the command line; exit 2 saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(
            f"PAYLOAD is not valid JSON ({e.msg} at position {e.pos}): pass a JSON object", 2
        ) from None
    if not isinstance(data, dict):
        raise fail("PAYLOAD must be a JSON object of the actor's arguments, e.g. '{\"user_id\": 1}'", 2)
    return data


@contextmanager
def progress(description: str, total: int, *, quiet: bool = False) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for a long action (hidden with ``--json`` or off a terminal); yields
    the function to call once per item done."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
