"""Checks of the books straight from PostgreSQL: what must hold after any mix of calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from payout_manager.storage.database import sqlalchemy_url


def dsn(database_url: str) -> str:
    return sqlalchemy_url(database_url).replace("postgresql+psycopg2://", "postgresql://")


def unbalanced_currencies(database_url: str) -> list[tuple[str, int]]:
    """Currencies whose own amounts do not sum to 0 (double entry says: none)."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT currency, sum(own_amount) FROM account GROUP BY currency HAVING sum(own_amount) <> 0"
        )
        return [(currency, int(total)) for currency, total in cursor.fetchall()]


def payouts_whose_plans_disagree(
    database_url: str, payout_ids: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """Payouts whose posting plans do not match their status.

    UNPAID and PAID hold their plan; CONFIRMED committed it; CANCELLED rolled it back, or
    committed it and committed its revert plan too.
    """
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.payout_id, p.status, coalesce(plan.status, '-'), coalesce(revert.status, '-')
            FROM payout p
            LEFT JOIN posting_plan plan ON plan.id = 'payout_' || p.payout_id
            LEFT JOIN posting_plan revert ON revert.id = 'revert_payout_' || p.payout_id
            WHERE p.payout_id = ANY(%s)
            """,
            (list(payout_ids),),
        )
        allowed = {
            "UNPAID": {("HOLD", "-")},
            "PAID": {("HOLD", "-")},
            "CONFIRMED": {("COMMITTED", "-")},
            "CANCELLED": {("ROLLED_BACK", "-"), ("COMMITTED", "COMMITTED")},
        }
        return [row for row in cursor.fetchall() if (row[2], row[3]) not in allowed[row[1]]]


def _event_column(database_url: str, payout_ids: Sequence[str], column: str) -> dict[str, list[Any]]:
    """Per payout, one column of its event rows in sequence order."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "SELECT payout_id, {} FROM payout_event WHERE payout_id = ANY(%s)"
                " ORDER BY payout_id, sequence_id"
            ).format(sql.Identifier(column)),
            (list(payout_ids),),
        )
        result: dict[str, list[Any]] = {payout_id: [] for payout_id in payout_ids}
        for payout_id, value in cursor.fetchall():
            result[payout_id].append(value)
        return result


def event_sequences(database_url: str, payout_ids: Sequence[str]) -> dict[str, list[int]]:
    return _event_column(database_url, payout_ids, "sequence_id")


def event_payloads(database_url: str, payout_ids: Sequence[str]) -> dict[str, list[bytes]]:
    """Per payout, the stored serialized events in sequence order."""
    stored = _event_column(database_url, payout_ids, "payload")
    return {payout_id: [bytes(payload) for payload in payloads] for payout_id, payloads in stored.items()}
