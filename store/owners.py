"""A worker process's sign of life for its ledger claims: an owner row beaten every few seconds.

A claim names its owner (``deliveries.owner_id``). While the owner's ``beat_at`` is fresh, the claim
is being worked on and other attempts wait (``InProgressError``); once the owner stopped beating
for ``timeout`` seconds (the process was killed, its host lost) or said it stopped, its claims are
judged at once (``store.ledger``): nobody waits out a fixed lease for a worker that is gone.

The heartbeat is a daemon thread started with the owner (lazily, by the ledger's first claim, so
it starts in the worker process, after Dramatiq forked it). It holds the owner only weakly: an
owner nobody uses any more (a test's ledger) stops beating by itself. Beats and registration use
the database's clock (``store.clock``). A beat that fails (the database is away) is retried at the
next interval; the owner's claims may then be judged by others, which is safe: every transition of
a claim is checked against its token, so a claim taken over is never completed or sent by its old
holder (``store.ledger``).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import uuid
import weakref
from datetime import timedelta

from sqlalchemy import Engine, Table, delete, insert, update

from store.clock import db_now, seconds_since
from store.db import autocommit
from store.models_ledger import LedgerOwner

logger = logging.getLogger(__name__)

_owners: Table = LedgerOwner.__table__  # type: ignore[assignment]

#: Owners silent for this long are deleted when a new one registers (their claims stay judged dead).
FORGET_AFTER = timedelta(days=7)


class Owner:
    """This process, as the holder of ledger claims: ``id`` goes into each claim it makes."""

    def __init__(self, engine: Engine, *, timeout: float) -> None:
        self.engine = autocommit(engine)
        self.id = uuid.uuid4().hex
        self.pid = os.getpid()
        self.interval = max(0.05, timeout / 4)  # three beats may be missed before it looks dead
        self._stop = threading.Event()
        self._failing = False
        self._register()
        thread = threading.Thread(
            target=_beat_until_stopped,
            args=(weakref.ref(self), self._stop, self.interval),
            name=f"ledger-owner-{self.id[:8]}",
            daemon=True,
        )
        thread.start()
        atexit.register(_stop_at_exit, weakref.ref(self))

    def _register(self) -> None:
        now = db_now(self.engine.dialect.name)
        with self.engine.connect() as connection:
            connection.execute(
                insert(_owners).values(
                    id=self.id, host=socket.gethostname()[:255], pid=self.pid, started_at=now, beat_at=now
                )
            )
            # Rare (once per process start) and cheap: old owners would otherwise pile up.
            silence = seconds_since(_owners.c.beat_at, self.engine.dialect.name)
            connection.execute(delete(_owners).where(silence > FORGET_AFTER.total_seconds()))
        logger.info("Ledger owner %s registered (pid %d).", self.id, self.pid)

    def beat(self) -> None:
        """Say this process is alive, now (by the database's clock)."""
        statement = (
            update(_owners).where(_owners.c.id == self.id).values(beat_at=db_now(self.engine.dialect.name))
        )
        try:
            with self.engine.connect() as connection:
                if connection.execute(statement).rowcount == 0:
                    self._register()  # removed (by hand, or after a long silence): be known again
        except Exception as e:
            if not self._failing:
                logger.warning("Ledger owner %s could not beat (%s); its claims may be judged by others.",
                               self.id, type(e).__name__)  # fmt: skip
            self._failing = True
            return
        if self._failing:
            logger.info("Ledger owner %s beats again.", self.id)
        self._failing = False

    def stop(self) -> None:
        """Stop beating and say so: this process's remaining claims are judged at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        statement = (
            update(_owners).where(_owners.c.id == self.id).values(stopped_at=db_now(self.engine.dialect.name))
        )
        try:
            with self.engine.connect() as connection:
                connection.execute(statement)
        except Exception:
            # Nothing is lost: its heartbeat stops too, and its claims are judged after the timeout.
            logger.info("Ledger owner %s could not record that it stopped; it will look dead soon.", self.id)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


def _beat_until_stopped(owner_ref: weakref.ref[Owner], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        owner = owner_ref()
        if owner is None:
            return  # nobody holds the owner any more: nothing to keep alive
        owner.beat()
        del owner  # no strong reference while waiting


def _stop_at_exit(owner_ref: weakref.ref[Owner]) -> None:
    owner = owner_ref()
    if owner is not None and owner.pid == os.getpid():
        owner.stop()
