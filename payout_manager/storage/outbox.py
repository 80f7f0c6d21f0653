"""The outbox: stored events that Kafka has not acknowledged yet, oldest first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger

from payout_manager.storage.tables import payout_event, payout_event_outbox

# Built once: the relay runs these for every batch, and building a statement costs more than
# sending it. The rows to clear go as one array, so the statement is the same for any number.
_PENDING = (
    select(payout_event.c.id, payout_event.c.event_id, payout_event.c.payout_id, payout_event.c.payload)
    .join(payout_event_outbox, payout_event_outbox.c.event_row_id == payout_event.c.id)
    .order_by(payout_event_outbox.c.event_row_id)
    .limit(bindparam("limit"))
)
# Counts at most :limit + 1 rows, so it costs the same however long the outbox is.
_HOLDS_MORE_THAN = select(func.count()).select_from(
    select(payout_event_outbox.c.event_row_id).limit(bindparam("limit") + 1).subquery()
)
_CLEAR = delete(payout_event_outbox).where(
    payout_event_outbox.c.event_row_id == bindparam("ids", type_=ARRAY(BigInteger)).any_()
)


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
        rows = self._connection.execute(_PENDING, {"limit": limit})
        return [PendingEvent(row.id, str(row.event_id), row.payout_id, bytes(row.payload)) for row in rows]

    def mark_published(self, row_ids: Collection[int]) -> None:
        if row_ids:
            self._connection.execute(_CLEAR, {"ids": list(row_ids)})

    def holds_more_than(self, limit: int) -> bool:
        """Whether more than `limit` events wait for Kafka."""
        return bool(self._connection.execute(_HOLDS_MORE_THAN, {"limit": limit}).scalar_one() > limit)
