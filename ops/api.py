"""The HTTP API for other services and operators (FastAPI; the OpenAPI spec at ``/openapi.json``).

- ``POST /v1/messages`` and ``/v1/messages:batch``: validated against the contracts, published with
  pipelined confirms (``brokers.client``) → 202 with the message ids, each recorded as an ``enqueued``
  job, each request audited (``ops.enqueue``); scope ``enqueue:<queue>``.
- ``GET /v1/jobs/{id}``: a job's state (``store.jobs``); scope ``ops:read``.
- ``GET /v1/jobs`` (search), ``GET /v1/workers``, ``GET /v1/trends``: ``ops.api_overview``.
- ``GET /v1/dlq``, ``GET /v1/dlq/{queue}``, ``GET /v1/dlq/{queue}/{id}``, ``POST /v1/dlq/{queue}/requeue``,
  ``POST /v1/dlq/{queue}/purge``: dead-letter review and actions (``ops.dlq``, the same code as the CLI;
  ``?archived=true`` reads the letters archived to storage); scopes ``ops:read`` / ``ops:write``;
  every action is audit-logged under the token's name.
- ``POST /v1/jobs/{id}/cancel``: cancel a queued or running job (``store.jobs.cancel``); ``ops:write``.
- ``GET /v1/queues``, ``POST /v1/queues/{queue}/pause`` and ``/resume``: queue figures and control
  (``ops.queues``, the same code as the CLI); ``ops:read`` / ``ops:write``.
- ``GET /v1/schedules``, ``POST /v1/schedules``, ``DELETE /v1/schedules/{name}``: the schedules with
  their next and last runs, run-time schedules created and removed (``schedules.scheduler``);
  ``ops:read`` / ``ops:write`` (and ``enqueue:<queue>`` of the actor to create one).
- ``POST /v1/reports``, ``GET /v1/reports``, ``GET /v1/reports/{id}`` (status, progress, download link),
  ``GET /v1/reports/{id}/file`` (streamed), ``POST /v1/reports/{id}/cancel``: the analytics reports
  (``ops.api_reports``); scope ``reports`` (a token's own reports) or ``reports:all``.
- ``POST /v1/events``: publish a domain event (``ops.api_events``); scope ``events:publish`` (or
  ``events:publish:<event>``), audited.
- ``/ui/``: the operators' web page (``ops/web``: plain HTML, CSS and JavaScript over this API).
- ``/healthz`` (the process answers), ``/readyz`` (RabbitMQ and the database answer; checked at most
  every 5 s, ``ops.api_health``) and ``/metrics`` (Prometheus: the API's requests and the queue
  depths), without a token.

Every request is subject to a body size limit (413) and a rate limit (429) per valid token, or per
client address for requests without one, ``ops.limits``.

Authentication: ``Authorization: Bearer <token>`` (``ops.auth``, tokens from ``edujobs tokens create``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from sqlalchemy import Engine

from brokers.client import Client, PublishError
from brokers.queue_stats import QueueStatsCollector, QueueStatsReader, vhost_of
from brokers.topology import ALL_QUEUES
from contracts.errors import EdujobsError, UnknownActorError
from contracts.registry import all_contracts, get_contract
from ops import queues as ops_queues
from ops.api_events import add_event_routes
from ops.api_health import READY_TTL_SECONDS, Readiness
from ops.api_jobs import show_job
from ops.api_models import (
    Accepted,
    BatchAccepted,
    BatchIn,
    CancelIn,
    PauseIn,
    PurgeIn,
    RequeueIn,
    ScheduleIn,
)
from ops.api_overview import router as overview_router
from ops.api_reports import add_report_routes
from ops.auth import AuthFailures, Caller, authenticate, check_scope, require
from ops.dlq import DeadLetterError, DeadLetters, NotFound, Selection
from ops.enqueue import MessageIn, audit_enqueue, publish, record_enqueued
from ops.limits import BodyLimit, RateLimit
from schedules.crontab import CRONTAB, Schedule
from schedules.scheduler import ScheduleError, add_schedule, list_schedules, next_fire_times, remove_schedule
from store import audit, tokens
from store.jobs import cancel
from store.storage import Storage

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"


def dead_letters(request: Request) -> DeadLetters:
    service: DeadLetters = request.app.state.dead_letters
    return service


Dlq = Annotated[DeadLetters, Depends(dead_letters)]


def create_app(
    *,
    rabbitmq_url: str,
    engine: Engine,
    client: Client,
    queues: tuple[str, ...] = ALL_QUEUES,
    management_url: str | None = None,
    crontab: Sequence[Schedule] = CRONTAB,
    schedule_timezone: str = "UTC",
    max_body_bytes: int = 1_048_576,
    rate_limit: float = 50.0,
    rate_burst: int = 100,
    ready_ttl: float = READY_TTL_SECONDS,
    heartbeat_stale_beats: int = 3,
    storage: Storage | None = None,
    report_cache_seconds: float = 1800.0,
) -> FastAPI:
    """The API bound to one broker, database and producer client."""
    # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, and nothing an
    # operator opens here may load from the internet. The spec stays at /openapi.json.
    app = FastAPI(title="edujobs", version="1", description=__doc__, docs_url=None, redoc_url=None)

    def token_id(token: str) -> str | None:
        found = tokens.authenticate(engine, token)
        return None if found is None else str(found.id)

    app.add_middleware(RateLimit, rate=rate_limit, burst=rate_burst, identify=token_id)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    requests_total = Counter(
        "edujobs_api_requests_total",
        "HTTP API requests by route and status.",
        ["route", "status"],
        registry=None,
    )
    registry = CollectorRegistry()
    registry.register(requests_total)
    if management_url is not None:
        registry.register(
            QueueStatsCollector(QueueStatsReader(management_url=management_url, vhost=vhost_of(rabbitmq_url)))
        )

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        requests_total.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    app.state.engine = engine
    app.state.auth_failures = AuthFailures(engine)
    app.state.client = client
    app.state.rabbitmq_url = rabbitmq_url
    app.state.dead_letters = DeadLetters(rabbitmq_url, engine=engine, queues=queues)
    app.state.heartbeat_stale_beats = heartbeat_stale_beats
    app.include_router(overview_router)
    add_event_routes(app, engine=engine, client=client)

    @app.exception_handler(NotFound)
    def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DeadLetterError)
    def _dlq_error(_request: Request, exc: DeadLetterError) -> JSONResponse:
        code = 422 if "unknown queue" in str(exc) or "exactly one" in str(exc) else 503
        return JSONResponse({"detail": str(exc)}, status_code=code)

    def _send(caller: Caller, items: list[MessageIn]) -> list[Accepted]:
        for item in items:
            try:
                contract = get_contract(item.actor)
            except UnknownActorError as e:
                raise HTTPException(422, str(e)) from None
            check_scope(caller, f"enqueue:{contract.queue}")
        for item in items:  # validate everything first: nothing is published if one payload is invalid
            try:
                get_contract(item.actor).validate(item.payload)
            except EdujobsError as e:
                raise HTTPException(422, f"{item.actor}: {e}") from None
        sent: dict[int, str] = {}
        try:
            publish(client, items, sent)
        except PublishError as e:
            audit_enqueue(engine, caller, items, sent, failed=str(e))
            raise HTTPException(503, f"RabbitMQ did not confirm: {e}") from None
        except (EdujobsError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        record_enqueued(engine, items, sent, enqueued_by=f"token:{caller.name}")
        audit_enqueue(engine, caller, items, sent)
        return [Accepted(message_id=sent[index], actor=item.actor) for index, item in enumerate(items)]

    @app.post("/v1/messages", status_code=202, response_model=Accepted, tags=["messages"])
    def send_message(body: MessageIn, caller: Annotated[Caller, Depends(authenticate)]) -> Accepted:
        """Validate and publish one message (confirmed by RabbitMQ); 202 with its id."""
        return _send(caller, [body])[0]

    @app.post("/v1/messages:batch", status_code=202, response_model=BatchAccepted, tags=["messages"])
    def send_batch(body: BatchIn, caller: Annotated[Caller, Depends(authenticate)]) -> BatchAccepted:
        """Validate every message first, then publish them all; 202 with their ids in order."""
        return BatchAccepted(messages=_send(caller, body.messages))

    @app.get("/v1/jobs/{message_id}", tags=["jobs"])
    def get_job(
        message_id: str, caller: Annotated[Caller, Depends(require("ops:read"))], reveal: bool = False
    ) -> dict[str, Any]:
        """A job's state, progress, attempts and error; personal data in the error and result is
        redacted unless ``reveal`` (needs ops:write, audit-logged)."""
        if reveal:
            check_scope(caller, "ops:write")
        job = show_job(engine, message_id, reveal=reveal, operator=f"token:{caller.name}")
        if job is None:
            raise HTTPException(404, f"no job {message_id!r} recorded")
        return job

    @app.post("/v1/jobs/{message_id}/cancel", tags=["jobs"])
    def cancel_job(
        message_id: Annotated[str, PathParam(max_length=64)],
        caller: Annotated[Caller, Depends(require("ops:write"))],
        body: CancelIn | None = None,
    ) -> dict[str, Any]:
        """Cancel a job: a queued one is skipped, a running long one stops at its next progress point.
        An id with no job recorded is 404 unless ``unrecorded`` (a message sent by a producer that
        records no job)."""
        state = cancel(
            engine,
            message_id,
            by=f"token:{caller.name}",
            reason=body.reason if body else None,
            unrecorded=body.unrecorded if body else False,
        )
        if state == "unknown":
            raise HTTPException(
                404,
                f"no job {message_id!r} recorded: check the id, or send unrecorded=true to cancel a "
                "message sent by a producer that records no job",
            )
        if state != "cancelled":
            raise HTTPException(409, f"job {message_id!r} is {state} already: it cannot be cancelled")
        return {"message_id": message_id, "state": state}

    @app.get("/v1/queues", tags=["queues"])
    def list_queues(_caller: Annotated[Caller, Depends(require("ops:read"))]) -> list[dict[str, Any]]:
        """Per queue: ready, unacked, delayed, parked, dead, consumers, rates, oldest message, paused."""
        if management_url is None:
            raise HTTPException(
                503, "queue figures need RabbitMQ's management API (EDUJOBS_RABBITMQ_MANAGEMENT_URL)"
            )
        try:
            return ops_queues.overview(
                management_url=management_url, rabbitmq_url=rabbitmq_url, engine=engine
            )
        except EdujobsError as e:
            raise HTTPException(503, str(e)) from None

    @app.post("/v1/queues/{queue}/pause", tags=["queues"])
    def pause_queue(
        queue: str, caller: Annotated[Caller, Depends(require("ops:write"))], body: PauseIn | None = None
    ) -> dict[str, Any]:
        """Workers stop taking the queue's messages within seconds; the messages stay queued."""
        try:
            return ops_queues.pause(
                engine, queue, by=f"token:{caller.name}", reason=body.reason if body else None
            )
        except ops_queues.UnknownQueueError as e:
            raise HTTPException(404, str(e)) from None

    @app.post("/v1/queues/{queue}/resume", tags=["queues"])
    def resume_queue(queue: str, caller: Annotated[Caller, Depends(require("ops:write"))]) -> dict[str, Any]:
        """Workers take the queue's messages again within seconds."""
        try:
            return ops_queues.resume(engine, queue, by=f"token:{caller.name}")
        except ops_queues.UnknownQueueError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/v1/schedules", tags=["schedules"])
    def get_schedules(_caller: Annotated[Caller, Depends(require("ops:read"))]) -> list[dict[str, Any]]:
        """Every schedule (crontab and periodic actors, ``kind`` saying which, then run-time) with its
        next three fire times and its last fire."""
        return list_schedules(engine, crontab, schedule_timezone)

    @app.post("/v1/schedules", tags=["schedules"], status_code=201)
    def create_schedule(
        body: ScheduleIn, caller: Annotated[Caller, Depends(require("ops:write"))]
    ) -> dict[str, Any]:
        """A run-time schedule: once ``at`` a time, or recurring on ``cron``; it survives restarts."""
        check_scope(
            caller, f"enqueue:{get_contract(body.actor).queue}"
        ) if body.actor in all_contracts() else None
        try:
            job = add_schedule(
                engine,
                body.name,
                body.actor,
                body.payload,
                at=body.at,
                cron=body.cron,
                timezone=body.timezone or schedule_timezone,
                priority=body.priority,
                misfire=body.misfire,
                grace_seconds=body.grace_seconds,
                replace=body.replace,
            )
        except ScheduleError as e:
            raise HTTPException(409 if "exists already" in str(e) else 422, str(e)) from None
        audit.record(
            engine,
            actor=f"token:{caller.name}",
            action="schedule.add",
            target=body.name,
            details={"actor": body.actor, "cron": body.cron, "at": body.at.isoformat() if body.at else None},
        )
        upcoming = next_fire_times(job.trigger, job.next_run_time, 3)
        return {"name": body.name, "next": [t.isoformat() for t in upcoming]}

    @app.delete("/v1/schedules/{name}", tags=["schedules"])
    def delete_schedule(
        name: str, caller: Annotated[Caller, Depends(require("ops:write"))]
    ) -> dict[str, Any]:
        """Remove a run-time schedule (crontab schedules change in code)."""
        try:
            remove_schedule(engine, name)
        except ScheduleError as e:
            raise HTTPException(404, str(e)) from None
        audit.record(engine, actor=f"token:{caller.name}", action="schedule.remove", target=name)
        return {"name": name, "removed": True}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus exposition: the API's requests by route and status, and the queue depths."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/dlq", tags=["dead letters"])
    def dlq_stats(
        service: Dlq, _caller: Annotated[Caller, Depends(require("ops:read"))]
    ) -> list[dict[str, Any]]:
        """Per queue: count, oldest failure, causes grouped by fingerprint with a sample error, and
        how many letters were archived to storage (``archived``; null if storage cannot tell)."""
        return service.stats()

    @app.get("/v1/dlq/{queue}", tags=["dead letters"])
    def dlq_list(
        queue: str,
        service: Dlq,
        _caller: Annotated[Caller, Depends(require("ops:read"))],
        actor: str | None = None,
        reason: str | None = None,
        fingerprint: str | None = None,
        since_ms: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        archived: bool = False,
    ) -> list[dict[str, Any]]:
        """A queue's dead letters, oldest first (nothing is removed or reordered); ``archived``:
        those archived to storage before their TTL."""
        letters = service.list(
            queue,
            actor=actor,
            reason=reason,
            fingerprint=fingerprint,
            since_ms=since_ms,
            limit=limit,
            archived=archived,
        )
        return [letter.summary() for letter in letters]

    @app.get("/v1/dlq/{queue}/{dead_letter_id}", tags=["dead letters"])
    def dlq_show(
        queue: str,
        dead_letter_id: str,
        service: Dlq,
        caller: Annotated[Caller, Depends(require("ops:read"))],
        reveal: bool = False,
        archived: bool = False,
    ) -> dict[str, Any]:
        """One dead letter (``archived``: of the archive); personal data redacted unless ``reveal``
        (needs ops:write, audit-logged)."""
        if reveal:
            check_scope(caller, "ops:write")
        operator = f"token:{caller.name}"
        return service.show(dead_letter_id, queue=queue, reveal=reveal, operator=operator, archived=archived)

    @app.post("/v1/dlq/{queue}/requeue", tags=["dead letters"])
    def dlq_requeue(
        queue: str, body: RequeueIn, service: Dlq, caller: Annotated[Caller, Depends(require("ops:write"))]
    ) -> dict[str, Any]:
        """Requeue by ids, fingerprint or all: confirmed before removal, retries reset, same id."""
        selection = Selection(ids=frozenset(body.ids or ()), fingerprint=body.fingerprint, all=body.all)
        result = service.requeue(queue, selection, dry_run=body.dry_run, operator=f"token:{caller.name}")
        return result.as_dict()

    @app.post("/v1/dlq/{queue}/purge", tags=["dead letters"])
    def dlq_purge(
        queue: str, body: PurgeIn, service: Dlq, caller: Annotated[Caller, Depends(require("ops:write"))]
    ) -> dict[str, Any]:
        """Remove dead letters for good: all, or one cause's (``fingerprint``), and of those only the
        ones older than ``older_than_seconds`` if given."""
        older = None if body.older_than_seconds is None else int(body.older_than_seconds * 1000)
        result = service.purge(
            queue,
            fingerprint=body.fingerprint,
            older_than_ms=older,
            dry_run=body.dry_run,
            operator=f"token:{caller.name}",
        )
        return result.as_dict()

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    readiness = Readiness(rabbitmq_url, engine, ttl=ready_ttl)

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """RabbitMQ and the database answer (503 saying which does not); checked at most every few
        seconds (``ops.api_health``), and rate-limited per client address."""
        checks = readiness.checks()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(checks, status_code=status.HTTP_200_OK if ready else 503)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.middleware("http")
    async def _page_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path.startswith("/ui"):
            # Everything the page needs ships in ops/web: nothing may load from elsewhere.
            response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    add_report_routes(app, engine=engine, client=client, storage=storage, cache_seconds=report_cache_seconds)
    app.mount("/ui", StaticFiles(directory=WEB_DIR, html=True), name="ui")
    return app


def app_from_settings() -> FastAPI:
    """The API configured from the environment (what ``edujobs api`` serves)."""
    from brokers.client import default_client
    from brokers.settings import get_settings
    from schedules.service import load_schedules
    from store.db import get_engine
    from store.migrate import check_migrated

    settings = get_settings()
    engine = get_engine()
    check_migrated(engine)  # NotMigratedError: the API starts only on a migrated database
    return create_app(
        rabbitmq_url=settings.rabbitmq_url,
        engine=engine,
        client=default_client(),
        management_url=settings.rabbitmq_management_url,
        max_body_bytes=settings.api_max_body_bytes,
        rate_limit=settings.api_rate_limit,
        rate_burst=settings.api_rate_burst,
        crontab=load_schedules(settings),
        schedule_timezone=settings.schedule_timezone,
        heartbeat_stale_beats=settings.heartbeat_stale_beats,
        report_cache_seconds=settings.report_cache_seconds,
    )
