"""The operators' web page, driven in headless Chromium: a requeue clicked in the page reaches the worker."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from brokers.client import Client
from brokers.settings import Settings
from brokers.stack import build_broker
from ops.api import create_app
from store import audit, reports, tokens
from store.db import make_engine
from store.storage import LocalStorage
from tests.integration.test_dlq import dead_letter
from tests.worker import WorkerProcess, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MANAGEMENT = "http://guest:guest@127.0.0.1:15672"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module's tests (it takes some 2 s to start); each test opens
    its own API, on a port (so an origin, with its storage) of its own."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def api_url(edujobs_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    client = Client(edujobs_env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    app = create_app(
        rabbitmq_url=edujobs_env["EDUJOBS_RABBITMQ_URL"],
        engine=engine,
        client=client,
        management_url=MANAGEMENT,
        storage=LocalStorage(tmp_path / "storage"),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, what="the API to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    client.close()
    engine.dispose()


def log_in(browser: WebDriver, api_url: str, token: str) -> WebDriverWait[WebDriver]:
    """Open the page and give it ``token``; a wait for what follows."""
    browser.get(api_url + "/")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    return WebDriverWait(browser, 20)


def test_a_requeue_clicked_in_the_page_reaches_the_worker(
    edujobs_env: dict[str, str], api_url: str, browser: WebDriver
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    key = f"edujobs-test:{uuid.uuid4().hex}"
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    worker = WorkerProcess(
        {**edujobs_env, "EDUJOBS_TEST_KEY": key}, module="tests.e2e.actors_testing"
    ).wait_ready()
    try:
        # Given a dead letter of a job that would now succeed, and an operator's token
        letter = dead_letter(url, "testing.record", {"value": "requeued-from-the-page"}, error="disk full")
        token = tokens.create(engine, name="oncall", scopes=["ops:write"], created_by="test")
        # When the operator opens the page, gives the token, and sees the dead letters grouped by cause
        wait = log_in(browser, api_url, token)
        row = wait.until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "#dlq tr[data-queue=maintenance]")
            )
        )
        assert "testing.record" in row.text and "disk full" in row.text
        assert browser.find_element(By.CSS_SELECTOR, "#queues tr[data-queue=media]").is_displayed()
        # With the schedules and their next runs
        audit_row = "#schedules tr[data-schedule=monthly-compliance-audit]"
        schedule = browser.find_element(By.CSS_SELECTOR, audit_row)
        assert "reports.generate_compliance_audit" in schedule.text and "never" in schedule.text
        # And inspects the group, then clicks Requeue and confirms
        row.find_element(By.CSS_SELECTOR, "button[data-action=inspect]").click()
        listed = wait.until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, f"#letters tr[data-id='{letter['message_id']}']")
            )
        )
        assert "disk full" in listed.text
        row.find_element(By.CSS_SELECTOR, "button[data-action=requeue]").click()
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "confirm-yes"))).click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Requeued 1"))
        # Then the worker runs the job, and the requeue is audited under the token's name
        wait_until(lambda: redis.Redis().lrange(key, 0, -1) == [b"requeued-from-the-page"], timeout=30)
        actions = [(entry.action, entry.actor) for entry in audit.recent(engine)]
        assert ("dlq.requeue", "token:oncall") in actions
        # And the page shows no dead letter left after its refresh
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "dlq"), "No dead letters."))
    finally:
        worker.stop()
        redis.Redis().delete(key)
        engine.dispose()


def test_reports_are_requested_followed_and_downloaded_in_the_page(
    edujobs_env: dict[str, str], api_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    broker = build_broker(Settings(rabbitmq_url=edujobs_env["EDUJOBS_RABBITMQ_URL"]))
    broker.declare_topology(("reports",))  # no worker here: the queue a request goes to
    broker.close()
    # Given a ready report of the analyst's token, its file in the API's storage
    token = tokens.create(engine, name="analyst", scopes=["ops:read", "reports"], created_by="test")
    ready = reports.create_pending(
        engine, "financial-summary", {}, "csv", requested_by=None, requested_token="analyst"
    )
    key = f"reports/financial-summary/financial-summary-{ready.id}.csv"
    stored = LocalStorage(tmp_path / "storage").put_bytes(key, b"# Financial summary\n")
    reports.set_fields(engine, ready.id, status="ready", storage_key=key, size_bytes=stored.size, row_count=2)
    wait = log_in(browser, api_url, token)
    row = wait.until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, f"#reports tr[data-id='{ready.id}']")
        )
    )
    assert "ready" in row.text and "100%" in row.text
    # When the analyst downloads it
    row.find_element(By.CSS_SELECTOR, "button[data-action=download]").click()
    wait.until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, "reports-status"), f"Downloaded report {ready.id}."
        )
    )
    # And asks for a report with a bad parameter, then a good one
    browser.find_element(By.ID, "report-course-ids").send_keys("0")
    browser.find_element(By.CSS_SELECTOR, "#report-form button[type=submit]").click()
    wait.until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, "reports-status"), "parameters.course_ids.0"
        )
    )
    browser.find_element(By.ID, "report-course-ids").clear()
    browser.find_element(By.CSS_SELECTOR, "#report-form button[type=submit]").click()
    # Then it is queued and listed with its progress (no reports worker here: it stays pending)
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "reports-status"), "queued"))
    queued = wait.until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#reports tr[data-status=pending]"))
    )
    assert "course-performance" in queued.text and "pdf" in queued.text
    engine.dispose()


def test_a_wrong_token_is_told_in_the_page(api_url: str, browser: WebDriver) -> None:
    browser.get(api_url + "/ui/")
    browser.find_element(By.ID, "token").send_keys("ej_wrong")
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    WebDriverWait(browser, 20).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "status"), "401: unknown or revoked token")
    )
    # And the page pulls nothing from outside the API's origin
    time.sleep(0.2)
    assert all(
        entry["name"].startswith(api_url)
        for entry in browser.execute_script("return performance.getEntriesByType('resource')")
    )
