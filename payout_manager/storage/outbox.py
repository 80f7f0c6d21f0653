"""The outbox: stored events that Kafka has not acknowledged yet, oldest first.

The relay reads and clears it (`Outbox`); a republish queues stored events in it again
(`requeue`, used by `payout_manager.events.republish`, whose docstring gives the order rules).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger, DateTime, Integer, Text

from payout_manager.storage.tables import payout_event, payout_event_outbox

# Built once: the relay runs these for every batch, and building a statement costs more than
# sending it. The rows to clear go as arrays, so the statement is the same for any number.
_PENDING = (
    select(
        payout_event.c.id,
        payout_event.c.event_id,
        payout_event.c.payout_id,
        payout_event.c.payload,
        payout_event_outbox.c.requeued,
    )
    .join(payout_event_outbox, payout_event_outbox.c.event_row_id == payout_event.c.id)
    .order_by(payout_event_outbox.c.event_row_id)
    .limit(bindparam("limit"))
)
# Counts at most :limit + 1 rows, so it costs the same however long the outbox is.
_HOLDS_MORE_THAN = select(func.count()).select_from(
    select(payout_event_outbox.c.event_row_id).limit(bindparam("limit") + 1).subquery()
)
# A row queued again since it was read (its count moved on) stays, to go out once more.
_CLEAR = text(
    "DELETE FROM payout_event_outbox o USING unnest(:ids, :requeued) AS c(event_row_id, requeued)"
    " WHERE o.event_row_id = c.event_row_id AND o.requeued = c.requeued"
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("requeued", type_=ARRAY(Integer)))

_KNOWN = text("SELECT payout_id FROM payout WHERE payout_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(Text))
)
# Walks every payout by id (its primary key), each one's events through their (payout_id,
# sequence_id) index: no index of event times is kept for this rare command at every write's cost.
_FIRST_SINCE = text(
    "SELECT p.payout_id, f.first FROM payout p"
    " CROSS JOIN LATERAL (SELECT min(e.sequence_id) AS first FROM payout_event e"
    "   WHERE e.payout_id = p.payout_id AND e.created_at >= :since) f"
    " WHERE p.payout_id > :after AND f.first IS NOT NULL ORDER BY p.payout_id LIMIT :limit"
).bindparams(bindparam("since", type_=DateTime(timezone=True)))
_LOCK = text(
    "SELECT payout_id FROM payout WHERE payout_id = ANY(:ids) ORDER BY payout_id FOR NO KEY UPDATE"
).bindparams(bindparam("ids", type_=ARRAY(Text)))
_REQUEUE = text(
    "INSERT INTO payout_event_outbox (event_row_id)"
    " SELECT e.id FROM unnest(:ids, :firsts) AS f(payout_id, first)"
    " JOIN payout_event e ON e.payout_id = f.payout_id AND e.sequence_id >= f.first"
    " ON CONFLICT (event_row_id) DO UPDATE SET requeued = payout_event_outbox.requeued + 1"
).bindparams(bindparam("ids", type_=ARRAY(Text)), bindparam("firsts", type_=ARRAY(BigInteger)))


@dataclass(frozen=True)
class PendingEvent:
    row_id: int
    event_id: str
    payout_id: str
    # The serialized payout_manager.v1.Event, as stored.
    payload: bytes
    # The row's count of republishes when read: it is cleared only if that is still the count.
    requeued: int = 0


class Outbox:
    """Reads and clears the outbox on one connection; the caller owns the transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def pending(self, limit: int) -> list[PendingEvent]:
        """Up to `limit` unpublished events in id order.

        One statement sees one snapshot, and a payout's events commit in sequence order (each
        change locks the payout row), so a payout's events here are always contiguous from its
        oldest unpublished one: never event n+1 without event n. A payout's ids grow with its
        sequence ids, so id order is sequence order per payout, republished events included.
        """
        rows = self._connection.execute(_PENDING, {"limit": limit})
        return [
            PendingEvent(row.id, str(row.event_id), row.payout_id, bytes(row.payload), row.requeued)
            for row in rows
        ]

    def holds_more_than(self, limit: int) -> bool:
        """Whether more than `limit` events wait for Kafka."""
        return bool(self._connection.execute(_HOLDS_MORE_THAN, {"limit": limit}).scalar_one() > limit)

    def mark_published(self, events: Collection[PendingEvent]) -> None:
        """Clears the events the broker took, unless a republish queued one again since it was read."""
        if events:
            self._connection.execute(
                _CLEAR, {"ids": [e.row_id for e in events], "requeued": [e.requeued for e in events]}
            )


def known_payouts(connection: Connection, payout_ids: Collection[str]) -> set[str]:
    """Those of `payout_ids` that name a stored payout."""
    return set(connection.execute(_KNOWN, {"ids": list(payout_ids)}).scalars())


def first_events_since(connection: Connection, since: datetime, after: str, limit: int) -> dict[str, int]:
    """Up to `limit` payouts with an event created at `since` or later, the first in payout id order
    after `after`: each with the sequence id of its first such event."""
    rows = connection.execute(_FIRST_SINCE, {"since": since, "after": after, "limit": limit})
    return {row.payout_id: int(row.first) for row in rows}


def requeue(connection: Connection, firsts: Mapping[str, int]) -> int:
    """Queues each payout's events from its sequence id in `firsts` on, inside the caller's
    transaction; returns how many.

    The payouts stay locked (as a change locks its payout) until the transaction ends: every event
    they have is queued here, and a change landing next is queued behind them. The events are read
    by a statement of their own, after the locks: a statement's snapshot is taken when it starts,
    so one that also waited for the locks could miss the event of the change it waited for.
    """
    ids = sorted(firsts)
    if not ids:
        return 0
    connection.execute(_LOCK, {"ids": ids})
    queued = connection.execute(_REQUEUE, {"ids": ids, "firsts": [firsts[p] for p in ids]})
    return int(queued.rowcount)
