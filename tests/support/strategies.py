"""Hypothesis strategies for hostile field values and raw wire bytes, for the bad-input tests.

Each strategy mixes purely random values with the edges where a server is most likely to trip:
empty and very long text, NUL and other control characters, the int64 and int32 limits, enum
numbers no proto declares, timestamps outside what a datetime or PostgreSQL can hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1

# Escaped so that the source shows what the characters are: Cyrillic, emoji, zero-width space,
# byte-order mark, the last code point, right-to-left override.
_ODD_TEXTS = [
    "",
    " ",
    "\t\n\r",
    "  RUB  ",
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "RUB\x00",
    "\x7f\x1b[2J",
    "RUB",
    "rub",
    "RU",
    "RUBB",
    "USD",
    "\u0420\u0423\u0411",
    "\U0001f4b8" * 3,
    "\u200b",
    "\ufeff",
    "\U0010ffff",
    "\u202eevil",
    "null",
    "'; DROP TABLE payout; --",
    "%s%n%x",
    "{}",
    "../../etc/passwd",
    "payout_",
    "revert_payout_",
    "fund_",
    "tool-1",
]
# Around the length limits of the contract (ids 64, metadata 256, plan ids 256, texts 1024).
_LONG_LENGTHS = [64, 65, 256, 257, 1024, 1025, 4096, 20_000]


def _repeated(piece: str, length: int) -> str:
    return (piece * length)[:length]


def long_texts() -> st.SearchStrategy[str]:
    """Text of exactly one of the lengths around the contract's limits, of any characters."""
    return st.builds(_repeated, st.text(min_size=1, max_size=4), st.sampled_from(_LONG_LENGTHS))


def short_texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_ODD_TEXTS), st.text(max_size=12))


def texts() -> st.SearchStrategy[str]:
    """Any text a protobuf string can carry: odd, unicode, whitespace, NUL, empty or very long."""
    return st.one_of(
        st.sampled_from(_ODD_TEXTS),
        st.text(max_size=16),
        st.text(st.characters(codec="utf-8"), max_size=80),
        st.text(st.characters(categories=["Cc", "Zs", "Zl", "Zp", "Cf"]), max_size=8),
        long_texts(),
    )


def int64s() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, 1, -1, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1, INT32_MIN, INT32_MAX]),
        st.integers(INT64_MIN, INT64_MAX),
        st.integers(-1000, 1000),
    )


def int32s() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, 1, -1, 100, 1000, 1001, INT32_MIN, INT32_MAX]),
        st.integers(INT32_MIN, INT32_MAX),
    )


def enum_numbers(declared: Sequence[int]) -> st.SearchStrategy[int]:
    """An enum field's number: a declared one, or one no proto declares (proto3 enums are open)."""
    return st.one_of(
        st.sampled_from(declared),
        st.sampled_from([99, -1, len(declared), INT32_MIN, INT32_MAX]),
        st.integers(INT32_MIN, INT32_MAX),
    )


# Years 1 and 9999 are the edges of a Python datetime; PostgreSQL's timestamptz reaches further.
_SECONDS = [0, -1, 1, -62135596800, -62135596801, 253402300799, 253402300800, INT64_MIN, INT64_MAX]
_NANOS = [0, 999_999_999, 1_000_000_000, -1, INT32_MIN, INT32_MAX]


def timestamps() -> st.SearchStrategy[Timestamp]:
    """Timestamps over the whole int64 range of seconds, with nanos inside and outside 0..999999999."""
    return st.builds(
        Timestamp,
        seconds=st.one_of(st.sampled_from(_SECONDS), st.integers(INT64_MIN, INT64_MAX)),
        nanos=st.one_of(st.sampled_from(_NANOS), st.integers(INT32_MIN, INT32_MAX)),
    )


def _many_entries(count: int, prefix: str, value: str) -> dict[str, str]:
    return {f"{prefix}{index}": value for index in range(count)}


def string_maps() -> st.SearchStrategy[dict[str, str]]:
    """map<string, string> values: small random ones, many entries, long keys, empty and NUL keys."""
    return st.one_of(
        st.dictionaries(short_texts(), short_texts(), max_size=6),
        st.builds(_many_entries, st.integers(30, 1500), short_texts(), short_texts()),
        # Many keys just over the metadata limit: each is refused, and each refusal is reported.
        st.builds(
            _many_entries,
            st.integers(30, 60),
            st.builds(_repeated, st.text(min_size=1, max_size=2), st.sampled_from([257, 300])),
            short_texts(),
        ),
        st.dictionaries(long_texts(), texts(), min_size=1, max_size=2),
        st.dictionaries(texts(), long_texts(), min_size=1, max_size=2),
        st.sampled_from([{"": ""}, {"": "value"}, {"\x00": "\x00"}, {"key": "a\x00b"}]),
    )


def _varint(value: int) -> bytes:
    value &= UINT64_MAX
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _wire_field(field: int, wire_type: int, payload: bytes, number: int) -> bytes:
    if wire_type == 0:
        return _key(field, 0) + _varint(number)
    if wire_type == 1:
        return _key(field, 1) + (payload + bytes(8))[:8]
    if wire_type == 2:
        return _key(field, 2) + _varint(len(payload)) + payload
    if wire_type == 5:
        return _key(field, 5) + (payload + bytes(4))[:4]
    # Group starts and ends (3, 4) and the undefined wire types (6, 7), with whatever follows.
    return _key(field, wire_type) + payload


_fields = st.one_of(st.integers(1, 8), st.integers(1, 2**29 - 1))


def _wire_fields() -> st.SearchStrategy[bytes]:
    """Well-framed protobuf fields with random numbers, wire types and payloads."""
    field = st.builds(
        _wire_field,
        _fields,
        st.sampled_from([0, 0, 1, 2, 2, 2, 5, 3, 4, 6, 7]),
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"RUB", b"\x00"]),
        ),
        st.one_of(st.integers(0, UINT64_MAX), st.sampled_from([0, 1, 2**63, UINT64_MAX, 2**31, 2**32])),
    )
    return st.builds(b"".join, st.lists(field, max_size=8))


def _nested(field: int, inner: bytes) -> bytes:
    return _key(field, 2) + _varint(len(inner)) + inner


def _deep_groups(field: int, depth: int) -> bytes:
    return _key(field, 3) * depth + _key(field, 4) * depth


def _truncated_length(field: int, claimed: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(claimed) + payload


def raw_requests() -> st.SearchStrategy[bytes]:
    """Bytes sent where a serialized request belongs: garbage, odd framings, invalid UTF-8, deep nesting."""
    wire = _wire_fields()
    return st.one_of(
        st.binary(max_size=1024),
        wire,
        st.builds(_nested, st.integers(1, 8), wire),
        st.builds(_nested, st.integers(1, 8), st.builds(_nested, st.integers(1, 8), wire)),
        st.builds(_deep_groups, st.integers(1, 8), st.integers(1, 300)),
        st.builds(
            _truncated_length,
            st.integers(1, 8),
            st.one_of(st.integers(1, 2**32), st.just(UINT64_MAX)),
            st.binary(max_size=8),
        ),
        st.sampled_from(
            [b"", b"\x00", b"\xff" * 16, b"\x80" * 11, b"\x0a\x02\xff\xfe", b"\x0a\x05\xc0\x80RUB"]
        ),
    )
