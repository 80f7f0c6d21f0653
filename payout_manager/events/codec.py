"""Domain payouts and events to their protobuf form (payout_manager.v1), and back for snapshots."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from payout_manager.payouts.cash_flow import CashFlowAccount, CashFlowPosting
from payout_manager.payouts.model import (
    FailureCode,
    Payout,
    PayoutCreated,
    PayoutEvent,
    PayoutFailure,
    PayoutStatus,
)
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb

_STATUS_TO_PROTO = {status: pb.PayoutStatus.Value(f"PAYOUT_STATUS_{status.value}") for status in PayoutStatus}
STATUS_FROM_PROTO = {value: status for status, value in _STATUS_TO_PROTO.items()}


_FAILURE_CODE_TO_PROTO = {
    code: pb.PayoutFailureCode.Value(f"PAYOUT_FAILURE_CODE_{code.value}") for code in FailureCode
}
FAILURE_CODE_FROM_PROTO = {value: code for code, value in _FAILURE_CODE_TO_PROTO.items()}


def status_to_proto(status: PayoutStatus) -> pb.PayoutStatus.ValueType:
    return _STATUS_TO_PROTO[status]


def failure_to_proto(failure: PayoutFailure | None) -> pb.PayoutFailure | None:
    if failure is None:
        return None
    return pb.PayoutFailure(code=_FAILURE_CODE_TO_PROTO[failure.code], details=failure.details)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a Timestamp (exact to the microsecond, as Timestamp.FromDatetime)."""
    since = moment - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def _account(account: CashFlowAccount) -> party_pb.CashFlowAccount:
    return party_pb.CashFlowAccount(
        type=party_pb.AccountType.Value(f"ACCOUNT_TYPE_{account.type.value}"), account_id=account.account_id
    )


def posting_to_proto(posting: CashFlowPosting) -> party_pb.CashFlowPosting:
    return party_pb.CashFlowPosting(
        source=_account(posting.source),
        destination=_account(posting.destination),
        volume=party_pb.Cash(amount=posting.amount, currency=posting.currency),
        details=posting.details,
    )


class _LastSnapshot(threading.local):
    """The last payout this thread turned into protobuf, and what it became."""

    payout: Payout | None = None
    proto: pb.Payout | None = None


_last = _LastSnapshot()


def payout_to_proto(payout: Payout) -> pb.Payout:
    """The payout as protobuf; built once per change: the stored event's snapshot and the call's
    answer are the same payout object, so the second ask on this thread gets the first's message.

    The message returned may be shared that way: callers must not change it.
    """
    last = _last
    if last.payout is payout and last.proto is not None:
        return last.proto
    proto = _payout_to_proto(payout)
    last.payout, last.proto = payout, proto
    return proto


def _payout_to_proto(payout: Payout) -> pb.Payout:
    return pb.Payout(
        payout_id=payout.payout_id,
        created_at=timestamp(payout.created_at),
        updated_at=timestamp(payout.updated_at),
        party_id=payout.party_id,
        shop_id=payout.shop_id,
        status=status_to_proto(payout.status),
        cash_flow=[posting_to_proto(p) for p in payout.cash_flow],
        payout_tool_id=payout.payout_tool_id,
        amount=payout.amount,
        fee=payout.fee,
        currency=payout.currency,
        cancel_details=payout.cancel_details,
        revision=payout.revision,
        metadata=dict(payout.metadata),
        created_by=payout.created_by,
        failure=failure_to_proto(payout.failure),
    )


def snapshot(payload: bytes) -> pb.Payout:
    """The payout in a stored event (its serialized payout_manager.v1.Event) as of that event."""
    return pb.Event.FromString(payload).payout


def event_to_proto(event: PayoutEvent) -> pb.Event:
    snapshot = payout_to_proto(event.payout)
    change = pb.PayoutChange()
    if isinstance(event.change, PayoutCreated):
        change.created.payout.CopyFrom(snapshot)
    else:
        change.status_changed.status = status_to_proto(event.change.status)
        change.status_changed.details = event.change.details
        failure = failure_to_proto(event.change.failure)
        if failure is not None:
            change.status_changed.failure.CopyFrom(failure)
    return pb.Event(
        event_id=event.event_id,
        payout_id=event.payout_id,
        sequence_id=event.sequence_id,
        created_at=timestamp(event.created_at),
        payout_change=change,
        payout=snapshot,
        initiator=event.initiator,
    )
