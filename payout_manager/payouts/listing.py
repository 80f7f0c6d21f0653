"""The page token of ListPayouts: an opaque, filter-bound keyset cursor.

The token holds where the last page ended (created_at, payout_id) and a fingerprint of the filter
it was made for, so a token reused with other filters is refused instead of paging wrongly, and a
checksum of both, so a token changed in any character (mistyped, cut, mangled in a log) is refused
instead of paging from somewhere else. The checksum is not a signature: a caller who forges a token
can only seek within what its own filters already show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta

from payout_manager.errors import FieldViolation, Reason, Refusal
from payout_manager.payouts.ports import Cursor, PayoutFilter
from payout_manager.payouts.validation import MAX_ID_LENGTH

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ours are at most about 1100 characters (64 escaped astral characters); longer ones are not ours.
MAX_TOKEN_LENGTH = 2048
# Hex digits of SHA-256 kept: enough that a changed token matching by chance is not a worry.
_CHECKSUM_LENGTH = 16


def _fingerprint(where: PayoutFilter) -> str:
    canonical = json.dumps(
        [
            where.party_id,
            where.shop_id,
            sorted(s.value for s in where.statuses),
            where.created_from.isoformat() if where.created_from else None,
            where.created_to.isoformat() if where.created_to else None,
        ]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _storable(text: str) -> bool:
    """Whether PostgreSQL can take `text`: no NUL, no lone surrogate."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:_CHECKSUM_LENGTH]


def seal(body: str) -> str:
    """`body` (the base64 of the token's JSON) with its checksum: the token as it is handed out."""
    return f"{body}.{_checksum(body)}"


def encode(cursor: Cursor, where: PayoutFilter) -> str:
    micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
    raw = json.dumps({"t": micros, "id": cursor.payout_id, "f": _fingerprint(where)}, separators=(",", ":"))
    return seal(base64.urlsafe_b64encode(raw.encode()).decode().rstrip("="))


def decode(token: str, where: PayoutFilter) -> Cursor:
    """The cursor in `token`; INVALID_ARGUMENT / INVALID_PAGE_TOKEN for anything else."""
    refusal = Refusal(
        Reason.INVALID_PAGE_TOKEN,
        "page_token is not one this service made for these filters",
        (FieldViolation("page_token", "must be a next_page_token returned for the same filters"),),
    )
    body, _, checksum = token.rpartition(".")
    if len(token) > MAX_TOKEN_LENGTH or checksum != _checksum(body):
        raise refusal
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        micros, payout_id, fingerprint = data["t"], data["id"], data["f"]
        valid = (
            type(micros) is int
            and isinstance(payout_id, str)
            and len(payout_id) <= MAX_ID_LENGTH
            and _storable(payout_id)
            and fingerprint == _fingerprint(where)
        )
        created_at = _EPOCH + timedelta(microseconds=micros) if valid else None
    except (
        ValueError,
        TypeError,
        KeyError,
        OverflowError,
        RecursionError,
        binascii.Error,
        UnicodeDecodeError,
    ):
        raise refusal from None
    if created_at is None:
        raise refusal
    return Cursor(created_at, payout_id)
