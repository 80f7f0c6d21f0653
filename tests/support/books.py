"""Checks of the books straight from PostgreSQL: what must hold after any mix of calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any, TypeVar

import psycopg2
from psycopg2 import sql
from sqlalchemy import Connection

from payout_manager.storage import audit
from payout_manager.storage.database import create_database_engine
from payout_manager.storage.urls import libpq_dsn

T = TypeVar("T")


def dsn(database_url: str) -> str:
    """What psycopg2.connect takes for a URL of the tests: a +driver dropped, every host kept."""
    return libpq_dsn(database_url)


def _audited(database_url: str, check: Callable[[Connection], T]) -> T:
    engine = create_database_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return check(connection)
    finally:
        engine.dispose()


def unbalanced_currencies(database_url: str) -> list[tuple[str, int]]:
    """Currencies whose own amounts do not sum to 0 (double entry says: none)."""
    return _audited(database_url, audit.unbalanced_currencies)


def payouts_whose_plans_disagree(
    database_url: str, payout_ids: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """Payouts whose posting plans do not match their status."""
    return _audited(database_url, lambda c: audit.payouts_whose_plans_disagree(c, payout_ids))


def _event_column(database_url: str, payout_ids: Sequence[str] | None, column: str) -> dict[str, list[Any]]:
    """Per payout (of `payout_ids`, or every stored one), one column of its event rows in sequence order."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        which = sql.SQL("" if payout_ids is None else "WHERE payout_id = ANY(%s)")
        cursor.execute(
            sql.SQL("SELECT payout_id, {} FROM payout_event {} ORDER BY payout_id, sequence_id").format(
                sql.Identifier(column), which
            ),
            None if payout_ids is None else (list(payout_ids),),
        )
        result: dict[str, list[Any]] = {payout_id: [] for payout_id in payout_ids or ()}
        for payout_id, value in cursor.fetchall():
            result.setdefault(payout_id, []).append(value)
        return result


def event_sequences(database_url: str, payout_ids: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Per payout (of `payout_ids`, or every stored one), its events' sequence ids in order."""
    return _event_column(database_url, payout_ids, "sequence_id")


def event_payloads(database_url: str, payout_ids: Sequence[str]) -> dict[str, list[bytes]]:
    """Per payout, the stored serialized events in sequence order."""
    stored = _event_column(database_url, payout_ids, "payload")
    return {payout_id: [bytes(payload) for payload in payloads] for payout_id, payloads in stored.items()}


def slot_count(database_url: str, account_id: int) -> int:
    """How many slots the account's balance is spread over."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM account_slot WHERE account_id = %s", (account_id,))
        (count,) = cursor.fetchone() or (0,)
        return int(count)


def stored_rows(database_url: str) -> tuple[int, ...]:
    """How many payouts, events, outbox rows and posting plans are stored: what a read adds to none."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM payout), (SELECT count(*) FROM payout_event),"
            " (SELECT count(*) FROM payout_event_outbox), (SELECT count(*) FROM posting_plan)"
        )
        row = cursor.fetchone()
    connection.close()
    assert row is not None
    return tuple(int(count) for count in row)


def wait_until_true(
    url: str, query: str, timeout: float, failure: str, parameters: tuple[str, ...] = ()
) -> None:
    """Runs `query` (one boolean) on `url` every 20 ms until it returns true; TimeoutError(`failure`)."""
    deadline = time.monotonic() + timeout
    with closing(psycopg2.connect(dsn(url))) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            while True:
                cursor.execute(query, parameters)
                if cursor.fetchone() == (True,):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(failure)
                time.sleep(0.02)
