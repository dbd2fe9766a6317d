"""The ``edujobs`` command line: send messages, migrate and seed the database, export contracts,
declare and check the broker topology.

Every command prints what to fix when its input is wrong and exits with status 2 (usage) or 1
(the operation failed); ``--json`` gives machine-readable output where a command prints data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contracts.errors import ConfigurationError, EdujobsError
from ops.cli_audit import audit_archive_app
from ops.cli_common import AsJson, Operator, database, err, fail, parse_payload
from ops.cli_deliveries import deliveries_app
from ops.cli_dlq import dlq_app
from ops.cli_events import events
from ops.cli_overview import jobs_list, workers
from ops.cli_queues import queues_app
from ops.cli_reports import reports_app
from ops.cli_schedules import scheduler, schedules_app

app = typer.Typer(help="Operate edujobs: messages, database, contracts, broker.", no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
contracts_app = typer.Typer(help="Message contracts (JSON Schema).", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: state, progress, errors.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
jobs_app.command("list")(jobs_list)
app.command("workers")(workers)
app.command("events")(events)
app.add_typer(db_app, name="db")
app.add_typer(contracts_app, name="contracts")
app.add_typer(queues_app, name="queues")
app.add_typer(dlq_app, name="dlq")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(audit_archive_app, name="audit-archive")
app.add_typer(schedules_app, name="schedules")
app.add_typer(reports_app, name="reports")
app.command("scheduler")(scheduler)
tokens_app = typer.Typer(help="Bearer tokens of the HTTP API.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")

console = Console()


@app.command()
def send(
    actor: Annotated[str, typer.Argument(help="Actor name, e.g. notifications.send_email")],
    payload: Annotated[str, typer.Argument(help="The actor's arguments as a JSON object")],
    priority: Annotated[str | None, typer.Option(help="critical, high, normal, low or bulk")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds to wait before the job runs")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="At most one job per key")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Validate and send one message; print its id (``jobs show ID`` finds it at once)."""
    from brokers import client

    data = parse_payload(payload)
    try:
        message_id = client.send(actor, data, priority=priority, delay=delay, idempotency_key=idempotency_key)
    except (EdujobsError, ValueError) as e:
        raise fail(str(e), 2 if not isinstance(e, client.PublishError) else 1) from None
    _record_enqueued(message_id, actor, data)
    if as_json:
        print(json.dumps({"message_id": message_id, "actor": actor}))
    else:
        console.print(f"sent {actor} [bold]{message_id}[/]", highlight=False)


def _record_enqueued(message_id: str, actor: str, payload: dict[str, Any]) -> None:
    """Record the sent message as an ``enqueued`` job. The message is sent already: a database that
    cannot record it (not migrated, unreachable) is a warning, not a failure of ``send``."""
    from contracts.registry import get_contract
    from ops.dlq import default_operator
    from store.db import get_engine
    from store.jobs import JobStore, user_id_of

    try:
        queue = get_contract(actor).queue
        JobStore(get_engine()).record_enqueued(
            message_id, actor, queue, user_id=user_id_of(payload), enqueued_by=f"cli:{default_operator()}"
        )
    except Exception as e:
        err.print(
            f"[yellow]warning:[/] sent, but the job could not be recorded ({type(e).__name__}): "
            "`jobs show` will know it once a worker takes it",
            highlight=False,
        )


@db_app.command("upgrade")
def db_upgrade(revision: str = "heads", as_json: AsJson = False) -> None:
    """Migrate the database (EDUJOBS_DATABASE_URL) to the latest revision."""
    from sqlalchemy.exc import SQLAlchemyError

    from brokers.settings import get_settings
    from store.migrate import current, upgrade

    url = get_settings().database_url
    try:
        upgrade(url, revision)
    except SQLAlchemyError as e:
        problem = (str(getattr(e, "orig", None) or e).splitlines() or [""])[0][:300]
        raise fail(
            f"the migration to {revision} failed on {_safe_url(url)} ({type(e).__name__}: {problem}); "
            "fix that (a table no migration made: restore the database or drop it), then run it again"
        ) from None
    if as_json:
        print(json.dumps({"database": _safe_url(url), "revisions": list(current(url))}))
    else:
        console.print(f"database migrated to {revision}: {_safe_url(url)}", highlight=False)


@app.command()
def seed(
    students: Annotated[int, typer.Option(min=1, help="How many students to create")] = 1000,
    random_seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic data")] = 42,
    graded_per_course: Annotated[
        int, typer.Option(min=1, max=60, help="Past, graded assignments per course (3 courses a student)")
    ] = 2,
    attendance_only: Annotated[
        bool, typer.Option("--attendance-only", help="Users, courses, enrollments and attendance only")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Write deterministic demo data (courses, enrollments, grades, attendance, lesson views, payments)."""
    from store.seed import seed as run_seed

    started = time.perf_counter()
    try:
        summary = run_seed(
            database(),
            students=students,
            seed=random_seed,
            graded_per_course=graded_per_course,
            attendance_only=attendance_only,
        )
    except EdujobsError as e:  # already seeded, or not migrated: say what to do
        raise fail(str(e), 1) from None
    seconds = time.perf_counter() - started
    if as_json:
        print(json.dumps({"seconds": round(seconds, 2), "rows": summary}, default=str))
    else:
        console.print(f"seeded in {seconds:.1f}s: {summary}", highlight=False)


@contracts_app.command("export")
def contracts_export(
    directory: Annotated[Path, typer.Argument(help="Where to write the schemas")], as_json: AsJson = False
) -> None:
    """Write one JSON Schema per actor (``<actor name>.schema.json``), the schema of the whole
    message around them (``message.schema.json``, docs/wire-format.md), one per event
    (``event.<name>.schema.json``) and the whole event's (``event-message.schema.json``)."""
    from contracts.event_schema import export_event_schemas
    from contracts.export import export_schemas
    from contracts.message_schema import export_message_schema

    written = export_schemas(directory)
    written.append(export_message_schema(directory))
    events = export_event_schemas(directory)
    if as_json:
        print(json.dumps({"directory": str(directory), "files": [str(p) for p in written + events]}))
    else:
        console.print(
            f"wrote {len(written) - 1} actor schemas, message.schema.json, {len(events) - 1} event schemas "
            f"and event-message.schema.json to {directory}",
            highlight=False,
        )


@jobs_app.command("show")
def jobs_show(
    message_id: Annotated[str, typer.Argument(help="The message id that send printed")],
    reveal: Annotated[
        bool,
        typer.Option(
            "--reveal", help="Show the error and result as recorded, personal data included (audited)"
        ),
    ] = False,
    operator: Operator = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show a job's state, progress, attempts, error and result (personal data redacted unless --reveal)."""
    from rich.table import Table

    from ops.api_jobs import show_job
    from ops.dlq import default_operator

    fields = show_job(database(), message_id, reveal=reveal, operator=operator or default_operator())
    if fields is None:
        raise fail(f"no job {message_id!r} recorded (was it sent, and has a worker seen it yet?)")
    if as_json:
        print(json.dumps(fields, default=str))
        return
    table = Table(show_header=False)
    for key, value in fields.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    message_id: Annotated[str, typer.Argument(help="The message id that send printed")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log and the job's record")] = None,
    unrecorded: Annotated[
        bool,
        typer.Option(
            "--unrecorded",
            help="Cancel an id with no job recorded (its producer records none, e.g. brokers.client)",
        ),
    ] = False,
    operator: Operator = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Cancel a job: a queued one is skipped, a running long one stops at its next progress point."""
    from ops.dlq import default_operator
    from store.jobs import cancel

    by = operator or default_operator()
    state = cancel(database(), message_id, by=by, reason=reason, unrecorded=unrecorded)
    if state == "unknown":
        raise fail(
            f"no job {message_id!r} recorded: check the id (`edujobs send` prints it); if a producer "
            "that records no job sent it, add --unrecorded to cancel it anyway"
        )
    if state != "cancelled":
        raise fail(f"job {message_id!r} is {state} already: there is nothing left to cancel")
    if as_json:
        print(json.dumps({"message_id": message_id, "state": state}))
    else:
        console.print(
            f"cancelled {message_id}: workers skip it (a running long job stops soon)", highlight=False
        )


@app.command()
def health(
    workers: Annotated[
        bool, typer.Option("--workers", help="Also require a worker on every running queue")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Check RabbitMQ, the database (migrated?), Redis if set; exit 0 if all is well, 1 if not (a probe)."""
    from brokers.settings import get_settings
    from ops.health import checks

    result = checks(get_settings(), workers=workers)
    if as_json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            if name != "healthy":
                mark = "[green]ok[/]" if value == "ok" else f"[red]{value}[/]"
                console.print(f"{name}: {mark}", highlight=False)
    if not result["healthy"]:
        raise typer.Exit(1)


@app.command()
def check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check that the settings are valid and RabbitMQ answers; exit 1 with what to do if not."""
    from brokers.health import check_rabbitmq
    from brokers.settings import get_settings

    settings = get_settings()
    problem = check_rabbitmq(settings.rabbitmq_url)
    result: dict[str, Any] = {"rabbitmq": "ok" if problem is None else problem}
    if as_json:
        print(json.dumps(result))
    if problem is not None:
        raise fail(problem)
    if not as_json:
        console.print("rabbitmq: ok")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who uses the token, e.g. lms-backend")],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="ops:read, ops:write, reports, reports:all, enqueue:<queue>, enqueue:*, events:publish, "
            "events:publish:<event> (repeatable)",
        ),
    ],
    operator: Annotated[str | None, typer.Option("--as", help="Who creates it (audit log)")] = None,
    as_json: AsJson = False,
) -> None:
    """Create an API token and print it once (only its SHA-256 hash is stored)."""
    from ops.dlq import default_operator
    from store import tokens

    try:
        by = operator or default_operator()
        token = tokens.create(database(), name=name, scopes=scopes, created_by=by)
    except ValueError as e:
        raise fail(str(e), 2) from None
    print(json.dumps({"name": name, "scopes": scopes, "token": token}) if as_json else token)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name")],
    operator: Annotated[str | None, typer.Option("--as", help="Who revokes it (audit log)")] = None,
    as_json: AsJson = False,
) -> None:
    """Revoke an API token: requests with it get 401 from now on."""
    from ops.dlq import default_operator
    from store import tokens

    if not tokens.revoke(database(), name=name, revoked_by=operator or default_operator()):
        raise fail(f"no active token named {name!r} (see `edujobs tokens list`)")
    if as_json:
        print(json.dumps({"name": name, "revoked": True}))
    else:
        console.print(f"revoked {name}", highlight=False)


@tokens_app.command("list")
def tokens_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the API tokens (names, scopes, dates; never the tokens themselves)."""
    from rich.table import Table

    from store import tokens

    rows = [
        {"name": t.name, "scopes": t.scopes, "created_at": t.created_at, "created_by": t.created_by,
         "revoked_at": t.revoked_at}
        for t in tokens.list_tokens(database())
    ]  # fmt: skip
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("name", "scopes", "created", "by", "revoked")
    for row in rows:
        cells = (", ".join(v) if isinstance(v, list) else "" if v is None else str(v) for v in row.values())
        table.add_row(*cells)
    console.print(table)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: EDUJOBS_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: EDUJOBS_API_PORT")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI spec at /openapi.json, operators' page at /ui/) with uvicorn."""
    import uvicorn

    from brokers.settings import get_settings
    from ops.api import app_from_settings

    settings = get_settings()
    database()  # not migrated: one line and exit 1 before serving anything
    uvicorn.run(app_from_settings(), host=host or settings.api_host, port=port or settings.api_port)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main() -> None:
    try:
        app()
    except ConfigurationError as e:
        err.print(f"[bold red]{e}[/]", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
