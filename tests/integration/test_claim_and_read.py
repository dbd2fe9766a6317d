"""``Ledger.claim_and_read`` and ``unclaim`` on both databases, and ``send_email`` built on them.

On PostgreSQL a new key's claim and the read are one statement; on SQLite, and for a key already
in the ledger, the read is followed by ``Ledger.claim``. Either way the answers are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select
from sqlalchemy.orm import Session

from actors.notifications import service
from actors.notifications.errors import ChannelNotConfiguredError, OptedOutError
from brokers.settings import Settings
from contracts.errors import RecipientError
from store.db import make_engine
from store.ledger import Claim, Ledger
from store.migrate import upgrade
from store.models import Delivery, User
from tests.fakes.sendgrid import FakeSendGrid
from tests.services import postgres_database
from tests.threads import all_at_once

pytestmark = pytest.mark.integration

READ = service._USER_BY_ID


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    def build(url: str) -> Engine:
        upgrade(url)
        engine = make_engine(url, pool_size=10) if url.startswith("postgresql") else make_engine(url)
        with Session(engine) as session:
            session.execute(insert(User), [
                {"id": 1, "name": "Ada", "role": "student", "email": "ada@example.edu"},
                {"id": 2, "name": "Bo", "role": "student", "email": "bo@example.edu", "opted_out": ["email"]},
            ])  # fmt: skip
            session.commit()
        return engine

    if request.param == "sqlite":
        engine = build(f"sqlite:///{tmp_path}/ledger.db")
        yield engine
        engine.dispose()
        return
    with postgres_database(migrated=True) as url:
        engine = build(url)
        yield engine
        engine.dispose()


def claim(ledger: Ledger, key: str, user_id: int = 1) -> tuple[Claim, dict[str, Any] | None]:
    return ledger.claim_and_read(
        key, channel="email", actor_name="notifications.send_email", message_id="m1", user_id=user_id,
        read=READ, parameters={"user_id": user_id},
    )  # fmt: skip


def rows(engine: Engine) -> list[tuple[str, str, int, str | None]]:
    with Session(engine) as session:
        d = Delivery
        found = session.execute(select(d.idempotency_key, d.status, d.attempts, d.error).order_by(d.id))
        return [tuple(row) for row in found]  # type: ignore[misc]


def statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    return seen


def test_a_new_key_is_claimed_and_the_row_read_in_one_statement_on_postgresql(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.owner  # noqa: B018  (registered once per process, at its first claim)
    seen = statements(engine)
    got, row = claim(ledger, "email:1")
    assert got == Claim(True, "pending") and got.inserted and got.token
    assert row is not None and (row["id"], row["name"], row["email"]) == (1, "Ada", "ada@example.edu")
    assert row["opted_out"] == [] and "claim_inserted_" not in row
    assert len(seen) == (1 if engine.dialect.name == "postgresql" else 2)
    assert rows(engine) == [("email:1", "pending", 1, None)]


def test_a_key_in_the_ledger_is_answered_by_its_status_with_the_row_read(engine: Engine) -> None:
    ledger = Ledger(engine)
    first, _ = claim(ledger, "email:1")
    again, row = claim(ledger, "email:1")
    assert again == Claim(False, "pending") and not again.inserted and again.retry_after
    assert row is not None and row["id"] == 1
    ledger.begin(first)
    ledger.complete(first, provider_message_id="sg-1")
    assert claim(ledger, "email:1")[0] == Claim(False, "sent", "sg-1")
    assert rows(engine) == [("email:1", "sent", 1, None)]


def test_a_read_that_finds_nothing_still_claims(engine: Engine) -> None:
    got, row = claim(Ledger(engine), "email:99", user_id=99)
    assert got.acquired and row is None
    assert rows(engine) == [("email:99", "pending", 1, None)]


def test_unclaiming_a_new_key_leaves_no_row_and_a_later_claim_acquires_it(engine: Engine) -> None:
    ledger = Ledger(engine)
    got, _ = claim(ledger, "email:1")
    ledger.unclaim(got, error="RecipientError: no")
    assert rows(engine) == []
    assert claim(ledger, "email:1")[0].acquired


def test_unclaiming_a_taken_over_key_releases_it_as_failed_with_the_new_reason(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.release(claim(ledger, "email:1")[0], error="ProviderUnavailableError: 503")
    retry, _ = claim(ledger, "email:1")
    assert retry.acquired and not retry.inserted  # a take-over, not an insert
    ledger.unclaim(retry, error="TemplateError: missing")
    assert rows(engine) == [("email:1", "failed", 2, "TemplateError: missing")]


def test_unclaim_leaves_a_row_another_attempt_took_over_alone(engine: Engine) -> None:
    ledger = Ledger(engine, lease_seconds=0)  # every pending row is expired: the next claim takes over
    first, _ = claim(ledger, "email:1")
    second, _ = claim(ledger, "email:1")
    assert second.acquired
    ledger.unclaim(first, error="late")  # the first attempt's row is no longer its own
    assert [(key, status) for key, status, _, _ in rows(engine)] == [("email:1", "pending")]


def test_threads_claiming_one_new_key_at_once_acquire_it_once(engine: Engine) -> None:
    ledger = Ledger(engine)
    claims = all_at_once(8, lambda: claim(ledger, "email:1")[0])
    assert sorted(c.acquired for c in claims) == [False] * 7 + [True]
    assert rows(engine) == [("email:1", "pending", 1, None)]


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()


def notifier(engine: Engine, sendgrid: FakeSendGrid) -> service.Notifier:
    settings = Settings(
        sendgrid_api_key="SG.key", sendgrid_host=sendgrid.url, email_from="school@example.edu"
    )
    return service.Notifier(engine=engine, ledger=Ledger(engine), settings=settings)


def send(notifier: service.Notifier, user_id: int, template: str = "welcome") -> service.DeliveryResult:
    return service.send_email(
        notifier, user_id=user_id, template=template, context={}, idempotency_key=f"email:{user_id}",
        message_id="m1",
    )  # fmt: skip


def test_send_email_sends_once_and_answers_a_redelivery_from_the_ledger(
    engine: Engine, sendgrid: FakeSendGrid
) -> None:
    n = notifier(engine, sendgrid)
    first = send(n, 1)
    assert first.status == "sent" and first.provider_message_id
    assert send(n, 1) == service.DeliveryResult("duplicate", "email:1", first.provider_message_id)
    [request] = sendgrid.requests
    assert request.json()["personalizations"][0]["to"] == [{"email": "ada@example.edu", "name": "Ada"}]
    assert rows(engine) == [("email:1", "sent", 1, None)]


@pytest.mark.parametrize(
    ("user_id", "template", "error", "says"),
    [
        (99, "welcome", RecipientError, "user 99 does not exist"),
        (2, "welcome", OptedOutError, "user 2 opted out of email"),
        (1, "no_such_template", Exception, "no_such_template"),
    ],
)
def test_send_email_that_fails_before_sending_leaves_the_ledger_as_it_was(
    engine: Engine, sendgrid: FakeSendGrid, user_id: int, template: str, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        send(notifier(engine, sendgrid), user_id, template)
    assert rows(engine) == [] and sendgrid.requests == []


def test_send_email_without_configuration_claims_nothing(engine: Engine) -> None:
    n = service.Notifier(engine=engine, ledger=Ledger(engine), settings=Settings(sendgrid_api_key=""))
    with pytest.raises(ChannelNotConfiguredError, match="EDUJOBS_SENDGRID_API_KEY"):
        send(n, 1)
    assert rows(engine) == []
