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
