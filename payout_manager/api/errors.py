"""The one mapping from refusals to gRPC statuses with google.rpc details (SPEC 2)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from payout_manager.errors import DOMAIN, Code, FieldViolation, Refusal

# Each refusal code is named as gRPC names its status code.
_GRPC_CODES: dict[Code, int] = {code: getattr(code_pb2, code.value) for code in Code}


def _packed(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# A status travels in trailers, which gRPC clients cap at 8 KiB by default: a refusal listing every
# problem of a huge request in full would reach its caller as RESOURCE_EXHAUSTED instead.
MAX_VIOLATIONS = 10
MAX_MESSAGE = 300
MAX_FIELD = 80
MAX_DESCRIPTION = 120


def _short(text: str, limit: int) -> str:
    """`text` as ASCII (escaping the rest, which trailers would inflate), at most `limit` long."""
    ascii_text = text.encode("ascii", "backslashreplace").decode("ascii")
    return ascii_text if len(ascii_text) <= limit else ascii_text[: limit - 3] + "..."


def _bad_request(violations: tuple[FieldViolation, ...]) -> error_details_pb2.BadRequest:
    shown = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_short(v.field, MAX_FIELD), description=_short(v.description, MAX_DESCRIPTION)
        )
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        shown.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="", description=f"and {len(violations) - MAX_VIOLATIONS} more problems"
            )
        )
    return error_details_pb2.BadRequest(field_violations=shown)


def to_status(refusal: Refusal) -> grpc.Status:
    """The status for `refusal`: its code, an ErrorInfo, and BadRequest for INVALID_ARGUMENT."""
    details = [_packed(error_details_pb2.ErrorInfo(reason=refusal.reason.value, domain=DOMAIN))]
    if refusal.code is Code.INVALID_ARGUMENT:
        details.append(_packed(_bad_request(tuple(refusal.violations))))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(
            code=_GRPC_CODES[refusal.code], message=_short(refusal.message, MAX_MESSAGE), details=details
        )
    )
    return status
