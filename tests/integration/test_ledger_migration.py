"""Migration 0006 (ledger owners, claim tokens, keys per channel) on a ledger already in use, on
PostgreSQL and SQLite: the rows written before it keep their meaning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from contracts.errors import InProgressError
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import current, heads, upgrade
from store.models import Delivery
from store.once import perform_once
from tests.services import postgres_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with postgres_database() as url:
        yield url


def old_row(key: str, status: str, minutes_ago: float, provider_id: str | None = None) -> dict[str, object]:
    claimed = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"idempotency_key": key, "channel": "email", "actor_name": "notifications.send_email",
            "message_id": f"m-{key}", "status": status, "claimed_at": claimed, "attempts": 1,
            "provider_message_id": provider_id}  # fmt: skip


def test_rows_written_before_the_migration_keep_their_meaning(url: str) -> None:
    # Given a ledger at the revision before owners, with a sent, a failed and two pending rows
    upgrade(url, "0005_schedules")
    engine: Engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(insert(Delivery.__table__).values([  # type: ignore[arg-type]
            old_row("sent", "sent", 60, "sg-1"),
            old_row("failed", "failed", 60),
            old_row("young", "pending", 1),
            old_row("old", "pending", 30),
        ]))  # fmt: skip
    # When the database is upgraded
    upgrade(url)
    assert current(url) == heads()
    ledger = Ledger(engine, lease_seconds=600)
    sent: list[str] = []

    def send(key: str) -> str:
        sent.append(key)
        return f"new-{key}"

    def once(key: str) -> str:
        return perform_once(ledger, key, channel="email", actor_name="a", message_id="m",
                            action=lambda: send(key)).status  # fmt: skip

    # Then a sent row is still done, a failed one is sent by its retry
    assert once("sent") == "duplicate"
    assert once("failed") == "done"
    # A pending claim of unknown phase waits out its old lease, then is an unknown outcome (held)
    with pytest.raises(InProgressError) as raised:
        once("young")
    assert raised.value.retry_after is not None and 500 < raised.value.retry_after <= 601
    assert once("old") == "unknown"
    assert sent == ["failed"]
    # And the same key on another channel is another side effect
    assert perform_once(ledger, "sent", channel="sms", actor_name="a", message_id="m",
                        action=lambda: "SM1").status == "done"  # fmt: skip
    ledger.close()
    engine.dispose()
