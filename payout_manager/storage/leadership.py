"""One leader per database among every `serve` process, for the jobs that must run once: the relay, expiry.

Each job of each process stands by on a connection of its own until it takes a session-level
advisory lock (`pg_try_advisory_lock`) on a key of the job's, then leads on that connection until
it is told to stop. When the leading process dies, PostgreSQL ends its session, the lock is free,
and a standby takes over within `STANDBY_INTERVAL`. A lost database only makes a job reconnect
with a backoff, whether it led or stood by: it never ends the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg2
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from payout_manager.storage.database import DatabaseUrl, sqlalchemy_url

log = logging.getLogger(__name__)

# How often a standby looks for a vacant leadership.
STANDBY_INTERVAL = 0.5
# Back-off after a failure (database lost): doubles up to the maximum.
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0

# What a leader does while it leads: it returns when `stop` is set; it raises when the database is lost.
Lead = Callable[[Connection, threading.Event], None]


def lock_key(name: str) -> int:
    """The advisory lock key of a job: its name, at most 8 ASCII characters, as a big-endian bigint."""
    encoded = name.encode("ascii")
    if not 0 < len(encoded) <= 8 or encoded[0] >= 0x80:
        raise ValueError(f"{name!r} is not 1 to 8 ASCII characters")
    return int.from_bytes(encoded, "big")


class Leadership:
    """Runs a job's `lead` in this process whenever this process holds the job's leadership."""

    def __init__(self, database_url: DatabaseUrl, *, key: int, job: str) -> None:
        """`job` names it in the log and in PostgreSQL (application_name payout-manager-JOB)."""
        self._key = key
        self._job = job
        # No pool: closing the connection must end the session, and with it the leadership.
        self._engine: Engine = create_engine(
            sqlalchemy_url(database_url),
            poolclass=NullPool,
            # Each statement commits at once: a leader holds no transaction open while it waits.
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5, "application_name": f"payout-manager-{job}"},
        )

    def run(self, stop: threading.Event, lead: Lead) -> None:
        """Stands by, leads, and reconnects after a lost database, until `stop` is set."""
        backoff = BACKOFF_MIN
        while not stop.is_set():
            try:
                with self._engine.connect() as connection:
                    self._stand_by_then_lead(connection, stop, lead)
                backoff = BACKOFF_MIN
            except (DBAPIError, psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                cause = error.orig if isinstance(error, DBAPIError) else error
                log.warning(
                    "%s: database lost (%s); retrying in %.1f s", self._job, type(cause).__name__, backoff
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:
                log.exception("%s: unexpected failure; retrying in %.1f s", self._job, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._engine.dispose()

    def _stand_by_then_lead(self, connection: Connection, stop: threading.Event, lead: Lead) -> None:
        """Waits on `connection` until the leadership is free, then leads until `stop`."""
        while not stop.is_set():
            if connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}):
                log.info("%s: leading", self._job)
                lead(connection, stop)
                return
            stop.wait(STANDBY_INTERVAL)
