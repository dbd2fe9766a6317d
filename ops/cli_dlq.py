"""``edujobs dlq``: review the dead letters, requeue, purge and export them (``ops.dlq`` does the work).

Listing never removes or reorders a dead letter. ``requeue`` and ``purge`` ask for confirmation
(``--yes`` skips it, ``--dry-run`` only says what would happen); they, ``export`` and ``show --reveal``
are written to the audit log under ``--as`` (the OS user by default). ``show`` and ``export`` redact
personal data unless ``--reveal``. ``list``, ``show`` and ``export`` read, with ``--archived``, the
dead letters archived to storage before their TTL (``maintenance.archive_dead_letters``).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.cli_common import AsJson, Operator, err, fail, progress
from ops.dlq import DeadLetterError, DeadLetters, NotFound, Selection, default_operator

dlq_app = typer.Typer(help="Dead letters: review, requeue, purge, export.", no_args_is_help=True)
console = Console()

Archived = Annotated[
    bool, typer.Option("--archived", help="The dead letters archived to storage, not those of Q.XQ")
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: str, option: str) -> int:
    """``30m``, ``12h``, ``7d``, ``2w`` → milliseconds; exit 2 saying what is expected otherwise."""
    match = _DURATION.match(value.strip())
    if not match:
        raise fail(f"{option} {value!r} is not a duration: use a number and a unit, e.g. 30m, 12h, 7d, 2w", 2)
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def _service() -> DeadLetters:
    from brokers.settings import get_settings
    from ops.cli_common import database

    return DeadLetters(get_settings().rabbitmq_url, engine=database())


def _when(ms: Any) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(table: Table, *cells: Any) -> None:
    # Plain text, never console markup: a dead letter's fields are whatever its producer wrote, and
    # "[/x]" in an error would make rich raise instead of showing it.
    table.add_row(*(Text(str(cell)) for cell in cells))


def _run(action: Any) -> Any:
    try:
        return action()
    except NotFound as e:
        raise fail(str(e), 1) from None
    except DeadLetterError as e:
        raise fail(str(e), 2 if "unknown queue" in str(e) or "exactly one" in str(e) else 1) from None


@dlq_app.command("stats")
def stats(as_json: AsJson = False) -> None:
    """Per queue: how many dead letters, the oldest, the causes (fingerprints) with a sample error,
    and how many were archived to storage."""
    result = _run(lambda: _service().stats())
    if as_json:
        print(json.dumps(result))
        return
    table = Table(
        "queue", "count", "oldest failure", "fingerprint", "n", "actor", "reason", "sample error", "archived"
    )
    for queue in result:
        groups = queue["groups"] or [None]
        for index, group in enumerate(groups):
            archived = "?" if queue["archived"] is None else str(queue["archived"])
            head = (queue["queue"], str(queue["count"]), _when(queue["oldest"])) if index == 0 else ("",) * 3
            tail = (
                (
                    group["fingerprint"],
                    str(group["count"]),
                    group["actor"],
                    group["reason"],
                    group["sample_error"][:80],
                )
                if group
                else ("", "", "", "", "")
            )
            _row(table, *head, *tail, archived if index == 0 else "")
    console.print(table)


@dlq_app.command("list")
def list_(
    queue: Annotated[str, typer.Argument(help="Domain queue, e.g. notifications")],
    actor: Annotated[str | None, typer.Option(help="Only this actor")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason, e.g. permanent_error")] = None,
    since: Annotated[str | None, typer.Option(help="Only failures in the last DURATION, e.g. 2h, 7d")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 100,
    archived: Archived = False,
    as_json: AsJson = False,
) -> None:
    """List a queue's dead letters, oldest first (nothing is removed); --archived: its archive's."""
    since_ms = None if since is None else int(time.time() * 1000) - parse_duration_ms(since, "--since")
    letters = _run(
        lambda: _service().list(
            queue, actor=actor, reason=reason, since_ms=since_ms, limit=limit, archived=archived
        )
    )
    if as_json:
        print(json.dumps([x.summary() for x in letters]))
        return
    table = Table("#", "id", "actor", "reason", "attempts", "last failure", "fingerprint", "error")
    for x in letters:
        s = x.summary()
        _row(
            table, s["position"], s["id"], s["actor"], s["reason"], s["attempts"] or "",
            _when(s["last_failure_at"]), s["fingerprint"], s["error"][:60],
        )  # fmt: skip
    console.print(table)
    where = f"the archive of {queue}" if archived else f"{queue}.XQ"
    console.print(f"{len(letters)} dead letters in {where}", highlight=False)


@dlq_app.command("show")
def show(
    dead_letter_id: Annotated[str, typer.Argument(help="A dead letter id from `dlq list`")],
    queue: Annotated[str | None, typer.Option(help="Look only in this queue")] = None,
    reveal: Annotated[bool, typer.Option(help="Show personal data (written to the audit log)")] = False,
    archived: Archived = False,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Show one dead letter: its record, traceback and arguments (personal data redacted)."""
    detail = _run(
        lambda: _service().show(
            dead_letter_id, queue=queue, reveal=reveal, operator=operator, archived=archived
        )
    )
    if as_json:
        print(json.dumps(detail, default=str))
        return
    table = Table(show_header=False)
    for key, value in detail.items():
        if key in ("first_failure_at", "last_failure_at", "message_timestamp"):
            value = _when(value)
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        _row(table, key, shown)
    console.print(table)


def _selection(ids: list[str] | None, fingerprint: str | None, all_: bool) -> Selection:
    try:
        return Selection(ids=frozenset(ids or ()), fingerprint=fingerprint, all=all_)
    except DeadLetterError:
        raise fail(
            "choose what to requeue with exactly one of --id ID (repeatable), --fingerprint F or --all", 2
        ) from None


def _confirm(what: str, yes: bool, as_json: bool) -> None:
    if yes:
        return
    if as_json:
        raise fail("--json does not ask for confirmation: add --yes (or --dry-run to only look)", 2)
    if not typer.confirm(what):
        raise fail("cancelled, nothing changed", 1)


@dlq_app.command("requeue")
def requeue(
    queue: Annotated[str, typer.Argument(help="Domain queue, e.g. notifications")],
    ids: Annotated[list[str] | None, typer.Option("--id", help="A dead letter id (repeatable)")] = None,
    fingerprint: Annotated[str | None, typer.Option(help="Every dead letter of this cause")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter of the queue")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be requeued")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Send dead letters back to their queue (confirmed before removal; retries reset; same id)."""
    selection = _selection(ids, fingerprint, all_)
    service = _service()
    planned = _run(lambda: service.requeue(queue, selection, dry_run=True))
    missing = sorted(selection.ids - set(planned.ids) - {s["id"] for s in planned.skipped})
    if missing:
        raise fail(
            f"no dead letter {', '.join(missing)} in {queue}.XQ: nothing was requeued "
            f"(see `edujobs dlq list {queue}` for the ids)"
        )
    if not dry_run and planned.count:
        _confirm(f"requeue {planned.count} dead letters of {queue}.XQ to {queue}?", yes, as_json)
    planned.dry_run = dry_run  # nothing selected: nothing to do, and say so plainly
    if dry_run or not planned.count:
        _report(planned.as_dict(), as_json)
        return
    with progress(f"requeueing to {queue}", planned.count, quiet=as_json) as advance:
        result = _run(
            lambda: service.requeue(
                queue,
                selection,
                operator=operator or default_operator(),
                after_publish=lambda _letter: advance(),
            )
        )
    _report(result.as_dict(), as_json)


@dlq_app.command("purge")
def purge(
    queue: Annotated[str, typer.Argument(help="Domain queue, e.g. notifications")],
    fingerprint: Annotated[str | None, typer.Option(help="Only the dead letters of this cause")] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Only dead letters that failed before DURATION ago, e.g. 7d")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Remove dead letters for good: all of the queue's, or one cause's (--fingerprint), and of those
    only the ones older than --older-than if given."""
    older_ms = None if older_than is None else parse_duration_ms(older_than, "--older-than")
    service = _service()

    def run(dry: bool, by: str | None = None) -> Any:
        return _run(
            lambda: service.purge(
                queue, fingerprint=fingerprint, older_than_ms=older_ms, dry_run=dry, operator=by
            )
        )

    planned = run(True)
    cause = f" of cause {fingerprint}" if fingerprint else ""
    if not dry_run and planned.count:
        _confirm(f"delete {planned.count} dead letters{cause} of {queue}.XQ for good?", yes, as_json)
    planned.dry_run = dry_run  # nothing selected: nothing to do, and say so plainly
    result = planned if dry_run or not planned.count else run(False, operator or default_operator())
    _report(result.as_dict(), as_json)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    verb = "would " + result["action"] if result["dry_run"] else result["action"] + "d"
    console.print(f"{verb} {result['count']} dead letters of {result['queue']}", highlight=False)
    for skipped in result["skipped"]:
        console.print(f"  skipped {skipped['id']}: {skipped['why']}", highlight=False, markup=False)


@dlq_app.command("export")
def export(
    queue: Annotated[str, typer.Argument(help="Domain queue, e.g. notifications")],
    file: Annotated[Path, typer.Argument(help="Where to write JSON lines ('-' for stdout)")],
    reveal: Annotated[
        bool, typer.Option(help="Write personal data unredacted (full messages; written to the audit log)")
    ] = False,
    archived: Archived = False,
    operator: Operator = None,
) -> None:
    """Write every dead letter of a queue as JSON lines (personal data redacted unless --reveal;
    nothing is removed; audited); --archived: those of its archive."""
    by = operator or default_operator()
    service = _service()

    def run(write: Any, destination: str) -> Any:
        return _run(
            lambda: service.export(
                queue, write, reveal=reveal, destination=destination, operator=by, archived=archived
            )
        )

    if str(file) == "-":
        import sys

        run(sys.stdout.write, "-")
        return
    with file.open("w", encoding="utf-8") as out:
        count = run(out.write, str(file.resolve()))
    shown = "unredacted" if reveal else "personal data redacted"
    where = f"the archive of {queue}" if archived else f"{queue}.XQ"
    err.print(f"exported {count} dead letters of {where} to {file} ({shown})", highlight=False)
