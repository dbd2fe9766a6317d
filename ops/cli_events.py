"""``edujobs events``: every domain event, its handlers, their bindings and backlog (``ops.events``)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from contracts.errors import EdujobsError
from contracts.events import EVENTS_EXCHANGE, UNROUTED_QUEUE
from ops.cli_common import AsJson, fail

console = Console()


def _fmt(value: Any) -> str:
    return "?" if value is None else str(value)


def events(as_json: AsJson = False) -> None:
    """Per event and handler: bound on edujobs.events or not, ready, held by workers, delayed,
    parked, dead, consumers; and how many events no handler was bound to (events.unrouted)."""
    from brokers.settings import get_settings
    from ops.events import overview, problem

    settings = get_settings()
    try:
        view = overview(management_url=settings.rabbitmq_management_url, rabbitmq_url=settings.rabbitmq_url)
    except EdujobsError as e:
        raise fail(f"{e} (is RabbitMQ's management plugin on? see EDUJOBS_RABBITMQ_MANAGEMENT_URL)") from None
    if as_json:
        print(json.dumps(view))
        return
    table = Table(
        "event", "handler (queue)", "bound", "ready", "unacked", "delayed", "parked", "dead", "consumers"
    )
    for event in view["events"]:
        for index, handler in enumerate(event["handlers"] or [{}]):
            bound = handler.get("bound")
            table.add_row(
                event["event"] if index == 0 else "",
                handler.get("handler", "[dim]none: kept in events.unrouted[/]"),
                "" if bound is None else ("[green]yes[/]" if bound else "[red]no[/]"),
                *(
                    _fmt(handler.get(k))
                    for k in ("ready", "unacked", "delayed", "waiting", "dead", "consumers")
                ),
            )
    console.print(table)
    console.print(
        f"{UNROUTED_QUEUE} (published to {EVENTS_EXCHANGE}, no handler bound): {_fmt(view['unrouted'])}"
    )
    found = problem(view)
    if found is not None:
        console.print(f"[yellow]{found}[/]", highlight=False)
