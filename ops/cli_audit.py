"""``edujobs audit-archive``: the audit rows archived to storage (``store.audit_archive``).

``list`` shows the archive's files (one line per manifest: month, rows, id range, state); ``restore``
puts archived rows back into ``audit_logs`` with their ids (a row already there is skipped), and is
itself audited under ``--as``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops.cli_common import AsJson, Operator, database, fail
from ops.dlq import default_operator

audit_archive_app = typer.Typer(
    help="Audit-log rows archived to storage after EDUJOBS_AUDIT_RETENTION_DAYS.", no_args_is_help=True
)
console = Console()

Month = Annotated[str | None, typer.Option(help="Only this month's files (YYYY-MM, the rows' month)")]


def _month(month: str | None) -> str | None:
    if month is not None and not (len(month) == 7 and month[4] == "-" and month.replace("-", "").isdigit()):
        raise fail(f"--month {month!r}: expected YYYY-MM", 2)
    return month


@audit_archive_app.command("list")
def list_files(month: Month = None, as_json: AsJson = False) -> None:
    """The archive's files, oldest rows first: rows, id and time range, state (--json: each whole
    manifest, checksum included)."""
    from store import audit_archive
    from store.storage import get_storage

    manifests = audit_archive.manifests(get_storage(), _month(month))
    if as_json:
        print(json.dumps([m.__dict__ for m in manifests]))
        return
    table = Table("file", "rows", "ids", "from", "to", "state")
    for m in manifests:
        table.add_row(
            m.key, str(m.rows), f"{m.first_id}-{m.last_id}", m.first_at[:19], m.last_at[:19], m.state
        )
    console.print(table)
    console.print(f"{sum(m.rows for m in manifests)} archived audit rows in {len(manifests)} files.")


@audit_archive_app.command()
def restore(month: Month = None, operator: Operator = None, as_json: AsJson = False) -> None:
    """Put archived rows (of --month, or all) back into audit_logs, keeping their ids; rows already
    there are skipped, so it can be repeated. Audited."""
    from store import audit, audit_archive
    from store.storage import get_storage

    engine = database()
    month = _month(month)
    inserted = audit_archive.restore(engine, get_storage(), month)
    by = operator or default_operator()
    audit.record(
        engine, actor=by, action="audit.restore", target=month or "all", details={"restored": inserted}
    )
    if as_json:
        print(json.dumps({"month": month, "restored": inserted, "by": by}))
        return
    console.print(f"Restored {inserted} audit rows ({month or 'every month'}).", highlight=False)
