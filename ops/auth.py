"""Bearer-token authentication of the HTTP API: who is calling and which scopes they hold.

``require(scope)`` is a FastAPI dependency: no or an unknown token → 401, a valid token without the
scope → 403. ``enqueue:*`` grants every queue; ``ops:write`` implies ``ops:read``; ``events:publish``
grants every event (``events:publish:<event>`` one).

A refused token (unknown or revoked) is written to the audit log (``auth.failed``: the client
address, method and path, and the first 12 hex digits of the token's SHA-256 to tell repeated
attempts apart, never the token) and logged, by ``AuthFailures``. The entries are bounded, since
whoever sends made-up tokens decides how many failures there are: a few per address and per
minute, and about one a second in all; the failures not written are counted into the next entry
for that address (``suppressed``). A request without any token is not a failed authentication
(the web page asks before it has one): it gets 401 and nothing is written.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from ops.limits import TokenBuckets
from store import audit, tokens

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="A token from `edujobs tokens create`")


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its token's name (used in the audit log) and scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        if scope == "ops:read" and "ops:write" in self.scopes:
            return True
        if scope.startswith("events:publish:") and "events:publish" in self.scopes:
            return True
        return scope.startswith("enqueue:") and "enqueue:*" in self.scopes


def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = tokens.authenticate(request.app.state.engine, credentials.credentials)
    if token is None:
        failures: AuthFailures | None = getattr(request.app.state, "auth_failures", None)
        if failures is not None:
            address = request.client.host if request.client else "unknown"
            failures.record(address, f"{request.method} {request.url.path}", credentials.credentials)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(name=token.name, scopes=frozenset(token.scopes))


def require(scope: str) -> Callable[[Caller], Caller]:
    """A dependency that lets through callers holding ``scope``."""

    def check(caller: Caller = Depends(authenticate)) -> Caller:
        if not caller.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the scope {scope!r}")
        return caller

    return check


def check_scope(caller: Caller, scope: str) -> None:
    """403 unless ``caller`` holds ``scope`` (for scopes that depend on the request body)."""
    if not caller.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the scope {scope!r}")


class AuthFailures:
    """Audits and logs refused tokens, a bounded number: ``per_minute`` entries per client address
    (bursts of as many) and ``overall_per_second`` in all; the rest are counted into the address's
    next entry."""

    def __init__(self, engine: Engine, *, per_minute: float = 5, overall_per_second: float = 1.0) -> None:
        self.engine = engine
        self.per_address = TokenBuckets(rate=per_minute / 60, burst=max(1, int(per_minute)))
        self.overall = TokenBuckets(rate=overall_per_second, burst=max(1, int(60 * overall_per_second)))
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, address: str, request_line: str, token: str) -> None:
        """One refused ``token`` from ``address``: audited and logged unless over the bounds."""
        with self._lock:
            if self.per_address.take(address) > 0 or self.overall.take("") > 0:
                if len(self._suppressed) >= self.per_address.max_keys:
                    self._suppressed.clear()  # a flood from everywhere: the counts are the least of it
                self._suppressed[address] = self._suppressed.get(address, 0) + 1
                return
            suppressed = self._suppressed.pop(address, 0)
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
        logger.warning(
            "Refused an unknown or revoked token (sha256 %s...) from %s on %s (%d more not logged).",
            fingerprint, address, request_line, suppressed,
        )  # fmt: skip
        try:
            audit.record(
                self.engine,
                actor=f"addr:{address}"[:255],
                action="auth.failed",
                target=request_line[:255],
                details={
                    "reason": "unknown or revoked token",
                    "token_sha256": fingerprint,
                    "suppressed": suppressed,
                },
            )
        except Exception:  # the 401 still goes out: a database down is no reason to answer 500
            logger.exception("Could not audit a refused token from %s.", address)
