"""What operators and services look at first: job search, workers, trends (an ``APIRouter`` that
``ops.api.create_app`` includes).

- ``GET /v1/jobs?user_id=&actor=&state=&since=&cursor=&limit=``: jobs newest first, a keyset page
  at a time (``store.job_search``); any valid token: a token with ``ops:read`` sees every job, any
  other (a service's ``enqueue:`` token) only the jobs it enqueued through ``POST /v1/messages``.
  Errors and results are redacted as in ``GET /v1/jobs/{id}`` (``ops.api_jobs``).
- ``GET /v1/workers``: every worker process that beat lately, ``alive``, ``stale`` (its beats
  stopped: killed, or its host gone) or ``stopped`` (``store.workers``); ``ops:read``.
- ``GET /v1/trends?window=1h|24h``: processed, failed and backlog per queue (``store.trends``);
  ``ops:read``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from ops.api_jobs import job_view
from ops.api_models import DB_INT_MAX
from ops.auth import Caller, authenticate, require
from store.job_search import MAX_LIMIT, JobFilter, JobSearchError, search_jobs
from store.trends import WINDOWS, trends
from store.workers import list_workers

router = APIRouter()


@router.get("/v1/jobs", tags=["jobs"])
def list_jobs(
    request: Request,
    caller: Annotated[Caller, Depends(authenticate)],
    user_id: Annotated[int | None, Query(ge=-DB_INT_MAX, le=DB_INT_MAX)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    state: str | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> Response:
    """Jobs newest first (by when they were first recorded); ``next_cursor`` fetches the next page
    (null on the last). A token without ``ops:read`` sees only the jobs it enqueued."""
    mine = None if caller.allows("ops:read") else f"token:{caller.name}"
    try:
        where = JobFilter(user_id=user_id, actor=actor, state=state, since=since, enqueued_by=mine)
        page = search_jobs(request.app.state.engine, where, cursor=cursor, limit=limit)
    except JobSearchError as e:
        raise HTTPException(422, str(e)) from None
    # orjson rather than FastAPI's jsonable_encoder, which took a few ms per page of 50 jobs.
    body = orjson.dumps({"jobs": [job_view(job) for job in page.jobs], "next_cursor": page.next_cursor})
    return Response(body, media_type="application/json")


@router.get("/v1/workers", tags=["workers"])
def get_workers(
    request: Request, _caller: Annotated[Caller, Depends(require("ops:read"))]
) -> list[dict[str, Any]]:
    """Worker processes from their heartbeats: alive first, then stale (beats stopped), then stopped."""
    stale_beats: int = request.app.state.heartbeat_stale_beats
    return [view.as_dict() for view in list_workers(request.app.state.engine, stale_beats=stale_beats)]


@router.get("/v1/trends", tags=["queues"])
def get_trends(
    request: Request,
    _caller: Annotated[Caller, Depends(require("ops:read"))],
    window: Annotated[str, Query(description=f"one of {', '.join(WINDOWS)}")] = "1h",
) -> dict[str, Any]:
    """Per queue and time bucket: attempts ended (processed), failed, and backlog (ready messages)."""
    try:
        return trends(request.app.state.engine, window)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
