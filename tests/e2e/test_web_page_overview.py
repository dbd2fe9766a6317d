"""The operators' page's trends, workers and job search, in headless Chromium, on a real worker's data
(fixtures of ``test_web_page``: the API served by uvicorn, the browser)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine, update

from store import tokens
from store.db import make_engine
from store.jobs import JobStore
from store.types import utcnow
from store.workers import HeartbeatRecorder, WorkerHeartbeat, list_workers
from tests.amqp import dramatiq_message, publish
from tests.e2e.test_web_page import api_url, browser, pytestmark  # noqa: F401  (fixtures, skip mark)
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
SCREENSHOT = Path(os.environ.get("EDUJOBS_SCREENSHOT_DIR", "var/screenshots")) / "ops-page-overview.png"


def test_the_page_shows_trends_workers_and_finds_jobs(
    edujobs_env: dict[str, str],
    api_url: str,  # noqa: F811
    browser: WebDriver,  # noqa: F811
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    key = f"edujobs-test:{uuid.uuid4().hex}"
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": key, "EDUJOBS_HEARTBEAT_SECONDS": "0.5"}
    worker = WorkerProcess(env, module="tests.e2e.actors_testing").wait_ready()
    try:
        # Given a worker that ran five jobs, one of which failed for good
        for n in range(4):
            publish(
                url,
                "maintenance",
                dramatiq_message("testing.record", "maintenance", {"value": f"v{n}"}, key=KEY),
            )
        publish(
            url,
            "maintenance",
            dramatiq_message("testing.fail_permanently", "maintenance", {"user_id": 5}, key=KEY),
        )
        wait_until(lambda: redis.Redis().llen(key) == 5, timeout=30, what="five jobs run")
        # And 60 jobs a service enqueued for user 42, and a worker on another host whose beats stopped
        jobs = JobStore(engine)
        for n in range(60):
            jobs.record_enqueued(f"report-{n:02d}", "reports.generate_report", "reports", user_id=42,
                                 enqueued_by="token:lms")  # fmt: skip
        HeartbeatRecorder(engine).beat({"id": "node-9-77-1", "host": "node-9", "pid": 77, "parent_pid": 1,
                                        "pool": "media", "queues": ["media"], "threads": 8, "in_flight": 1,
                                        "processed": 3, "failed": 0, "interval_seconds": 5.0,
                                        "started_at": utcnow()})  # fmt: skip
        with engine.begin() as connection:
            silent = utcnow() - timedelta(minutes=2)
            connection.execute(
                update(WorkerHeartbeat).where(WorkerHeartbeat.id == "node-9-77-1").values(beat_at=silent)
            )
        wait_until(lambda: _processed(engine) == 5, timeout=30, what="the worker's beat to count five jobs")
        token = tokens.create(engine, name="oncall", scopes=["ops:write"], created_by="test")

        # When an operator opens the page with a token
        browser.set_window_size(1400, 2600)
        browser.get(api_url + "/ui/")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait = WebDriverWait(browser, 20)
        # Then the trends chart the maintenance queue: five ended, one failed
        figure = "#trends figure[data-queue=maintenance]"
        wait.until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, figure), "5 processed, 1 failed"
            )
        )
        totals = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0] + ' polyline')]"
            ".map((line) => [line.getAttribute('class'), line.dataset.total]);",
            figure,
        )
        assert ["processed", "5"] in totals and ["failed", "1"] in totals, totals
        # And the workers: the live one with its five jobs, the silent one flagged stale
        alive = browser.find_element(By.CSS_SELECTOR, "#workers tr[data-status=alive]")
        assert "maintenance" in alive.text and " 5 " in f" {alive.text} "
        stale = browser.find_element(By.CSS_SELECTOR, "#workers tr[data-worker=node-9-77-1]")
        assert stale.get_attribute("data-status") == "stale" and "no heartbeat" in stale.text
        # And the job search lists user 42's jobs, newest first, 50 then the rest with More
        browser.find_element(By.ID, "search-user").send_keys("42")
        browser.find_element(By.CSS_SELECTOR, "#job-search button[type=submit]").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#job-results tr[data-job]")) == 50)
        first = browser.find_element(By.CSS_SELECTOR, "#job-results tr[data-job]")
        assert first.get_attribute("data-job") == "report-59" and "token:lms" in first.text
        browser.find_element(By.ID, "job-more").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#job-results tr[data-job]")) == 60)
        assert not browser.find_element(By.ID, "job-more").is_displayed()
        # And a dead job is found by state, and opens in the Job section
        Select(browser.find_element(By.ID, "search-state")).select_by_visible_text("dead")
        browser.find_element(By.ID, "search-user").clear()
        browser.find_element(By.CSS_SELECTOR, "#job-search button[type=submit]").click()
        dead = wait.until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "#job-results tr[data-state=dead]")
            )
        )
        assert "testing.fail_permanently" in dead.text
        dead.find_element(By.CSS_SELECTOR, "button[data-action=show-job]").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "job"), "does not exist"))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.find_element(By.ID, "trends-section").location_once_scrolled_into_view  # noqa: B018
        time.sleep(0.2)  # let the scroll paint before the screenshot (not a wait on a condition)
        browser.save_screenshot(str(SCREENSHOT))
        # And nothing was loaded from elsewhere than the API
        assert all(
            entry["name"].startswith(api_url)
            for entry in browser.execute_script("return performance.getEntriesByType('resource')")
        )
    finally:
        worker.stop()
        redis.Redis().delete(key)
        engine.dispose()


def _processed(engine: Engine) -> int:
    """Jobs processed, as the beats of this test's worker say (not the made-up silent one)."""
    return sum(view.row.processed for view in list_workers(engine) if view.row.host != "node-9")
