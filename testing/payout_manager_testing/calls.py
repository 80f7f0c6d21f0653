"""The PayoutManagement calls a client of the kit makes most: one line each, for tests and loads."""

from __future__ import annotations

from collections.abc import Mapping

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc

Stub = payout_manager_pb2_grpc.PayoutManagementStub


def create(
    payouts: Stub,
    party_id: str,
    shop_id: str,
    amount: int,
    *,
    payout_id: str = "",
    payout_tool_id: str = "",
    metadata: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> pb.Payout:
    return payouts.CreatePayout(
        pb.CreatePayoutRequest(
            payout_id=payout_id,
            party_id=party_id,
            shop_id=shop_id,
            cash=party_pb.Cash(amount=amount, currency="RUB"),
            payout_tool_id=payout_tool_id,
            metadata=metadata,
        ),
        timeout=timeout,
    )


def confirm(payouts: Stub, payout_id: str) -> pb.Payout:
    return payouts.ConfirmPayout(pb.ConfirmPayoutRequest(payout_id=payout_id))


def cancel(payouts: Stub, payout_id: str, details: str = "") -> pb.Payout:
    return payouts.CancelPayout(pb.CancelPayoutRequest(payout_id=payout_id, details=details))


def mark_paid(payouts: Stub, payout_id: str) -> pb.Payout:
    return payouts.MarkPayoutPaid(pb.MarkPayoutPaidRequest(payout_id=payout_id))


def fail(
    payouts: Stub,
    payout_id: str,
    code: pb.PayoutFailureCode.ValueType = pb.PAYOUT_FAILURE_CODE_DECLINED,
    details: str = "declined by the bank",
) -> pb.Payout:
    return payouts.FailPayout(
        pb.FailPayoutRequest(payout_id=payout_id, failure=pb.PayoutFailure(code=code, details=details))
    )
