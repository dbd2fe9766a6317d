"""``edujobs jobs list`` (job search, as ``GET /v1/jobs``) and ``edujobs workers`` (heartbeats, as
``GET /v1/workers``), registered by ``ops.cli``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops.cli_common import AsJson, database, fail

console = Console()


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--since: {text!r} is not an ISO 8601 time, e.g. 2026-12-03T10:00:00+00:00", 2) from None
    if when.tzinfo is None:
        raise fail("--since: give a time zone, e.g. 2026-12-03T10:00:00+00:00", 2)
    return when


def jobs_list(
    user_id: Annotated[int | None, typer.Option("--user-id", help="Jobs about this user")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Jobs of this actor, e.g. notifications.send_email")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="enqueued, running, succeeded, failed, dead or cancelled")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after this ISO 8601 time")] = None,
    enqueued_by: Annotated[
        str | None, typer.Option("--enqueued-by", help="token:<name> or cli:<user>")
    ] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page")] = 50,
    as_json: AsJson = False,
) -> None:
    """List jobs newest first, a page at a time (errors redacted); --cursor gives the next page."""
    from ops.api_jobs import job_view
    from store.job_search import JobFilter, JobSearchError, search_jobs

    try:
        where = JobFilter(
            user_id=user_id, actor=actor, state=state, since=_since(since), enqueued_by=enqueued_by
        )
        page = search_jobs(database(), where, cursor=cursor, limit=limit)
    except JobSearchError as e:
        raise fail(str(e), 2) from None
    jobs = [job_view(job) for job in page.jobs]
    if as_json:
        print(json.dumps({"jobs": jobs, "next_cursor": page.next_cursor}, default=str))
        return
    table = Table("id", "actor", "user", "state", "attempts", "recorded", "finished", "by")
    for job in jobs:
        table.add_row(
            job["message_id"], job["actor"], "" if job["user_id"] is None else str(job["user_id"]),
            job["state"], str(job["attempts"]), f"{job['created_at']:%Y-%m-%d %H:%M:%S}",
            f"{job['finished_at']:%H:%M:%S}" if job["finished_at"] else "", job["enqueued_by"] or "",
        )  # fmt: skip
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", highlight=False)


def workers(as_json: AsJson = False) -> None:
    """List the worker processes from their heartbeats; stale ones (beats stopped) are flagged."""
    from brokers.settings import get_settings
    from store.workers import list_workers

    views = list_workers(database(), stale_beats=get_settings().heartbeat_stale_beats)
    rows = [view.as_dict() for view in views]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("status", "pool", "host", "pid", "queues", "threads", "in flight", "processed", "failed",
                  "started", "last beat")  # fmt: skip
    colours = {"alive": "green", "stale": "bold red", "stopped": "dim"}
    for row in rows:
        table.add_row(
            f"[{colours[row['status']]}]{row['status']}[/]", row["pool"], row["host"], str(row["pid"]),
            ",".join(row["queues"]), str(row["threads"]), str(row["in_flight"]), str(row["processed"]),
            str(row["failed"]), row["started_at"][:19].replace("T", " "),
            f"{row['silent_seconds']:.0f}s ago",
        )  # fmt: skip
    console.print(table)
    stale = sum(1 for row in rows if row["status"] == "stale")
    if stale:
        beats = get_settings().heartbeat_stale_beats
        console.print(f"[bold red]{stale} stale worker(s)[/]: no heartbeat for {beats}+ beats")
