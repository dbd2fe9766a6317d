"""The media actors on the StubBroker: their options, and a message going through to the service."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from PIL import Image
from sqlalchemy.orm import Session

from actors.media import service
from actors.media.actors import (
    DEADLINE_GRACE_SECONDS,
    IMAGE_TIME_LIMIT_MS,
    RABBITMQ_CONSUMER_TIMEOUT_MS,
    VIDEO_TIME_LIMIT_MS,
    is_last_attempt,
    process_image,
    process_video,
)
from store.db import get_engine
from store.models import Base, MediaAsset
from store.storage import get_storage


def test_media_actors_are_declared_for_a_media_pool() -> None:
    for actor, limit in ((process_video, VIDEO_TIME_LIMIT_MS), (process_image, IMAGE_TIME_LIMIT_MS)):
        assert actor.queue_name == "media"
        assert actor.options["time_limit"] == limit
        # A worker shutdown interrupts the job (ffmpeg is killed) rather than waiting for it
        assert actor.options["notify_shutdown"] is True
    assert process_video.options["max_retries"] == 2


def test_a_video_job_ends_before_rabbitmq_would_redeliver_its_message() -> None:
    # Given RabbitMQ's default consumer_timeout (an unacked delivery older than it is requeued)
    # Then the video job, killed at its limit plus the runner's grace, is over with minutes to spare
    # for the uploads, so no second worker starts on the same asset
    longest_ms = VIDEO_TIME_LIMIT_MS + DEADLINE_GRACE_SECONDS * 1000
    assert RABBITMQ_CONSUMER_TIMEOUT_MS - longest_ms >= 4 * 60_000


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at a SQLite database and local storage of this test."""
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", f"sqlite:///{tmp_path}/edujobs.db")
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path}/storage")
    monkeypatch.setenv("EDUJOBS_MEDIA_TEMP_DIR", str(tmp_path / "work"))
    service.default_media.cache_clear()
    get_storage.cache_clear()
    Base.metadata.create_all(get_engine())
    yield tmp_path
    service.default_media.cache_clear()
    get_storage.cache_clear()


def test_an_image_message_reaches_the_service(
    configured: Path, stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    # Given an uploaded image and its asset row
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "green").save(buffer, "PNG")
    get_storage().put_bytes("uploads/1.png", buffer.getvalue())
    with Session(get_engine()) as session:
        session.add(MediaAsset(id=1, kind="image", source_uri="uploads/1.png"))
        session.commit()
    # When a message asks for its small size
    process_image.send(asset_id=1, sizes=["small"], format="jpeg")
    stub_broker.join("media")
    stub_worker.join()
    # Then the size is in storage and the asset is ready
    assert get_storage().list("media/1/") == ["media/1/image/small.jpg"]
    with Session(get_engine()) as session:
        asset = session.get(MediaAsset, 1)
        assert asset is not None and asset.status == "ready"
    assert list((configured / "work").iterdir()) == []


@pytest.mark.parametrize(("retries_spent", "last"), [(0, False), (1, False), (2, True)])
def test_an_attempt_is_the_last_once_the_actor_s_retries_are_spent(
    stub_broker: StubBroker, retries_spent: int, last: bool
) -> None:
    # Given a video message (2 retries allowed) that has already been retried this many times
    message = process_video.message_with_options(kwargs={"asset_id": 1}, retries=retries_spent)
    current = CurrentMessage()
    current.before_process_message(stub_broker, message)  # type: ignore[no-untyped-call]
    try:
        # Then a failure now is final only once no retry is left (the asset is marked failed then)
        assert is_last_attempt() is last
    finally:
        current.after_process_message(stub_broker, message)  # type: ignore[no-untyped-call]
    # And outside any message (a script calling the service), every failure is final
    assert is_last_attempt() is True
