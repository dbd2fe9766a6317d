"""Bulk email's pieces: the token bucket's pacing, the batches' shape, the names' escaping."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from actors.notifications.bulk import TokenBucket, batches_of, send_bulk_email
from actors.notifications.providers.sendgrid import MAX_PERSONALIZATIONS
from actors.notifications.service import Notifier
from brokers.settings import Settings
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.models import User
from tests.fakes.sendgrid import FakeSendGrid


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_bucket_paces_requests_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, clock=clock)
    # When ten requests are made as fast as possible
    for _ in range(10):
        bucket.acquire(sleep=clock.sleep)
    # Then they took nine intervals of 1/5 s (the first one went at once)
    assert abs(clock.now - 9 / 5) < 1e-9


def test_an_idle_bucket_allows_a_burst_no_larger_than_its_size() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=3, clock=clock)
    clock.now = 100.0  # idle for a long time
    slept = [bucket.acquire(sleep=clock.sleep) for _ in range(4)]
    assert slept == [0.0, 0.0, 0.0, 1.0]


def test_batches_cover_each_id_once_in_a_stable_order() -> None:
    ids = [*range(2500, 0, -1), 7, 7]
    batches = batches_of(ids)
    assert [len(b) for b in batches] == [MAX_PERSONALIZATIONS, MAX_PERSONALIZATIONS, 500]
    assert batches[0][:3] == [1, 2, 3] and [i for b in batches for i in b] == sorted(set(ids))


def test_names_go_into_the_html_part_escaped(tmp_path: Path, fake_sendgrid: FakeSendGrid) -> None:
    # Given a recipient whose name looks like markup
    url = f"sqlite:///{tmp_path}/bulk.db"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        session.add(User(id=1, name='<b>Bo</b> & "co"', role="student", email="bo@example.edu"))
        session.commit()
    settings = Settings(sendgrid_api_key="SG.k", sendgrid_host=fake_sendgrid.url, email_from="s@example.edu")
    notifier = Notifier(engine=engine, ledger=Ledger(engine), settings=settings)
    # When a bulk email addressing each recipient by name is sent
    send_bulk_email(notifier, TokenBucket(rate=100), user_ids=[1], template="emergency_alert",
                    context={"title": "Closed", "body": "Dear -name-, no school."},
                    idempotency_key="b", message_id="m")  # fmt: skip
    engine.dispose()
    # Then the HTML part's tag is substituted with the escaped name, the text part's with the name
    [body] = fake_sendgrid.mails()
    text, html = (part["value"] for part in body["content"])
    assert "Dear -name-," in text and "Dear -name_html-," in html and "-name-" not in html
    assert body["personalizations"][0]["substitutions"] == {
        "-name-": '<b>Bo</b> & "co"',
        "-name_html-": "&lt;b&gt;Bo&lt;/b&gt; &amp; &quot;co&quot;",
    }
