"""The dead-letter archive's pieces that need no RabbitMQ: the contract's queues, the archive files'
names and lines, and how the archival dates a letter."""

from __future__ import annotations

import gzip
import json
import typing
from pathlib import Path

from actors.maintenance.dead_letters import _arrival_ms
from brokers.topology import DOMAIN_QUEUES
from contracts.maintenance import DomainQueue
from store import dead_letter_archive
from store.storage import LocalStorage


def test_the_contract_names_exactly_the_domain_queues() -> None:
    assert typing.get_args(DomainQueue) == DOMAIN_QUEUES


def test_an_archive_file_is_named_by_queue_day_run_and_count_and_holds_the_letters(tmp_path: Path) -> None:
    # Given two letters, one with headers JSON cannot carry as they are
    storage = LocalStorage(tmp_path)
    letters = [
        dead_letter_archive.archived_letter("media", b"\xff\x00raw", {"x-edujobs-error": b"\xff"}, 3, 10, 1),
        dead_letter_archive.archived_letter("media", b"{}", None, None, None, 1),
    ]
    # When they are written on 2026-12-03 at 02:30:05 UTC
    key = dead_letter_archive.write(storage, "media", letters, now_ms=1_796_265_005_000)
    # Then the file's name says where, when and how many, and each line is one letter, byte for byte
    assert key.startswith("dead-letters/media/2026-12-03/023005-") and key.endswith("-n2.jsonl.gz")
    lines = [json.loads(line) for line in gzip.decompress(storage.get_bytes(key)).splitlines()]
    assert [line["headers"] for line in lines] == [{"x-edujobs-error": "\ufffd"}, {}]
    assert [a.body for a in dead_letter_archive.read(storage, "media")] == [b"\xff\x00raw", b"{}"]
    assert dead_letter_archive.count(storage, "media") == 2
    assert dead_letter_archive.count(storage, "reports") == 0


def test_a_letter_is_dated_by_a_timestamp_in_the_past_only() -> None:
    now = 1_800_000_000_000
    assert _arrival_ms(1_799_000_000, now) == 1_799_000_000_000
    for untrusted in (None, 0, -5, True, "1799000000", 1_900_000_000):
        assert _arrival_ms(untrusted, now) is None, untrusted
