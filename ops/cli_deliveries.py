"""``edujobs deliveries``: side effects an operator may have to look at (``store.deliveries``).

``edujobs deliveries`` lists the ledger's unknown outcomes (a request that may or may not have
reached the provider, held back rather than sent twice) and the claims in progress; ``resolve``
records what the operator found out about an unknown outcome (audited under ``--as``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ops.cli_common import AsJson, Operator, fail
from ops.dlq import default_operator

deliveries_app = typer.Typer(
    help="Side effects (emails, SMS, pushes) whose outcome is unknown or in progress.",
    invoke_without_command=True,
)
console = Console()

Channel = Annotated[
    str | None, typer.Option(help="Only this channel (email, sms, push_device, email_bulk...)")
]


def _engine() -> Any:
    from store.db import get_engine

    return get_engine()


@deliveries_app.callback()
def deliveries(
    ctx: typer.Context,
    unknown: Annotated[bool, typer.Option("--unknown", help="Only unknown outcomes")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="Only claims in progress")] = False,
    channel: Channel = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first")] = 100,
    as_json: AsJson = False,
) -> None:
    """Unknown outcomes (held, not sent again: resolve each) and claims in progress, oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    from store.deliveries import open_deliveries

    statuses = tuple(s for s, wanted in (("unknown", unknown), ("pending", pending)) if wanted)
    rows = open_deliveries(
        _engine(), statuses=statuses or ("unknown", "pending"), channel=channel, limit=limit
    )
    if as_json:
        print(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table("status", "channel")
    table.add_column("key", no_wrap=True)  # copied into `resolve`: kept whole
    for header in ("actor", "message id", "user", "attempts", "since", "why"):
        table.add_column(header)
    for row in rows:
        if row.status == "pending":
            silent = row.owner_silent_seconds
            owner = "owner silent" if silent is None else f"owner beat {silent:.0f} s ago"
            why = f"{'sending' if row.sending else 'claimed'}; {owner}"
        else:
            why = row.error or ""
        since = row.completed_at if row.status == "unknown" and row.completed_at else row.claimed_at
        table.add_row(
            "[yellow]unknown[/]" if row.status == "unknown" else "pending",
            row.channel, row.key, row.actor_name, row.message_id, str(row.user_id or ""),
            str(row.attempts), since.strftime("%Y-%m-%d %H:%M:%S"), why,
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print("Nothing to look at: no unknown outcome, no claim in progress.")


@deliveries_app.command()
def resolve(
    key: Annotated[str, typer.Argument(help="The idempotency key, as listed")],
    channel: Annotated[str, typer.Option(help="The channel, as listed (email, sms, push_device...)")],
    sent: Annotated[
        bool | None,
        typer.Option("--sent/--not-sent", help="What the provider (or the person) says happened"),
    ] = None,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Record whether an unknown outcome was sent: --sent (done, never sent again) or --not-sent
    (the next message with this key and channel sends it). Audited."""
    if sent is None:
        raise fail("say what happened: --sent or --not-sent", 2)
    from store.deliveries import resolve as resolve_outcome

    by = operator or default_operator()
    try:
        resolve_outcome(_engine(), key, channel, sent=sent, by=by)
    except LookupError as e:
        raise fail(f"{e.args[0]} (list them with: edujobs deliveries --unknown)") from None
    verdict = "sent" if sent else "not sent"
    if as_json:
        print(json.dumps({"key": key, "channel": channel, "resolved": verdict, "by": by}))
        return
    then = "redeliveries send nothing" if sent else "send it again with the same idempotency key"
    console.print(f"{channel} {key}: resolved as {verdict} ({then}).", highlight=False)
