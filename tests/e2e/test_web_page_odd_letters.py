"""The operators' page, in headless Chromium, with the corpus of odd dead letters (``tests.odd_letters``)
and an archived one: it loads, shows each cause and letter, says which were archived, and purges a
cause (issue 14, findings 7 and 9: the page failed to load at all with one such letter)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from actors.maintenance.dead_letters import archive_dead_letters
from store import tokens
from store.db import make_engine
from store.storage import LocalStorage, get_storage
from tests.amqp import depth
from tests.e2e.test_web_page import api_url, browser  # noqa: F401  (fixtures)
from tests.integration.test_dlq import topology  # noqa: F401  (fixture)
from tests.odd_letters import publish_odd_letters
from tests.worker import wait_until

DAY_MS = 86_400_000


def test_the_page_shows_and_purges_odd_letters_and_counts_archived_ones(
    edujobs_env: dict[str, str],
    topology: str,  # noqa: F811
    api_url: str,  # noqa: F811
    browser: WebDriver,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = topology
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path}")
    get_storage.cache_clear()
    try:
        # Given the odd letters archived once (nothing dates them), then published again
        letters = publish_odd_letters(url)
        archive_dead_letters(url, LocalStorage(tmp_path), ttl_ms=14 * DAY_MS, margin_ms=2 * DAY_MS)
        publish_odd_letters(url)
        engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
        token = tokens.create(engine, name="oncall", scopes=["ops:write"], created_by="test")
        engine.dispose()
        # When the operator opens the page with a token
        browser.get(api_url + "/ui/")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait = WebDriverWait(browser, 30)
        # Then the page loads without an error, with the causes of the odd letters and the archive
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Up to date"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#dlq tr[data-queue=maintenance]")
        assert rows
        archived = browser.find_element(By.ID, "dlq-archived").text
        assert f"maintenance {len(letters)}" in archived
        # And each cause's letters can be listed and one opened
        undecodable = next(row for row in rows if "undecodable" in row.text)
        undecodable.find_element(By.CSS_SELECTOR, "button[data-action=inspect]").click()
        first = wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#letters tbody tr"))
        )
        first.find_element(By.CSS_SELECTOR, "button[data-action=details]").click()
        detail = wait.until(expected_conditions.visibility_of_element_located((By.ID, "letter-detail")))
        assert '"not_requeueable"' in detail.text
        # When the operator purges that cause
        before = depth(url, "maintenance.XQ")
        undecodable.find_element(By.CSS_SELECTOR, "button[data-action=purge]").click()
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "confirm-yes"))).click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Purged"))
        # Then its letters are gone from maintenance.XQ, the others stay, and the page reloads cleanly
        wait_until(lambda: depth(url, "maintenance.XQ") < before, what="the purge")
        assert depth(url, "maintenance.XQ") > 0
        assert "error" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")
    finally:
        get_storage.cache_clear()
