"""A backlog of long-expired UNPAID payouts, stored in bulk through the service's own create procedure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from datetime import datetime

import psycopg2

from payout_manager.payouts.cash_flow import settlement_accounts
from payout_manager.payouts.model import PayoutCreated, PayoutEvent
from payout_manager.payouts.service import hold_batch
from payout_manager.storage import procedures
from payout_manager.storage.payouts import fetch_payout
from support.books import dsn


def preload_unpaid(database_url: str, templates: Sequence[str], each: int, created_at: datetime) -> list[str]:
    """Stores `each` UNPAID payouts like each template payout (its shop, cash flow and hold), all
    created at `created_at`, in one transaction; returns their ids.

    They are history: their `created` events are stored but not queued for Kafka, as if published
    long ago, so that the outbox holds only what the test then does.
    """
    made: list[str] = []
    # closing: psycopg2's own `with` ends the transaction, not the connection.
    with (
        closing(psycopg2.connect(dsn(database_url))) as connection,
        connection,
        connection.cursor() as cursor,
    ):
        for template_id in templates:
            template = fetch_payout(cursor, template_id)
            assert template is not None, template_id
            batch, checked = hold_batch(template.cash_flow), settlement_accounts(template.cash_flow)
            for _ in range(each):
                payout = replace(
                    template,
                    payout_id=f"expired-{uuid.uuid4()}",
                    created_at=created_at,
                    updated_at=created_at,
                )
                event = PayoutEvent(
                    payout.payout_id,
                    1,
                    created_at,
                    PayoutCreated(),
                    payout,
                    payout.created_by,
                    event_id=str(uuid.uuid4()),
                )
                assert procedures.create_payout(cursor, payout, event, batch, checked, 1_000_000)
                made.append(payout.payout_id)
        cursor.execute(
            "DELETE FROM payout_event_outbox o USING payout_event e"
            " WHERE e.id = o.event_row_id AND e.payout_id = ANY(%s)",
            (made,),
        )
    return made


def statuses(database_url: str, payout_ids: Sequence[str]) -> dict[str, int]:
    """How many of the payouts are in each status."""
    with closing(psycopg2.connect(dsn(database_url))) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM payout WHERE payout_id = ANY(%s) GROUP BY status",
            (list(payout_ids),),
        )
        return {status: int(n) for status, n in cursor.fetchall()}
