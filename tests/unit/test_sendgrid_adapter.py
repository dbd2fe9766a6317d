"""The SendGrid adapter drives the real sendgrid client against a local fake SendGrid."""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sendgrid import SendGridAPIClient

from actors.notifications.providers.retry_after import parse_retry_after
from actors.notifications.providers.sendgrid import Attachment, Email, SendGridMailer
from contracts.errors import ProviderRejectedError, ProviderUnavailableError, RateLimitedError
from store.once import OutcomeUnknownError
from tests.fakes.http import Reply
from tests.fakes.sendgrid import FakeSendGrid


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()


def mailer(server: FakeSendGrid, timeout: float = 5) -> SendGridMailer:
    return SendGridMailer(
        api_key="SG.key",
        host=server.url,
        timeout=timeout,
        from_email="school@example.edu",
        from_name="School",
    )


EMAIL = Email(
    to="ada@example.edu",
    to_name="Ada",
    subject="Hi",
    text="plain",
    html="<p>html</p>",
    categories=("welcome",),
    custom_args={"message_id": "m1"},
    attachments=(Attachment("r.csv", b"a,b\n", "text/csv"),),
)


def test_an_email_arrives_field_by_field(sendgrid: FakeSendGrid) -> None:
    provider_id = mailer(sendgrid).send(EMAIL)
    [request] = sendgrid.requests
    body = request.json()
    assert request.headers["authorization"] == "Bearer SG.key"
    assert provider_id and provider_id.startswith("fake-sg-")
    assert body["personalizations"] == [{"to": [{"email": "ada@example.edu", "name": "Ada"}]}]
    assert body["from"] == {"email": "school@example.edu", "name": "School"}
    assert body["subject"] == "Hi"
    assert body["content"][0] == {"type": "text/plain", "value": "plain"}
    assert body["categories"] == ["welcome"]
    assert body["custom_args"] == {"message_id": "m1"}
    assert base64.b64decode(body["attachments"][0]["content"]) == b"a,b\n"


def test_the_request_is_the_one_the_sdk_itself_makes(sendgrid: FakeSendGrid) -> None:
    # The mailer hands the SDK's _make_request a request through an opener it built once: the
    # method, path, headers and body must be those of the SDK's own client.mail.send.post.
    adapter = mailer(sendgrid)
    body = adapter.body(EMAIL)
    adapter.post(body)
    SendGridAPIClient(api_key="SG.key", host=sendgrid.url).client.mail.send.post(request_body=body)
    ours, sdk = sendgrid.requests
    assert (ours.method, ours.path) == (sdk.method, sdk.path) == ("POST", "/v3/mail/send")
    skip = {"content-length", "host", "connection"}
    assert {k: v for k, v in ours.headers.items() if k not in skip} == {
        k: v for k, v in sdk.headers.items() if k not in skip
    }
    assert ours.json() == sdk.json()


def test_threads_sharing_one_mailer_each_get_their_own_answer(sendgrid: FakeSendGrid) -> None:
    adapter = mailer(sendgrid)
    emails = [Email(to=f"s{n}@example.edu", subject=f"n{n}", text="t", html="h") for n in range(40)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(adapter.send, emails))
    assert len(set(ids)) == 40 and all(ids)
    assert sorted(r.json()["subject"] for r in sendgrid.requests) == sorted(e.subject for e in emails)


def test_429_is_a_rate_limit_carrying_retry_after(sendgrid: FakeSendGrid) -> None:
    sendgrid.queue(Reply(429, {"errors": [{"message": "too many"}]}, {"Retry-After": "7"}))
    with pytest.raises(RateLimitedError) as error:
        mailer(sendgrid).send(EMAIL)
    assert error.value.retry_after == 7


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient(sendgrid: FakeSendGrid, status: int) -> None:
    sendgrid.queue(Reply(status, {"errors": [{"message": "down"}]}))
    with pytest.raises(ProviderUnavailableError):
        mailer(sendgrid).send(EMAIL)


def test_400_is_permanent_with_sendgrids_reason(sendgrid: FakeSendGrid) -> None:
    sendgrid.queue(Reply(400, {"errors": [{"message": "Does not contain a valid address."}]}))
    with pytest.raises(ProviderRejectedError, match="valid address"):
        mailer(sendgrid).send(EMAIL)


def test_a_slow_provider_times_out_as_transient(sendgrid: FakeSendGrid) -> None:
    sendgrid.queue(Reply(202, None, {}, delay=2))
    with pytest.raises(ProviderUnavailableError, match=r"in time|unreachable"):
        mailer(sendgrid, timeout=0.3).send(EMAIL)


def test_a_closed_port_is_transient() -> None:
    closed = SendGridMailer(api_key="k", host="http://127.0.0.1:9", timeout=1, from_email="a@b.c")
    with pytest.raises(ProviderUnavailableError):
        closed.send(EMAIL)


def test_a_503_carries_retry_after_in_either_form(sendgrid: FakeSendGrid) -> None:
    in_a_minute = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    sendgrid.queue(
        Reply(503, {"errors": [{"message": "down"}]}, {"Retry-After": "30"}),
        Reply(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": in_a_minute}),
    )
    with pytest.raises(ProviderUnavailableError) as unavailable:
        mailer(sendgrid).send(EMAIL)
    with pytest.raises(RateLimitedError) as limited:
        mailer(sendgrid).send(EMAIL)
    assert unavailable.value.retry_after == 30
    assert limited.value.retry_after is not None and 55 <= limited.value.retry_after <= 60


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("Wed, 02 Dec 2026 10:02:00 GMT", 120.0),  # IMF-fixdate
        ("Wednesday, 02-Dec-26 10:02:00 GMT", 120.0),  # obsolete RFC 850 form
        ("Tue, 01 Dec 2026 10:00:00 GMT", 0.0),  # already past
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=lambda: now) == seconds


def test_a_timeout_after_sending_is_an_unknown_outcome(sendgrid: FakeSendGrid) -> None:
    # SendGrid may have accepted the email: the ledger must keep its claim (store.once)
    sendgrid.queue(Reply(202, None, {}, delay=2))
    with pytest.raises(OutcomeUnknownError):
        mailer(sendgrid, timeout=0.3).send(EMAIL)
