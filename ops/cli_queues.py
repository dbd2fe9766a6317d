"""``edujobs queues``: the domain queues' figures, pause and resume, topology (``ops.queues`` does the work).

``edujobs queues`` alone lists every queue; ``pause`` and ``resume`` are written to the audit log under
``--as`` (the OS user by default).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from contracts.errors import EdujobsError
from ops.cli_common import AsJson, Operator, database, fail
from ops.dlq import default_operator

queues_app = typer.Typer(
    help="RabbitMQ queues: figures, pause and resume, declare.", invoke_without_command=True
)
console = Console()


def _engine() -> Any:
    return database()


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@queues_app.callback()
def queues(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Per queue: ready, held by workers, delayed, parked, dead, consumers, rates, paused."""
    if ctx.invoked_subcommand is not None:
        return
    from brokers.settings import get_settings
    from ops.queues import overview

    settings = get_settings()
    try:
        rows = overview(
            management_url=settings.rabbitmq_management_url,
            rabbitmq_url=settings.rabbitmq_url,
            engine=_engine(),
        )
    except EdujobsError as e:
        raise fail(f"{e} (is RabbitMQ's management plugin on? see EDUJOBS_RABBITMQ_MANAGEMENT_URL)") from None
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(
        "queue",
        "ready",
        "unacked",
        "delayed",
        "parked",
        "dead",
        "consumers",
        "in/s",
        "done/s",
        "oldest",
        "state",
    )
    for row in rows:
        state = f"[yellow]paused[/] by {row['paused_by']}" if row["paused"] else "[green]running[/]"
        oldest = row["oldest_age_seconds"]
        table.add_row(
            row["queue"],
            _fmt(row["ready"]),
            _fmt(row["unacked"]),
            _fmt(row["delayed"]),
            _fmt(row["waiting"]),
            _fmt(row["dead"]),
            _fmt(row["consumers"]),
            _fmt(row["publish_rate"], 1),
            _fmt(row["ack_rate"], 1),
            "" if oldest is None else f"{oldest:.0f}s",
            state,
        )
    console.print(table)


def _change(action: str, queue: str, operator: str | None, reason: str | None, as_json: bool) -> None:
    from ops import queues as ops_queues

    by = operator or default_operator()
    try:
        ops_queues.check_queue(queue)  # before opening the database
        if action == "pause":
            result = ops_queues.pause(_engine(), queue, by=by, reason=reason)
        else:
            result = ops_queues.resume(_engine(), queue, by=by)
    except ops_queues.UnknownQueueError as e:
        raise fail(str(e), 2) from None
    if as_json:
        print(json.dumps(result))
    elif not result["changed"]:
        console.print(
            f"{queue} was {'paused' if action == 'pause' else 'not paused'} already", highlight=False
        )
    elif action == "pause":
        console.print(
            f"paused {queue}: workers stop taking its messages within a few seconds; they stay queued",
            highlight=False,
        )
    else:
        console.print(
            f"resumed {queue}: workers take its messages again within a few seconds", highlight=False
        )


@queues_app.command("pause")
def pause(
    queue: Annotated[str, typer.Argument(help="The queue, e.g. media")],
    reason: Annotated[str | None, typer.Option(help="Why, for the other operators")] = None,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Stop workers taking QUEUE's messages (nothing is lost; audited)."""
    _change("pause", queue, operator, reason, as_json)


@queues_app.command("resume")
def resume(
    queue: Annotated[str, typer.Argument(help="The queue, e.g. media")],
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Let workers take QUEUE's messages again (audited)."""
    _change("resume", queue, operator, None, as_json)


@queues_app.command("declare")
def declare(as_json: AsJson = False) -> None:
    """Declare every domain queue and event handler queue with its companions (.DQ, .XQ, .park), the
    edujobs.events exchange with the handlers' bindings and events.unrouted, in RabbitMQ; delete an
    earlier version's empty .wait."""
    import brokers
    from brokers.topology import ALL_QUEUES

    broker = brokers.setup(declare=True)
    broker.close()
    if as_json:
        print(json.dumps({"declared": list(ALL_QUEUES)}))
    else:
        console.print("declared: " + ", ".join(ALL_QUEUES), highlight=False)
