"""Requests from their protobuf form to the domain's, refusing what cannot be converted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from payout_manager.accounting.rules import Account, Batch, Plan, PlanStatus, Posting, text_violations
from payout_manager.errors import FieldViolation, invalid
from payout_manager.events.codec import FAILURE_CODE_FROM_PROTO, STATUS_FROM_PROTO, timestamp
from payout_manager.payouts.model import PayoutFailure, PayoutRequest
from payout_manager.payouts.ports import PayoutFilter
from payout_manager.payouts.validation import MAX_ID_LENGTH
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN = datetime(1, 1, 1, tzinfo=UTC)
_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_MIN_SECONDS = (_MIN - _EPOCH) // timedelta(seconds=1)
_MAX_SECONDS = (_MAX - _EPOCH) // timedelta(seconds=1)


def moment(field: str, value: Timestamp) -> datetime:
    """A Timestamp as an aware datetime, refused when it lies outside years 1..9999."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise invalid([FieldViolation(f"{field}.nanos", "must be between 0 and 999999999")])
    # Checked on the integer first: a timedelta of an absurd number of seconds would overflow.
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS:
        raise invalid([FieldViolation(field, "must lie between the years 1 and 9999")])
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def create_request(request: pb.CreatePayoutRequest) -> PayoutRequest:
    return PayoutRequest(
        payout_id=request.payout_id,
        party_id=request.party_id,
        shop_id=request.shop_id,
        amount=request.cash.amount,
        currency=request.cash.currency,
        payout_tool_id=request.payout_tool_id,
        metadata=dict(request.metadata),
    )


def quote_request(request: pb.QuotePayoutRequest) -> PayoutRequest:
    """A quote asks what the create of the same fields would (no payout id, no metadata)."""
    return PayoutRequest(
        payout_id="",
        party_id=request.party_id,
        shop_id=request.shop_id,
        amount=request.cash.amount,
        currency=request.cash.currency,
        payout_tool_id=request.payout_tool_id,
        metadata={},
    )


def failure(request: pb.FailPayoutRequest) -> PayoutFailure:
    """The request's failure, refused without one or with a code other than a known failure's."""
    if not request.HasField("failure"):
        raise invalid([FieldViolation("failure", "is required: the code and details of the refusal")])
    code = FAILURE_CODE_FROM_PROTO.get(request.failure.code)
    if code is None:
        raise invalid([FieldViolation("failure.code", "must be a PayoutFailureCode other than UNSPECIFIED")])
    return PayoutFailure(code, request.failure.details)


def payout_filter(request: pb.ListPayoutsRequest) -> PayoutFilter:
    violations = [
        *text_violations("party_id", request.party_id, max_length=MAX_ID_LENGTH, required=False),
        *text_violations("shop_id", request.shop_id, max_length=MAX_ID_LENGTH, required=False),
    ]
    statuses = []
    for index, value in enumerate(request.statuses):
        status = STATUS_FROM_PROTO.get(value)
        if status is None:
            violations.append(
                FieldViolation(f"statuses[{index}]", "must be a PayoutStatus other than UNSPECIFIED")
            )
        else:
            statuses.append(status)
    if violations:
        raise invalid(violations)
    created_from = moment("created_from", request.created_from) if request.HasField("created_from") else None
    created_to = moment("created_to", request.created_to) if request.HasField("created_to") else None
    if created_from and created_to and created_from > created_to:
        raise invalid([FieldViolation("created_to", "must not be before created_from")])
    return PayoutFilter(
        party_id=request.party_id,
        shop_id=request.shop_id,
        statuses=tuple(sorted(set(statuses), key=lambda s: s.value)),
        created_from=created_from,
        created_to=created_to,
    )


def batch(request: accounter_pb.HoldRequest) -> Batch:
    if not request.HasField("batch"):
        raise invalid([FieldViolation("batch", "is required")])
    return Batch(
        request.batch.id,
        tuple(
            Posting(p.from_id, p.to_id, p.amount, p.currency, p.description) for p in request.batch.postings
        ),
    )


def account_to_proto(account: Account) -> accounter_pb.Account:
    return accounter_pb.Account(
        id=account.id,
        currency=account.currency,
        description=account.description,
        creation_time=timestamp(account.creation_time),
        own_amount=account.own_amount,
        min_available_amount=account.min_available_amount,
        max_available_amount=account.max_available_amount,
    )


def plan_log(accounts: dict[int, Account]) -> accounter_pb.PostingPlanLog:
    return accounter_pb.PostingPlanLog(
        affected_accounts={id_: account_to_proto(account) for id_, account in accounts.items()}
    )


_PLAN_STATUS = {
    PlanStatus.HOLD: accounter_pb.POSTING_PLAN_STATUS_HOLD,
    PlanStatus.COMMITTED: accounter_pb.POSTING_PLAN_STATUS_COMMITTED,
    PlanStatus.ROLLED_BACK: accounter_pb.POSTING_PLAN_STATUS_ROLLED_BACK,
}


def plan_to_proto(plan: Plan) -> accounter_pb.PostingPlan:
    return accounter_pb.PostingPlan(
        id=plan.id,
        status=_PLAN_STATUS[plan.status],
        batches=[
            accounter_pb.PostingBatch(
                id=b.id,
                postings=[
                    accounter_pb.Posting(
                        from_id=p.from_id,
                        to_id=p.to_id,
                        amount=p.amount,
                        currency=p.currency,
                        description=p.description,
                    )
                    for p in b.postings
                ],
            )
            for b in plan.batches
        ],
    )
