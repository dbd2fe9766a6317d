"""Actors of the media domain: thin adapters from messages to ``service`` calls.

Both run on the ``media`` queue, so that a pool sized for transcoding serves them
(``dramatiq actors -Q media --threads 1``). ``notify_shutdown`` makes a worker's shutdown interrupt
a running job (its ffmpeg is killed, its temporary files removed, the message retried later), and the
actor's time limit is also handed to the ffmpeg runner as a deadline, so a transcode that outlives
its limit is killed even where Dramatiq's asynchronous exception cannot land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from actors.base import actor, current_message_id, report_progress
from actors.media import service
from actors.media.errors import ProcessingCancelledError

logger = logging.getLogger(__name__)

#: RabbitMQ's default ``consumer_timeout``: a delivery left unacked longer is requeued (and its
#: channel closed), so a second worker would start on the same asset while the first still runs.
RABBITMQ_CONSUMER_TIMEOUT_MS = 30 * 60_000
#: Below the consumer timeout, with room for the deadline grace, the probes and the uploads. Dramatiq
#: acks after the actor returns, so the whole job must fit; longer transcodes need a raised
#: ``consumer_timeout`` (README, "Media": deploying) as well as a higher limit.
VIDEO_TIME_LIMIT_MS = 25 * 60_000
IMAGE_TIME_LIMIT_MS = 2 * 60_000


@actor(
    "media.process_video",
    time_limit=VIDEO_TIME_LIMIT_MS,
    max_retries=2,
    max_backoff=600_000,
    notify_shutdown=True,
)
def process_video(
    asset_id: int,
    renditions: list[str] | None = None,
    hls: bool = True,
    thumbnails: int = 5,
    extract_audio: bool = False,
) -> dict[str, Any]:
    try:
        return service.process_video(
            service.default_media(),
            asset_id=asset_id,
            renditions=renditions,
            hls=hls,
            thumbnails=thumbnails,
            extract_audio=extract_audio,
            deadline=job_deadline(VIDEO_TIME_LIMIT_MS),
            progress=_report_progress,
            should_cancel=cancellation_check(),
            last_attempt=is_last_attempt(),
        )
    except ProcessingCancelledError:
        logger.info("Processing of media asset %d was cancelled.", asset_id)
        return {"asset_id": asset_id, "status": "cancelled"}


@actor(
    "media.process_image",
    time_limit=IMAGE_TIME_LIMIT_MS,
    max_retries=3,
    max_backoff=300_000,
    notify_shutdown=True,
)
def process_image(
    asset_id: int, sizes: list[str], format: str = "webp", watermark: dict[str, Any] | None = None
) -> dict[str, Any]:
    return service.process_image(
        service.default_media(),
        asset_id=asset_id,
        sizes=sizes,
        format=format,
        watermark=watermark,
        progress=_report_progress,
        last_attempt=is_last_attempt(),
    )


#: The runner's own deadline falls this long after the time limit: Dramatiq's TimeLimit (checked
#: every second) normally interrupts first, while the thread waits on ffmpeg, where it is harmless;
#: the deadline is the backstop should the interrupt not come.
DEADLINE_GRACE_SECONDS = 2.0


def job_deadline(default_ms: int) -> float:
    """When the current message's time limit runs out (``time.monotonic()``, plus the grace), as
    Dramatiq's TimeLimit resolves it: the message's option, else its actor's, else ``default_ms``."""
    limit_ms: float = default_ms
    message = CurrentMessage.get_current_message()
    if message is not None:
        actor_options = dramatiq.get_broker().get_actor(message.actor_name).options
        limit_ms = message.options.get("time_limit") or actor_options.get("time_limit", default_ms)
    return time.monotonic() + limit_ms / 1000 + DEADLINE_GRACE_SECONDS


def is_last_attempt() -> bool:
    """Whether a failure of the current message would be its last (no retry follows), as the
    Retries middleware decides: the retries spent so far against its ``max_retries``."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return True
    actor_options = dramatiq.get_broker().get_actor(message.actor_name).options
    max_retries = message.options.get("max_retries", actor_options.get("max_retries"))
    return max_retries is not None and int(message.options.get("retries", 0)) >= int(max_retries)


def cancellation_check() -> Callable[[], bool]:
    """A check that the current job has been cancelled (its job state says so)."""
    from store.db import get_engine
    from store.jobs import JobStore

    jobs = JobStore(get_engine())
    message_id = current_message_id()

    def cancelled() -> bool:
        try:
            return jobs.is_cancelled(message_id)
        except Exception:
            logger.warning("Could not read the job state of %s; carrying on.", message_id, exc_info=True)
            return False

    return cancelled


def _report_progress(percent: float) -> None:
    try:
        report_progress(percent)
    except ProcessingCancelledError:
        raise  # the operator's cancel: the job stops here, like at cancellation_check
    except Exception:
        # Progress is for people watching; losing an update must not fail a transcode.
        logger.warning("Could not record the job's progress.", exc_info=True)
