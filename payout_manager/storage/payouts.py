"""The payouts' SQL: payout rows, their event rows, and the listing cursor."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg2.extensions
from sqlalchemy import Connection, Row, bindparam, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from payout_manager.events.codec import event_to_proto
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting
from payout_manager.payouts.model import FailureCode, Payout, PayoutEvent, PayoutFailure, PayoutStatus
from payout_manager.payouts.ports import Cursor, Listed, PayoutFilter
from payout_manager.storage.tables import payout, payout_event, payout_event_outbox


def posting_to_json(posting: CashFlowPosting) -> dict[str, Any]:
    return {
        "source": [posting.source.type.value, posting.source.account_id],
        "destination": [posting.destination.type.value, posting.destination.account_id],
        "amount": posting.amount,
        "currency": posting.currency,
        "details": posting.details,
    }


def _posting_from_json(data: dict[str, Any]) -> CashFlowPosting:
    return CashFlowPosting(
        source=CashFlowAccount(AccountType(data["source"][0]), data["source"][1]),
        destination=CashFlowAccount(AccountType(data["destination"][0]), data["destination"][1]),
        amount=data["amount"],
        currency=data["currency"],
        details=data["details"],
    )


def _payout(row: Row[Any]) -> Payout:
    return _payout_of(row._mapping)


def _payout_of(row: Mapping[Any, Any]) -> Payout:
    return Payout(
        payout_id=row["payout_id"],
        party_id=row["party_id"],
        shop_id=row["shop_id"],
        status=PayoutStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        requested_amount=row["requested_amount"],
        requested_payout_tool_id=row["requested_payout_tool_id"],
        payout_tool_id=row["payout_tool_id"],
        amount=row["amount"],
        fee=row["fee"],
        currency=row["currency"],
        cash_flow=tuple(_posting_from_json(p) for p in row["cash_flow"]),
        metadata=row["metadata"],
        created_by=row["created_by"],
        cancel_details=row["cancel_details"],
        revision=row["revision"],
        failure=(
            None
            if row["failure_code"] is None
            else PayoutFailure(FailureCode(row["failure_code"]), row["failure_details"])
        ),
    )


_COLUMNS = tuple(column.name for column in payout.c)
_SELECT_ONE = f"SELECT {', '.join(_COLUMNS)} FROM payout WHERE payout_id = %s"  # noqa: S608 (column names)


def fetch_payout(cursor: psycopg2.extensions.cursor, payout_id: str) -> Payout | None:
    """The payout as stored now, read on a driver cursor (`Database.call`): one statement."""
    cursor.execute(_SELECT_ONE, (payout_id,))
    row = cursor.fetchone()
    return None if row is None else _payout_of(dict(zip(_COLUMNS, row, strict=True)))


# The statements of the hot paths, built once: each call then only binds its values.
_GET = select(payout).where(payout.c.payout_id == bindparam("payout_id"))
_ADD = (
    pg_insert(payout)
    .on_conflict_do_nothing(index_elements=[payout.c.payout_id])
    .returning(payout.c.payout_id)
)
_STORED_EVENT = (
    payout_event.insert()
    .values(
        {
            column: bindparam(column)
            for column in ("event_id", "payout_id", "sequence_id", "created_at", "payload")
        }
    )
    .returning(payout_event.c.id)
    .cte("stored")
)
_ADD_EVENT = payout_event_outbox.insert().from_select(["event_row_id"], select(_STORED_EVENT.c.id))
# The status is a literal, not a parameter, so that the planner takes the partial index of UNPAID
# payouts (tables.payout's ix_payout_unpaid_created_at).
_UNPAID_CREATED_BEFORE = (
    select(payout.c.payout_id)
    .where(
        payout.c.status == literal_column(f"'{PayoutStatus.UNPAID.value}'"),
        payout.c.created_at < bindparam("cutoff"),
    )
    .order_by(payout.c.created_at)
    .limit(bindparam("limit"))
)


class Payouts:
    """Payout and event rows on one connection; the caller owns the transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get(self, payout_id: str) -> Payout | None:
        row = self._connection.execute(_GET, {"payout_id": payout_id}).first()
        return None if row is None else _payout(row)

    def add(self, new: Payout) -> bool:
        """Inserts a new payout; False when one with its id exists (waits for an uncommitted one)."""
        inserted = self._connection.execute(
            _ADD,
            {
                "payout_id": new.payout_id,
                "party_id": new.party_id,
                "shop_id": new.shop_id,
                "status": new.status.value,
                "created_at": new.created_at,
                "updated_at": new.updated_at,
                "requested_amount": new.requested_amount,
                "requested_payout_tool_id": new.requested_payout_tool_id,
                "payout_tool_id": new.payout_tool_id,
                "amount": new.amount,
                "fee": new.fee,
                "currency": new.currency,
                "cash_flow": [posting_to_json(p) for p in new.cash_flow],
                "metadata": dict(new.metadata),
                "created_by": new.created_by,
                "cancel_details": new.cancel_details,
                "revision": new.revision,
            },
        ).first()
        return inserted is not None

    def add_event(self, event: PayoutEvent) -> None:
        """Stores the event and queues it for Kafka, in one statement of the caller's transaction."""
        self._connection.execute(
            _ADD_EVENT,
            {
                "event_id": event.event_id,
                "payout_id": event.payout_id,
                "sequence_id": event.sequence_id,
                "created_at": event.created_at,
                "payload": event_to_proto(event).SerializeToString(),
            },
        )

    def events(self, payout_id: str, after_sequence_id: int, limit: int) -> list[bytes]:
        rows = self._connection.execute(
            select(payout_event.c.payload)
            .where(payout_event.c.payout_id == payout_id, payout_event.c.sequence_id > after_sequence_id)
            .order_by(payout_event.c.sequence_id)
            .limit(limit)
        )
        return [bytes(row.payload) for row in rows]

    def event(self, payout_id: str, sequence_id: int) -> bytes | None:
        payload = self._connection.execute(
            select(payout_event.c.payload).where(
                payout_event.c.payout_id == payout_id, payout_event.c.sequence_id == sequence_id
            )
        ).scalar_one_or_none()
        return None if payload is None else bytes(payload)

    def unpaid_created_before(self, cutoff: datetime, limit: int) -> list[str]:
        """The ids of up to `limit` UNPAID payouts created before `cutoff`, oldest first."""
        rows = self._connection.execute(_UNPAID_CREATED_BEFORE, {"cutoff": cutoff, "limit": limit})
        return [row.payout_id for row in rows]

    def list(self, where: PayoutFilter, after: Cursor | None, limit: int) -> list[Listed]:
        conditions, parameters = _listing_conditions(where, after)
        statement = _LISTED + (f" WHERE {' AND '.join(conditions)}" if conditions else "") + _LISTED_ORDER
        rows = self._connection.exec_driver_sql(statement, {**parameters, "limit": limit})
        return [Listed(created_at, payout_id, bytes(payload)) for created_at, payout_id, payload in rows]


# The listing in driver SQL, its WHERE made of the filters given: a page of 100 would otherwise
# spend more of serve's time building and caching the statement than PostgreSQL spends running it.
# Each payout comes with its latest event, whose snapshot is the payout (`Listed`).
_LISTED = (
    "SELECT p.created_at, p.payout_id, e.payload FROM payout p"
    " JOIN payout_event e ON e.payout_id = p.payout_id AND e.sequence_id = p.revision"
)
_LISTED_ORDER = " ORDER BY p.created_at DESC, p.payout_id DESC LIMIT %(limit)s"


def _listing_conditions(where: PayoutFilter, after: Cursor | None) -> tuple[list[str], dict[str, Any]]:
    conditions: list[str] = []
    parameters: dict[str, Any] = {}

    def given(condition: str, **values: Any) -> None:
        conditions.append(condition)
        parameters.update(values)

    if where.party_id:
        given("p.party_id = %(party_id)s", party_id=where.party_id)
    if where.shop_id:
        given("p.shop_id = %(shop_id)s", shop_id=where.shop_id)
    if where.parties is not None:
        given("p.party_id = ANY(%(parties)s)", parties=sorted(where.parties))
    if where.statuses:
        given("p.status = ANY(%(statuses)s)", statuses=[s.value for s in where.statuses])
    if where.created_from is not None:
        given("p.created_at >= %(created_from)s", created_from=where.created_from)
    if where.created_to is not None:
        given("p.created_at < %(created_to)s", created_to=where.created_to)
    if after is not None:
        given(
            "(p.created_at, p.payout_id) < (%(after_at)s, %(after_id)s)",
            after_at=after.created_at,
            after_id=after.payout_id,
        )
    return conditions, parameters
