"""Calls on PayoutManagement that many tests make, and reading refusals."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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


def refusal(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    status = rpc_status.from_call(call)
    assert status is not None, f"no rich status in {call}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "payout-manager"
            return call.code(), info.reason
    raise AssertionError(f"no ErrorInfo in {call}")


def violated_fields(call: grpc.RpcError) -> list[str]:
    """The fields a refusal's google.rpc.BadRequest names, in its order."""
    status = rpc_status.from_call(call)
    assert status is not None, f"{call.code()} carries no google.rpc.Status"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR) and detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields
