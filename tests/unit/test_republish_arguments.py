"""What `payout-manager events republish` takes as a time, and how it splits its work, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from payout_manager.events.republish import Republished, chunks, parse_since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01t10:00:00z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01 10:00:00+03:00", datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("2026-12-01T10:00:00.123456-01:30", datetime(2026, 12, 1, 11, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_an_rfc3339_time_with_its_offset_is_that_instant(text: str, expected: datetime) -> None:
    assert parse_since(text) == expected


def test_the_offset_is_kept() -> None:
    assert parse_since("2026-12-01T10:00:00+03:00").utcoffset() == timezone(timedelta(hours=3)).utcoffset(
        None
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-12-01",  # a date alone
        "2026-12-01T10:00:00",  # no offset: whose 10 o'clock?
        "2026-12-01T10:00Z",  # no seconds
        "2026-12-01T10:00:00+0300",  # an offset without its colon
        "2026-W48-1T10:00:00Z",  # ISO 8601 week date, not RFC 3339
        "1764583200",  # a Unix time
        "2026-02-30T10:00:00Z",  # no such day
        "2026-12-01T25:00:00Z",  # no such hour
        "\uff12\uff10\uff12\uff16-12-01T10:00:00Z",  # full-width digits
        " 2026-12-01T10:00:00Z",
    ],
)
def test_anything_else_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|not a valid time"):
        parse_since(text)


def test_payouts_go_in_chunks_of_at_most_the_size_given_and_all_of_them() -> None:
    ids = [f"p-{n}" for n in range(7)]

    assert [list(part) for part in chunks(ids, 3)] == [ids[0:3], ids[3:6], ids[6:7]]
    assert list(chunks([], 3)) == []


def test_the_summary_names_events_and_payouts() -> None:
    assert Republished(7, 3).summary() == "queued 7 events of 3 payouts to be published again"
