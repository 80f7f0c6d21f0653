"""The one place that opens transactions, and the engine behind them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar, cast

import psycopg2
import psycopg2.extensions
import tenacity
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool, PoolProxiedConnection

from payout_manager.errors import Reason, Refusal
from payout_manager.storage.urls import DatabaseUrl, parse

log = logging.getLogger(__name__)

T = TypeVar("T")

# deadlock_detected, serialization_failure, lock_not_available: the transaction did nothing and
# may simply run again.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
_TRANSACTION_ATTEMPTS = 5
_CONNECT_ARGS = {"connect_timeout": 5, "application_name": "payout-manager"}

__all__ = ["Database", "DatabaseUrl", "connect_once", "create_database_engine", "sqlalchemy_url"]


def sqlalchemy_url(database_url: DatabaseUrl) -> URL:
    """The URL with the psycopg2 driver named: SQLAlchemy 2.1 would pick psycopg 3 for postgresql://.

    A URL object, not a string, so that a password (Settings.require_database_url) is never
    rendered where it could be printed.
    """
    url = parse(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return url


def connect_once(database_url: DatabaseUrl) -> None:
    """Opens and closes one connection; raises OperationalError if PostgreSQL cannot be reached or refuses."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool, connect_args=_CONNECT_ARGS)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def create_database_engine(database_url: DatabaseUrl, *, pool_size: int = 10) -> Engine:
    # No pool_pre_ping: it costs a round trip per checkout. A pooled connection the server has
    # dropped fails on its first statement instead, and Database reruns the work (below).
    return create_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
        connect_args=_CONNECT_ARGS,
    )


def _sqlstate(error: BaseException) -> str | None:
    if isinstance(error, psycopg2.Error):
        return error.pgcode
    if isinstance(error, DBAPIError):
        return getattr(error.orig, "pgcode", None)
    return None


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, _LostError) or _sqlstate(error) in _RETRYABLE_SQLSTATES


class _LostError(Exception):
    """The connection was lost where the work may run again: before COMMIT was sent (nothing was
    committed), or during an idempotent call of `Database.call`."""


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, _LostError):
        cause = "a lost connection"
    else:
        cause = (_sqlstate(error) if error else None) or "an unknown failure"
    log.info("transaction retried after %s", cause)


class Database:
    """Runs units of work: each function gets a connection inside one transaction.

    The transaction commits when the function returns and rolls back when it raises. A deadlock,
    a serialization failure or a connection lost before COMMIT (a pooled connection the server
    dropped) reruns the whole function, so callers never see one. A connection lost during COMMIT
    is not rerun, since the commit may have happened: that, like a database that cannot be
    reached, is UNAVAILABLE / DATABASE_UNAVAILABLE. A connection lost once the work is done (while
    it goes back to the pool) changes nothing of its result: the connection is discarded.

    This is the one place that borrows pooled connections, so these rules hold for every caller.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def transaction(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, autocommit=False)

    def read(self, work: Callable[[Connection], T]) -> T:
        """Runs read-only `work` without a transaction: each statement sees the latest commits.

        For work of one statement this saves the BEGIN and COMMIT round trips.
        """
        return self._run(work, autocommit=True)

    def _run(self, work: Callable[[Connection], T], *, autocommit: bool) -> T:
        return _retried(lambda: self._once(work, autocommit=autocommit))

    def _once(self, work: Callable[[Connection], T], *, autocommit: bool) -> T:
        connection = self.engine.connect()
        try:
            if autocommit:
                # On the driver itself, not SQLAlchemy's isolation_level option: that option is
                # undone by a statement at check-in, which a connection lost just then turned into
                # an unwrapped error and a pool slot never returned. This flag costs no round trip.
                _driver_connection(connection).autocommit = True
                return _lost_is_retryable(work, connection)
            transaction = connection.begin()
            result = _lost_is_retryable(work, connection)
            transaction.commit()
            return result
        finally:
            _give_back(connection, autocommit=autocommit)

    def call(self, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
        """Runs `work` on a driver cursor in autocommit: each statement is its own transaction.

        For the stored procedures of the hot paths (`storage.procedures`): one statement, one round
        trip, without SQLAlchemy's execution machinery. Their statements are idempotent (a replay
        of a create finds the payout; a change names the revision it moves from), so a connection
        lost mid-call, when the statement may or may not have committed, simply runs `work` again on
        a new connection, as do deadlocks and serialization failures.
        """
        return _retried(lambda: self._call_once(work))

    def _call_once(self, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
        pooled = self.engine.raw_connection()
        driver = cast(psycopg2.extensions.connection, pooled.dbapi_connection)
        try:
            driver.autocommit = True
            with driver.cursor() as cursor:
                return work(cursor)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            if not driver.closed:
                raise
            # Lost: the statement may have committed; the work is idempotent, so it runs again.
            pooled.invalidate()
            raise _LostError() from error
        finally:
            _give_back_raw(pooled, driver)

    def dispose(self) -> None:
        self.engine.dispose()


def _retried(once: Callable[[], T]) -> T:
    """`once()`, run again on a retryable failure (up to _TRANSACTION_ATTEMPTS times in all); a
    database lost or away becomes UNAVAILABLE / DATABASE_UNAVAILABLE."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_retryable),
        stop=tenacity.stop_after_attempt(_TRANSACTION_ATTEMPTS),
        wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.2),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return once()
    except _LostError as lost:
        raise _unavailable() from lost.__cause__
    except (OperationalError, InterfaceError, PoolTimeout) as error:
        if _is_retryable(error):
            raise
        raise _unavailable() from error
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        # A driver error SQLAlchemy did not wrap (or a driver cursor's): as lost as above.
        if _is_retryable(error):
            raise
        raise _unavailable() from error
    raise AssertionError("unreachable: tenacity reraises the last failure")


def _unavailable() -> Refusal:
    return Refusal(Reason.DATABASE_UNAVAILABLE, "the database is unavailable")


def _driver_connection(connection: Connection) -> psycopg2.extensions.connection:
    return cast(psycopg2.extensions.connection, connection.connection.dbapi_connection)


def _give_back(connection: Connection, *, autocommit: bool) -> None:
    """Returns the connection to the pool, or discards it if it was lost; never raises.

    Whatever the work did is settled by now (committed, or rolled back with the session), so a
    failure here must not replace its result or its error.
    """
    try:
        if autocommit and not connection.invalidated:
            _driver_connection(connection).autocommit = False
    except psycopg2.Error:
        connection.invalidate()
    try:
        connection.close()
    except (DBAPIError, psycopg2.Error) as error:
        # The rollback of failed work met a lost connection; the pool has discarded it.
        log.info("a lost connection discarded: %s", type(error).__name__)


def _give_back_raw(pooled: PoolProxiedConnection, driver: psycopg2.extensions.connection) -> None:
    """`_give_back` for a connection borrowed by `Database.call`: never raises."""
    try:
        if not driver.closed:
            driver.autocommit = False
        pooled.close()
    except psycopg2.Error as error:
        pooled.invalidate()
        log.info("a lost connection discarded: %s", type(error).__name__)


def _lost_is_retryable(work: Callable[[Connection], T], connection: Connection) -> T:
    try:
        return work(connection)
    except DBAPIError as error:
        if error.connection_invalidated:
            raise _LostError() from error
        raise
