"""Bearer-token authentication of the HTTP API: who is calling and which scopes they hold.

``require(scope)`` is a FastAPI dependency: no or an unknown token → 401, a valid token without the
scope → 403. ``enqueue:*`` grants every queue; ``ops:write`` implies ``ops:read``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from store import tokens

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
