"""The outbox: stored events that Kafka has not acknowledged yet, oldest first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from payout_manager.storage.tables import payout_event, payout_event_outbox


@dataclass(frozen=True)
class PendingEvent:
    row_id: int
    event_id: str
    payout_id: str
    # The serialized payout_manager.v1.Event, as stored.
    payload: bytes


class Outbox:
    """Reads and clears the outbox on one connection; the caller owns the transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def pending(self, limit: int) -> list[PendingEvent]:
        """Up to `limit` unpublished events in id order.

        One statement sees one snapshot, and a payout's events commit in sequence order (each
        change locks the payout row), so a payout's events here are always contiguous from its
        oldest unpublished one: never event n+1 without event n.
        """
        rows = self._connection.execute(
            select(
                payout_event.c.id,
                payout_event.c.event_id,
                payout_event.c.payout_id,
                payout_event.c.payload,
            )
            .join(payout_event_outbox, payout_event_outbox.c.event_row_id == payout_event.c.id)
            .order_by(payout_event_outbox.c.event_row_id)
            .limit(limit)
        )
        return [PendingEvent(row.id, str(row.event_id), row.payout_id, bytes(row.payload)) for row in rows]

    def mark_published(self, row_ids: Collection[int]) -> None:
        if row_ids:
            self._connection.execute(
                delete(payout_event_outbox).where(payout_event_outbox.c.event_row_id.in_(list(row_ids)))
            )
