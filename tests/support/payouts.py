"""Calls on PayoutManagement that many tests make, and reading refusals."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payout_manager_testing.calls import Stub, cancel, confirm, create, fail, mark_paid

__all__ = ["Stub", "cancel", "confirm", "create", "fail", "mark_paid", "refusal", "violated_fields"]


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
