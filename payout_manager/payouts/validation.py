"""Checks on what callers send, before anything is read or written (SPEC 1.1, step 1)."""

from __future__ import annotations

from payout_manager.accounting.rules import currency_violations, text_violations
from payout_manager.errors import FieldViolation, invalid
from payout_manager.payouts.model import PayoutRequest

MAX_ID_LENGTH = 64
MAX_METADATA_ENTRIES = 32
MAX_METADATA_LENGTH = 256
MAX_DETAILS_LENGTH = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _id(field: str, value: str, *, required: bool) -> list[FieldViolation]:
    return text_violations(field, value, max_length=MAX_ID_LENGTH, required=required)


def check_create(request: PayoutRequest) -> None:
    violations = (
        _id("payout_id", request.payout_id, required=False)
        + _id("party_id", request.party_id, required=True)
        + _id("shop_id", request.shop_id, required=True)
        + _id("payout_tool_id", request.payout_tool_id, required=False)
    )
    if request.amount <= 0:
        violations.append(FieldViolation("cash.amount", "must be above 0"))
    violations += currency_violations("cash.currency", request.currency)
    if len(request.metadata) > MAX_METADATA_ENTRIES:
        violations.append(FieldViolation("metadata", f"must have at most {MAX_METADATA_ENTRIES} entries"))
    for key, value in sorted(request.metadata.items())[:MAX_METADATA_ENTRIES]:
        # Keys are named short: a refusal must stay small enough to reach the caller.
        name = f"metadata[{key[:32]!r}]"
        violations += text_violations(name, key, max_length=MAX_METADATA_LENGTH, required=True)
        violations += text_violations(name, value, max_length=MAX_METADATA_LENGTH, required=False)
    if violations:
        raise invalid(violations)


def check_payout_id(payout_id: str) -> None:
    violations = _id("payout_id", payout_id, required=True)
    if violations:
        raise invalid(violations)


def check_details(details: str, field: str = "details") -> None:
    violations = text_violations(field, details, max_length=MAX_DETAILS_LENGTH, required=False)
    if violations:
        raise invalid(violations)


def page_size(field: str, value: int) -> int:
    """0 means the default; 1..MAX_PAGE_SIZE as given; anything else is refused."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise invalid([FieldViolation(field, f"must be between 0 and {MAX_PAGE_SIZE}")])
    return value
