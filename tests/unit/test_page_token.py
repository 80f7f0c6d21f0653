"""ListPayouts' page token: it round-trips, is bound to its filters, and refuses anything else."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payout_manager.errors import Code, Reason, Refusal
from payout_manager.payouts import listing
from payout_manager.payouts.model import PayoutStatus
from payout_manager.payouts.ports import Cursor, PayoutFilter

CURSOR = Cursor(datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC), "payout-42")
FILTER = PayoutFilter(
    party_id="party-1",
    shop_id="shop-1",
    statuses=(PayoutStatus.UNPAID, PayoutStatus.PAID),
    created_from=datetime(2026, 1, 1, tzinfo=UTC),
    created_to=datetime(2026, 4, 1, tzinfo=UTC),
)


def assert_refused(token: str, where: PayoutFilter = FILTER) -> None:
    with pytest.raises(Refusal) as caught:
        listing.decode(token, where)

    assert (caught.value.reason, caught.value.code) == (Reason.INVALID_PAGE_TOKEN, Code.INVALID_ARGUMENT)
    assert [v.field for v in caught.value.violations] == ["page_token"]


def token_of(data: Any) -> str:
    """A token as the service would spell it, checksum included, around any JSON value."""
    return listing.seal(base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("="))


def genuine_fields(where: PayoutFilter = FILTER) -> dict[str, Any]:
    """The JSON inside a token the service made for `where`."""
    body = listing.encode(CURSOR, where).rpartition(".")[0]
    fields: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return fields


# --- round trip -------------------------------------------------------------------------------


def test_token_decodes_to_the_cursor_it_was_made_from() -> None:
    assert listing.decode(listing.encode(CURSOR, FILTER), FILTER) == CURSOR


def test_token_for_an_empty_filter_round_trips() -> None:
    assert listing.decode(listing.encode(CURSOR, PayoutFilter()), PayoutFilter()) == CURSOR


def test_token_keeps_the_moment_of_a_cursor_in_another_time_zone() -> None:
    moscow = timezone(timedelta(hours=3))
    cursor = Cursor(datetime(2026, 3, 1, 15, 30, 45, 7, tzinfo=moscow), "payout-1")

    decoded = listing.decode(listing.encode(cursor, FILTER), FILTER)

    assert decoded.created_at == cursor.created_at
    assert decoded.payout_id == cursor.payout_id


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.just(UTC),
    ),
    # Ids the service can store: no NUL, no lone surrogate (refused: see tests/e2e/test_bad_input.py).
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=64),
)
def test_any_cursor_round_trips(created_at: datetime, payout_id: str) -> None:
    cursor = Cursor(created_at, payout_id)

    assert listing.decode(listing.encode(cursor, FILTER), FILTER) == cursor


def test_token_is_url_safe_text() -> None:
    token = listing.encode(Cursor(CURSOR.created_at, "id/with+chars?" * 5), FILTER)

    # RFC 3986 unreserved characters only: it goes into a URL or a header untouched.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_token_accepts_the_same_statuses_in_another_order() -> None:
    token = listing.encode(CURSOR, FILTER)

    reordered = replace(FILTER, statuses=(PayoutStatus.PAID, PayoutStatus.UNPAID))

    assert listing.decode(token, reordered) == CURSOR


# --- refused: other filters -------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        replace(FILTER, party_id="party-2"),
        replace(FILTER, shop_id="shop-2"),
        replace(FILTER, shop_id=""),
        replace(FILTER, statuses=(PayoutStatus.UNPAID,)),
        replace(FILTER, statuses=()),
        replace(FILTER, created_from=datetime(2026, 1, 2, tzinfo=UTC)),
        replace(FILTER, created_from=None),
        replace(FILTER, created_to=datetime(2026, 4, 1, 0, 0, 0, 1, tzinfo=UTC)),
        replace(FILTER, created_to=None),
        PayoutFilter(),
    ],
    ids=[
        "party",
        "shop",
        "no shop",
        "fewer statuses",
        "no statuses",
        "created_from",
        "no created_from",
        "created_to a microsecond later",
        "no created_to",
        "no filter at all",
    ],
)
def test_token_used_with_other_filters_is_refused(other: PayoutFilter) -> None:
    assert_refused(listing.encode(CURSOR, FILTER), other)


# --- refused: not a token this service made ---------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["garbage", "x", "====", "!!!!", "%%%%", "a b c d", "ÿÿÿÿ", "токен", "\x00\x00\x00\x00"],
)
def test_garbage_is_refused(token: str) -> None:
    assert_refused(token)


@given(st.data())
def test_a_token_with_any_one_character_changed_is_refused(data: st.DataObject) -> None:
    token = listing.encode(CURSOR, FILTER)
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(
        st.characters(codec="ascii").filter(lambda c: c != token[index]), label="character"
    )

    assert_refused(token[:index] + replacement + token[index + 1 :])


def test_a_truncated_token_is_refused() -> None:
    token = listing.encode(CURSOR, FILTER)

    assert_refused(token[: len(token) // 2])


@pytest.mark.parametrize(
    "raw",
    [b"hello, world", b"\xff\xfe\xfd\xfc", b"{", b"{'t': 1}", b"", b"\x00"],
    ids=["text", "not UTF-8", "unfinished JSON", "Python, not JSON", "nothing", "NUL"],
)
def test_valid_base64_of_something_that_is_not_json_is_refused(raw: bytes) -> None:
    assert_refused(base64.urlsafe_b64encode(raw).decode())


@pytest.mark.parametrize(
    "data",
    [None, 1, 1.5, "text", True, [], [1, "payout-42", "fingerprint"], {}],
    ids=["null", "number", "float", "string", "bool", "empty list", "list", "empty object"],
)
def test_json_that_is_not_a_token_object_is_refused(data: Any) -> None:
    assert_refused(token_of(data))


@pytest.mark.parametrize("key", ["t", "id", "f"])
def test_token_missing_a_field_is_refused(key: str) -> None:
    fields = genuine_fields()
    del fields[key]

    assert_refused(token_of(fields))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("t", "1772368245123456"),
        ("t", 1.5),
        ("t", None),
        ("t", [1]),
        ("t", True),
        ("t", 10**30),
        ("t", -(10**30)),
        ("id", 42),
        ("id", None),
        ("id", ["payout-42"]),
        ("f", None),
        ("f", 0),
    ],
    ids=[
        "time as string",
        "time as float",
        "time null",
        "time as list",
        "time as bool",
        "time after year 9999",
        "time before year 1",
        "id as number",
        "id null",
        "id as list",
        "fingerprint null",
        "fingerprint as number",
    ],
)
def test_token_with_a_field_of_the_wrong_type_is_refused(key: str, value: Any) -> None:
    fields = genuine_fields()
    fields[key] = value

    assert_refused(token_of(fields))


def test_deeply_nested_json_is_refused() -> None:
    assert_refused(base64.urlsafe_b64encode(b"[" * 100_000).decode())


def test_token_whose_payout_id_postgresql_cannot_hold_is_refused() -> None:
    """No payout id holds NUL (PostgreSQL text cannot), so no genuine token does either."""
    fields = genuine_fields()
    fields["id"] = "payout\x0042"

    assert_refused(token_of(fields))
