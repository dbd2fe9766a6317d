"""API tokens: bearer tokens for the HTTP API, stored as SHA-256 hashes with their scopes.

A token is shown once, when it is created (``edujobs tokens create``); only its hash is kept, so a
database leak gives no usable token. Scopes are ``enqueue:<queue>`` (or ``enqueue:*``), ``ops:read``,
``ops:write``, ``reports`` (request analytics reports, see one's own), ``reports:all`` and
``events:publish`` (publish any domain event; ``events:publish:<event>`` one). Creating
and revoking a token is written to the audit log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

from sqlalchemy import Engine, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from store import audit
from store.models import Base
from store.types import utcnow

TOKEN_PREFIX = "ej_"
SCOPE_PATTERN = re.compile(
    r"^(ops:read|ops:write|reports|reports:all|enqueue:(\*|[a-z][a-z0-9_.-]*)|events:publish(:[a-z][a-z0-9_.-]*)?)$"
)


class ApiToken(Base):
    """One bearer token of the HTTP API (only its hash)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """The scopes, or ``ValueError`` naming the first invalid one and what is expected."""
    if not scopes:
        raise ValueError("give the token at least one scope: ops:read, ops:write or enqueue:<queue>")
    for scope in scopes:
        if not SCOPE_PATTERN.match(scope):
            raise ValueError(
                f"invalid scope {scope!r}: expected ops:read, ops:write, reports, reports:all, "
                "enqueue:<queue>, enqueue:*, events:publish or events:publish:<event>"
            )
    return sorted(set(scopes))


def create(engine: Engine, *, name: str, scopes: list[str], created_by: str) -> str:
    """Create a token named ``name``; return the token itself (shown once, never stored)."""
    checked = check_scopes(scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
            raise ValueError(f"a token named {name!r} exists: revoke it or choose another name")
        session.add(ApiToken(name=name, token_hash=hash_token(token), scopes=checked, created_by=created_by))
    audit.record(engine, actor=created_by, action="tokens.create", target=name, details={"scopes": checked})
    return token


def revoke(engine: Engine, *, name: str, revoked_by: str) -> bool:
    """Revoke the token named ``name``; False if there is no such active token."""
    with engine.begin() as connection:
        done = connection.execute(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount
    if done:
        audit.record(engine, actor=revoked_by, action="tokens.revoke", target=name, details={})
    return bool(done)


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def authenticate(engine: Engine, token: str) -> ApiToken | None:
    """The active token matching ``token``, or None."""
    with Session(engine, expire_on_commit=False) as session:
        return session.scalar(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        )
