"""The one mapping from refusals to gRPC statuses with google.rpc details (SPEC 2)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from payout_manager.errors import DOMAIN, Code, FieldViolation, Refusal

_GRPC_CODES: dict[Code, int] = {
    Code.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    Code.NOT_FOUND: code_pb2.NOT_FOUND,
    Code.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    Code.UNAVAILABLE: code_pb2.UNAVAILABLE,
}


def _packed(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bad_request(violations: tuple[FieldViolation, ...]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


def to_status(refusal: Refusal) -> grpc.Status:
    """The status for `refusal`: its code, an ErrorInfo, and BadRequest for INVALID_ARGUMENT."""
    details = [_packed(error_details_pb2.ErrorInfo(reason=refusal.reason.value, domain=DOMAIN))]
    if refusal.code is Code.INVALID_ARGUMENT:
        details.append(_packed(_bad_request(tuple(refusal.violations))))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=_GRPC_CODES[refusal.code], message=refusal.message, details=details)
    )
    return status
