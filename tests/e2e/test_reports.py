"""End to end: a report requested over the HTTP API is made by a `dramatiq actors` worker, stored,
announced by email (report_ready, at the fake SendGrid) with its link, and downloaded through the
API by the token that asked (not by another); the same request again is served from the cache."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from brokers.client import Client
from ops.api import create_app
from store import tokens
from store.db import make_engine
from store.seed import seed
from store.storage import LocalStorage
from tests.fakes.sendgrid import FakeSendGrid
from tests.worker import wait_until

STUDENTS = 60
ADMIN_ID = STUDENTS + 1 + 1  # after the students and the one instructor (store.seed)


@pytest.fixture
def engine(edujobs_env: dict[str, str], tmp_path: Path) -> Iterator[Engine]:
    edujobs_env.update(
        {
            "EDUJOBS_STORAGE_URL": f"file:{tmp_path}/storage",
            "EDUJOBS_API_PUBLIC_URL": "https://jobs.example.edu",
        }
    )
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    seed(engine, students=STUDENTS, seed=3)
    yield engine
    engine.dispose()


def bearer(engine: Engine, name: str, *scopes: str) -> dict[str, str]:
    return {
        "Authorization": "Bearer " + tokens.create(engine, name=name, scopes=list(scopes), created_by="test")
    }


def test_a_report_requested_over_http_is_made_stored_emailed_and_downloaded(
    worker_client: Client,
    engine: Engine,
    edujobs_env: dict[str, str],
    fake_sendgrid: FakeSendGrid,
    tmp_path: Path,
) -> None:
    # The API reads the storage the worker writes
    storage = LocalStorage(tmp_path / "storage")
    app = create_app(
        rabbitmq_url=edujobs_env["EDUJOBS_RABBITMQ_URL"], engine=engine, client=worker_client, storage=storage
    )
    asker, other = bearer(engine, "analyst", "reports"), bearer(engine, "someone-else", "reports")
    with TestClient(app) as api:
        # A bad request is refused, naming the field
        bad = {"type": "financial-summary", "format": "csv", "parameters": {"group_by": "year"}}
        refused = api.post("/v1/reports", headers=asker, json=bad)
        assert refused.status_code == 422 and "parameters.group_by" in refused.json()["detail"]
        no_scope = bearer(engine, "ops", "ops:read")
        assert api.post("/v1/reports", headers=no_scope, json={"type": "x"}).status_code == 403
        # When the analyst asks for the financial summary as CSV, for the admin
        body = {"type": "financial-summary", "format": "csv", "parameters": {}, "requested_by": ADMIN_ID}
        queued = api.post("/v1/reports", headers=asker, json=body)
        assert queued.status_code == 202, queued.text
        report_id = queued.json()["id"]
        assert queued.json()["status"] == "pending" and queued.json()["download_url"] is None

        # Then the worker makes it: the report turns ready at 100%, with a download link
        def ready() -> dict[str, Any] | None:
            shown = api.get(f"/v1/reports/{report_id}", headers=asker).json()
            return shown if shown["status"] == "ready" and shown["job_state"] == "succeeded" else None

        wait_until(ready, timeout=60, what="the report ready")
        shown = ready()
        assert shown is not None and shown["progress"] == 100 and shown["rows"] > 0
        assert shown["download_url"].endswith(f"/v1/reports/{report_id}/file")
        # And the admin got the report_ready email with the API's link
        wait_until(lambda: fake_sendgrid.mails(), timeout=30, what="the report_ready email")
        [mail] = fake_sendgrid.mails()
        assert mail["personalizations"][0]["to"][0]["email"] == "admin@example.edu"
        assert "Financial summary" in mail["subject"]
        html = next(c["value"] for c in mail["content"] if c["type"] == "text/html")
        assert f"https://jobs.example.edu/v1/reports/{report_id}/file" in html
        # And the file downloads (streamed) for the token that asked, with the database's figures
        got = api.get(f"/v1/reports/{report_id}/file", headers=asker)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        summary_block = got.text.split("# summary\n", 1)[1].split("\n\n", 1)[0]
        summary = {row["metric"]: row["value"] for row in csv.DictReader(io.StringIO(summary_block))}
        with engine.connect() as connection:
            revenue = connection.execute(
                text("SELECT sum(amount_cents) FROM payments WHERE kind = 'payment'")
            ).scalar_one()
        assert float(summary["revenue"]) == revenue / 100
        # But another token does not see it
        assert api.get(f"/v1/reports/{report_id}/file", headers=other).status_code == 404
        assert api.get(f"/v1/reports/{report_id}", headers=other).status_code == 404
        assert [r["id"] for r in api.get("/v1/reports", headers=asker).json()] == [report_id]
        # And the same request again is served from the cache at once
        again = api.post("/v1/reports", headers=asker, json=body)
        assert again.status_code == 200 and again.json()["id"] == report_id and again.json()["cached"]
