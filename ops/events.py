"""Domain events for operators, shared by ``edujobs events`` and ``edujobs health``: every event,
the handlers edujobs binds to it, the bindings RabbitMQ actually has, and each handler queue's
backlog (ready, held by workers, delayed, parked, dead), plus the events no handler was bound to
(``events.unrouted``). Read from RabbitMQ's management API; nothing is consumed or changed.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx

from brokers.queue_stats import QueueStatsError, QueueStatsReader, vhost_of
from brokers.topology import HANDLER_QUEUES
from contracts.events import EVENTS_EXCHANGE, UNROUTED_QUEUE, all_events, handlers_of


def bindings(management_url: str, vhost: str, *, timeout: float = 3.0) -> dict[str, list[str]] | None:
    """``{queue: [routing keys]}`` of ``edujobs.events`` as RabbitMQ has them, or None when the
    exchange does not exist (raises ``QueueStatsError`` when RabbitMQ cannot tell)."""
    base = httpx.URL(management_url)
    auth = (base.username, base.password) if base.username else None
    base = base.copy_with(userinfo=b"")
    path = f"/api/exchanges/{urllib.parse.quote(vhost, safe='')}/{EVENTS_EXCHANGE}/bindings/source"
    try:
        response = httpx.get(f"{str(base).rstrip('/')}{path}", auth=auth, timeout=timeout)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        listing = response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise QueueStatsError(f"cannot read the bindings of {EVENTS_EXCHANGE} in {vhost!r}: {e}") from None
    bound: dict[str, list[str]] = {}
    for binding in listing if isinstance(listing, list) else []:
        if isinstance(binding, dict) and binding.get("destination_type") == "queue":
            bound.setdefault(str(binding["destination"]), []).append(str(binding["routing_key"]))
    return {queue: sorted(keys) for queue, keys in sorted(bound.items())}


def overview(*, management_url: str, rabbitmq_url: str) -> dict[str, Any]:
    """Events, their handlers and bindings, each handler queue's backlog, and the unrouted count."""
    vhost = vhost_of(rabbitmq_url)
    bound = bindings(management_url, vhost)
    reader = QueueStatsReader(
        management_url=management_url, vhost=vhost, queues=(*HANDLER_QUEUES, UNROUTED_QUEUE)
    )
    try:
        depths = {depth.queue: depth for depth in reader.read()}
    finally:
        reader.close()
    events = []
    for name in all_events():
        handlers = []
        for handler in handlers_of(name):
            depth = depths.get(handler)
            handlers.append(
                {
                    "handler": handler,
                    "bound": bound is not None and name in bound.get(handler, []),
                    **(depth.kinds() if depth is not None else {}),
                    "consumers": depth.consumers if depth is not None else None,
                }
            )
        events.append({"event": name, "handlers": handlers})
    unrouted = depths.get(UNROUTED_QUEUE)
    return {
        "exchange": bound is not None,
        "events": events,
        "bindings": bound or {},
        "unrouted": unrouted.ready if unrouted is not None else None,
    }


def problem(view: dict[str, Any]) -> str | None:
    """What an operator must look at (no exchange, a handler not bound, unrouted events), or None."""
    if not view["exchange"]:
        return (
            f"the {EVENTS_EXCHANGE} exchange is not declared: run edujobs queues declare (or start a worker)"
        )
    unbound = [
        f"{h['handler']} ({e['event']})" for e in view["events"] for h in e["handlers"] if not h["bound"]
    ]
    if unbound:
        return f"not bound: {', '.join(unbound)}: run edujobs queues declare"
    if view["unrouted"]:
        return f"{view['unrouted']} events no handler was bound to wait in {UNROUTED_QUEUE} (edujobs events)"
    return None
