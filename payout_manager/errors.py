"""The one table of refusals: every reason a caller can get, with its status code.

Domain and adapters raise `Refusal`; the API layer turns it into a gRPC status in one place
(`payout_manager.api.errors`). Nothing here knows about gRPC.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

DOMAIN = "payout-manager"


class Code(enum.Enum):
    """The status codes a refusal may carry (a subset of gRPC's, named the same)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


class Reason(enum.StrEnum):
    """Every reason this service gives, as it appears in `google.rpc.ErrorInfo.reason`."""

    INVALID_REQUEST = "INVALID_REQUEST"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    POSTINGS_MISMATCH = "POSTINGS_MISMATCH"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    AMOUNT_OUT_OF_RANGE = "AMOUNT_OUT_OF_RANGE"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 - a reason, not a secret

    PAYOUT_NOT_FOUND = "PAYOUT_NOT_FOUND"
    REVISION_NOT_FOUND = "REVISION_NOT_FOUND"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    PLAN_NOT_FOUND = "PLAN_NOT_FOUND"
    PARTY_NOT_FOUND = "PARTY_NOT_FOUND"
    SHOP_NOT_FOUND = "SHOP_NOT_FOUND"
    PAYOUT_TOOL_NOT_FOUND = "PAYOUT_TOOL_NOT_FOUND"

    PAYOUT_ALREADY_EXISTS = "PAYOUT_ALREADY_EXISTS"
    PAYOUT_LIMIT_EXCEEDED = "PAYOUT_LIMIT_EXCEEDED"

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INVALID_PAYOUT_STATUS = "INVALID_PAYOUT_STATUS"
    INVALID_PLAN_STATE = "INVALID_PLAN_STATE"
    PARTY_BLOCKED = "PARTY_BLOCKED"
    SHOP_BLOCKED = "SHOP_BLOCKED"
    PAYOUTS_NOT_PERMITTED = "PAYOUTS_NOT_PERMITTED"

    PARTY_MANAGEMENT_UNAVAILABLE = "PARTY_MANAGEMENT_UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    SERVER_STOPPING = "SERVER_STOPPING"

    UNKNOWN_CALLER = "UNKNOWN_CALLER"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PARTY_NOT_ALLOWED = "PARTY_NOT_ALLOWED"


CODES: dict[Reason, Code] = {
    Reason.INVALID_REQUEST: Code.INVALID_ARGUMENT,
    Reason.MALFORMED_REQUEST: Code.INVALID_ARGUMENT,
    Reason.POSTINGS_MISMATCH: Code.INVALID_ARGUMENT,
    Reason.CURRENCY_MISMATCH: Code.INVALID_ARGUMENT,
    Reason.AMOUNT_OUT_OF_RANGE: Code.INVALID_ARGUMENT,
    Reason.INVALID_PAGE_TOKEN: Code.INVALID_ARGUMENT,
    Reason.PAYOUT_NOT_FOUND: Code.NOT_FOUND,
    Reason.REVISION_NOT_FOUND: Code.NOT_FOUND,
    Reason.ACCOUNT_NOT_FOUND: Code.NOT_FOUND,
    Reason.PLAN_NOT_FOUND: Code.NOT_FOUND,
    Reason.PARTY_NOT_FOUND: Code.NOT_FOUND,
    Reason.SHOP_NOT_FOUND: Code.NOT_FOUND,
    Reason.PAYOUT_TOOL_NOT_FOUND: Code.NOT_FOUND,
    Reason.PAYOUT_ALREADY_EXISTS: Code.ALREADY_EXISTS,
    Reason.PAYOUT_LIMIT_EXCEEDED: Code.RESOURCE_EXHAUSTED,
    Reason.INSUFFICIENT_FUNDS: Code.FAILED_PRECONDITION,
    Reason.INVALID_PAYOUT_STATUS: Code.FAILED_PRECONDITION,
    Reason.INVALID_PLAN_STATE: Code.FAILED_PRECONDITION,
    Reason.PARTY_BLOCKED: Code.FAILED_PRECONDITION,
    Reason.SHOP_BLOCKED: Code.FAILED_PRECONDITION,
    Reason.PAYOUTS_NOT_PERMITTED: Code.FAILED_PRECONDITION,
    Reason.PARTY_MANAGEMENT_UNAVAILABLE: Code.UNAVAILABLE,
    Reason.DATABASE_UNAVAILABLE: Code.UNAVAILABLE,
    Reason.SERVER_STOPPING: Code.UNAVAILABLE,
    Reason.UNKNOWN_CALLER: Code.UNAUTHENTICATED,
    Reason.METHOD_NOT_ALLOWED: Code.PERMISSION_DENIED,
    Reason.PARTY_NOT_ALLOWED: Code.PERMISSION_DENIED,
}


# The SQLSTATEs the database's procedures refuse with (migrations/versions/0005, 0008): class PM is
# this service's own; 22003 (numeric_value_out_of_range) is a balance leaving bigint.
SQLSTATES: dict[str, Reason] = {
    "PM001": Reason.INSUFFICIENT_FUNDS,
    "PM002": Reason.ACCOUNT_NOT_FOUND,
    "PM003": Reason.CURRENCY_MISMATCH,
    "PM004": Reason.INVALID_PLAN_STATE,
    "PM005": Reason.PLAN_NOT_FOUND,
    "PM006": Reason.INVALID_PLAN_STATE,
    "PM007": Reason.PAYOUT_LIMIT_EXCEEDED,
    "22003": Reason.AMOUNT_OUT_OF_RANGE,
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, as `google.rpc.BadRequest.FieldViolation`."""

    field: str
    description: str


@dataclass
class Refusal(Exception):  # noqa: N818 - a refusal is the domain's word, not an "error"
    """A call refused for a reason the caller can act on; it changed nothing."""

    reason: Reason
    message: str
    violations: Sequence[FieldViolation] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def code(self) -> Code:
        return CODES[self.reason]

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def invalid(violations: Sequence[FieldViolation]) -> Refusal:
    """An INVALID_ARGUMENT / INVALID_REQUEST refusal listing every bad field."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return Refusal(Reason.INVALID_REQUEST, f"invalid request: {summary}", tuple(violations))
