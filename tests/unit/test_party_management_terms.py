"""The reference PartyManagement's terms: exact shares, the config file's checks, every refusal."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.party_management import config as config_file
from clients.party_management.config import INT64_MAX, Config, ConfigError, Rounding
from clients.party_management.terms import TermsRefusal, compute_postings, share
from payout_manager.errors import Code, Reason
from payout_manager.payouts.cash_flow import (
    AccountType,
    CashFlowAccount,
    CashFlowPosting,
    PayoutSums,
    sum_payout,
)

HALF_AWAY = Rounding.ROUND_HALF_AWAY_FROM_ZERO
HALF_EVEN = Rounding.ROUND_HALF_EVEN
FLOOR = Rounding.FLOOR
CEIL = Rounding.CEIL

# The SPEC 1.3 example, extended with the shops and parties the refusal tests need.
SPEC_CONFIG: dict[str, Any] = {
    "system_accounts": {"RUB": {"settlement": 10, "subagent": 11}, "EUR": {"settlement": 20}},
    "parties": [
        {
            "party_id": "party-1",
            "blocked": False,
            "payout_terms": [
                {
                    "source": "merchant.settlement",
                    "destination": "merchant.payout",
                    "volume": {"share": [1, 1]},
                    "details": "payout",
                },
                {
                    "source": "merchant.settlement",
                    "destination": "system.settlement",
                    "volume": {"share": [1, 100], "rounding": "round_half_away_from_zero"},
                    "details": "fee",
                },
                {
                    "source": "merchant.payout",
                    "destination": "system.settlement",
                    "volume": {"fixed": 30},
                    "details": "fixed fee",
                },
            ],
            "shops": [
                {
                    "shop_id": "shop-1",
                    "currency": "RUB",
                    "blocked": False,
                    "accounts": {"settlement": 1, "guarantee": 2, "payout": 3},
                    "payout_tool_ids": ["tool-1", "tool-2"],
                    "default_payout_tool_id": "tool-1",
                },
                {
                    "shop_id": "shop-own-terms",
                    "currency": "RUB",
                    "accounts": {"settlement": 4, "guarantee": 5, "payout": 6},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                    "payout_terms": [
                        {
                            "source": "merchant.settlement",
                            "destination": "merchant.payout",
                            "volume": {"share": [3, 4], "rounding": "floor"},
                        },
                        {
                            "source": "merchant.settlement",
                            "destination": "system.subagent",
                            "volume": {"share": [1, 4], "rounding": "ceil"},
                        },
                        {
                            "source": "merchant.guarantee",
                            "destination": "merchant.settlement",
                            "volume": {"fixed": 0},
                        },
                    ],
                },
                {
                    "shop_id": "shop-no-default-tool",
                    "currency": "RUB",
                    "accounts": {"settlement": 7, "guarantee": 8, "payout": 9},
                    "payout_tool_ids": ["tool-1"],
                },
                {
                    "shop_id": "shop-blocked",
                    "currency": "RUB",
                    "blocked": True,
                    "accounts": {"settlement": 12, "guarantee": 13, "payout": 14},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                },
                {
                    "shop_id": "shop-no-payouts",
                    "currency": "RUB",
                    "accounts": {"settlement": 15, "guarantee": 16, "payout": 17},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                    "payout_terms": [],
                },
                {
                    "shop_id": "shop-usd",
                    "currency": "USD",
                    "accounts": {"settlement": 18, "guarantee": 19, "payout": 21},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                },
                {
                    "shop_id": "shop-eur-subagent",
                    "currency": "EUR",
                    "accounts": {"settlement": 22, "guarantee": 23, "payout": 24},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                    "payout_terms": [
                        {
                            "source": "merchant.settlement",
                            "destination": "system.subagent",
                            "volume": {"share": [1, 100]},
                        }
                    ],
                },
                {
                    "shop_id": "shop-double",
                    "currency": "RUB",
                    "accounts": {"settlement": 25, "guarantee": 26, "payout": 27},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                    "payout_terms": [
                        {
                            "source": "merchant.settlement",
                            "destination": "merchant.payout",
                            "volume": {"share": [2, 1]},
                        }
                    ],
                },
            ],
        },
        {
            "party_id": "party-blocked",
            "blocked": True,
            "payout_terms": [
                {
                    "source": "merchant.settlement",
                    "destination": "merchant.payout",
                    "volume": {"share": [1, 1]},
                }
            ],
            "shops": [
                {
                    "shop_id": "shop-1",
                    "currency": "RUB",
                    "accounts": {"settlement": 31, "guarantee": 32, "payout": 33},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                }
            ],
        },
        {
            "party_id": "party-no-terms",
            "shops": [
                {
                    "shop_id": "shop-1",
                    "currency": "RUB",
                    "accounts": {"settlement": 41, "guarantee": 42, "payout": 43},
                    "payout_tool_ids": ["tool-1"],
                    "default_payout_tool_id": "tool-1",
                }
            ],
        },
    ],
}


def write_config(directory: Path, document: object, name: str = "party-management.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def spec_config(tmp_path: Path) -> Config:
    return config_file.load(write_config(tmp_path, SPEC_CONFIG))


def settlement(account_id: int) -> CashFlowAccount:
    return CashFlowAccount(AccountType.MERCHANT_SETTLEMENT, account_id)


def payout(account_id: int) -> CashFlowAccount:
    return CashFlowAccount(AccountType.MERCHANT_PAYOUT, account_id)


def system(account_id: int) -> CashFlowAccount:
    return CashFlowAccount(AccountType.SYSTEM_SETTLEMENT, account_id)


# --- share: exact rounding ---


@pytest.mark.parametrize(
    ("amount", "numerator", "denominator", "expected"),
    [
        # amount, share, then the result under half-away, half-even, floor, ceil
        (250, 1, 100, (3, 2, 2, 3)),
        (350, 1, 100, (4, 4, 3, 4)),
        (150, 1, 100, (2, 2, 1, 2)),
        (50, 1, 100, (1, 0, 0, 1)),
        (249, 1, 100, (2, 2, 2, 3)),
        (251, 1, 100, (3, 3, 2, 3)),
        (200, 1, 100, (2, 2, 2, 2)),
        (1, 1, 3, (0, 0, 0, 1)),
        (2, 1, 3, (1, 1, 0, 1)),
        (10, 1, 100, (0, 0, 0, 1)),
        (10000, 3, 4, (7500, 7500, 7500, 7500)),
        (5, 1, 2, (3, 2, 2, 3)),
        (7, 1, 2, (4, 4, 3, 4)),
        (-250, 1, 100, (-3, -2, -3, -2)),
        (-50, 1, 100, (-1, 0, -1, 0)),
        (INT64_MAX, 1, 1, (INT64_MAX,) * 4),
    ],
)
def test_share_rounds_exactly_in_every_mode(
    amount: int, numerator: int, denominator: int, expected: tuple[int, int, int, int]
) -> None:
    results = tuple(
        share(amount, numerator, denominator, mode) for mode in (HALF_AWAY, HALF_EVEN, FLOOR, CEIL)
    )
    assert results == expected


def _exact(amount: int, numerator: int, denominator: int, rounding: Rounding) -> int:
    value = Fraction(amount * numerator, denominator)
    if rounding is FLOOR:
        return math.floor(value)
    if rounding is CEIL:
        return math.ceil(value)
    if rounding is HALF_EVEN:
        return round(value)  # Fraction rounds half to even, exactly
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


@given(
    amount=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    numerator=st.integers(min_value=0, max_value=10**6),
    denominator=st.integers(min_value=1, max_value=10**6),
    rounding=st.sampled_from(Rounding),
)
def test_share_agrees_with_exact_fractions(
    amount: int, numerator: int, denominator: int, rounding: Rounding
) -> None:
    assert share(amount, numerator, denominator, rounding) == _exact(amount, numerator, denominator, rounding)


def test_share_refuses_a_zero_denominator() -> None:
    with pytest.raises(ValueError, match="denominator"):
        share(100, 1, 0, FLOOR)


# --- compute_postings: the SPEC example and the terms' rules ---


def test_spec_example_gives_payout_fee_and_fixed_fee(spec_config: Config) -> None:
    postings, tool_id = compute_postings(spec_config, "party-1", "shop-1", 10000, "RUB", "")

    assert tool_id == "tool-1"
    assert postings == (
        CashFlowPosting(settlement(1), payout(3), 10000, "RUB", "payout"),
        CashFlowPosting(settlement(1), system(10), 100, "RUB", "fee"),
        CashFlowPosting(payout(3), system(10), 30, "RUB", "fixed fee"),
    )
    assert sum_payout(postings) == PayoutSums(amount=9970, fee=130)


def test_fee_share_rounds_half_away_from_zero_by_default(spec_config: Config) -> None:
    postings, _ = compute_postings(spec_config, "party-1", "shop-1", 250, "RUB", "tool-2")

    assert [posting.amount for posting in postings] == [250, 3, 30]


def test_postings_that_round_to_zero_are_left_out(spec_config: Config) -> None:
    postings, _ = compute_postings(spec_config, "party-1", "shop-1", 10, "RUB", "")

    assert [(posting.details, posting.amount) for posting in postings] == [("payout", 10), ("fixed fee", 30)]


def test_shop_terms_override_the_partys(spec_config: Config) -> None:
    postings, _ = compute_postings(spec_config, "party-1", "shop-own-terms", 10001, "RUB", "")

    assert postings == (
        CashFlowPosting(settlement(4), payout(6), 7500, "RUB"),
        CashFlowPosting(settlement(4), CashFlowAccount(AccountType.SYSTEM_SUBAGENT, 11), 2501, "RUB"),
    )


def test_explicit_payout_tool_is_kept(spec_config: Config) -> None:
    _, tool_id = compute_postings(spec_config, "party-1", "shop-1", 100, "RUB", "tool-2")

    assert tool_id == "tool-2"


@pytest.mark.parametrize(
    ("party_id", "shop_id", "amount", "currency", "tool_id", "code", "reason"),
    [
        ("party-9", "shop-1", 100, "RUB", "", Code.NOT_FOUND, Reason.PARTY_NOT_FOUND),
        ("", "shop-1", 100, "RUB", "", Code.NOT_FOUND, Reason.PARTY_NOT_FOUND),
        ("party-1", "shop-9", 100, "RUB", "", Code.NOT_FOUND, Reason.SHOP_NOT_FOUND),
        ("party-1", "shop-1", 100, "RUB", "tool-9", Code.NOT_FOUND, Reason.PAYOUT_TOOL_NOT_FOUND),
        ("party-1", "shop-no-default-tool", 100, "RUB", "", Code.NOT_FOUND, Reason.PAYOUT_TOOL_NOT_FOUND),
        ("party-blocked", "shop-1", 100, "RUB", "", Code.FAILED_PRECONDITION, Reason.PARTY_BLOCKED),
        ("party-1", "shop-blocked", 100, "RUB", "", Code.FAILED_PRECONDITION, Reason.SHOP_BLOCKED),
        ("party-no-terms", "shop-1", 100, "RUB", "", Code.FAILED_PRECONDITION, Reason.PAYOUTS_NOT_PERMITTED),
        (
            "party-1",
            "shop-no-payouts",
            100,
            "RUB",
            "",
            Code.FAILED_PRECONDITION,
            Reason.PAYOUTS_NOT_PERMITTED,
        ),
        ("party-1", "shop-usd", 100, "USD", "", Code.FAILED_PRECONDITION, Reason.PAYOUTS_NOT_PERMITTED),
        (
            "party-1",
            "shop-eur-subagent",
            100,
            "EUR",
            "",
            Code.FAILED_PRECONDITION,
            Reason.PAYOUTS_NOT_PERMITTED,
        ),
        ("party-1", "shop-1", 100, "USD", "", Code.INVALID_ARGUMENT, Reason.CURRENCY_MISMATCH),
        ("party-1", "shop-1", 100, "rub", "", Code.INVALID_ARGUMENT, Reason.CURRENCY_MISMATCH),
        ("party-1", "shop-1", 0, "RUB", "", Code.INVALID_ARGUMENT, Reason.INVALID_REQUEST),
        ("party-1", "shop-1", -5, "RUB", "", Code.INVALID_ARGUMENT, Reason.INVALID_REQUEST),
        ("party-1", "shop-double", INT64_MAX, "RUB", "", Code.INVALID_ARGUMENT, Reason.AMOUNT_OUT_OF_RANGE),
    ],
)
def test_every_refusal_has_its_code_and_reason(
    spec_config: Config,
    party_id: str,
    shop_id: str,
    amount: int,
    currency: str,
    tool_id: str,
    code: Code,
    reason: Reason,
) -> None:
    with pytest.raises(TermsRefusal) as refused:
        compute_postings(spec_config, party_id, shop_id, amount, currency, tool_id)

    assert (refused.value.code, refused.value.reason) == (code, reason)
    assert refused.value.message


# --- the config file: one line naming the file and the field ---


def _mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = copy.deepcopy(SPEC_CONFIG)
    change(document)
    return document


def _shop(document: dict[str, Any]) -> dict[str, Any]:
    shop: dict[str, Any] = document["parties"][0]["shops"][0]
    return shop


def _term(document: dict[str, Any]) -> dict[str, Any]:
    term: dict[str, Any] = document["parties"][0]["payout_terms"][1]
    return term


CONFIG_ERRORS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    (
        "settlement-not-an-integer",
        lambda d: _shop(d)["accounts"].update(settlement="1"),
        "parties[0].shops[0].accounts.settlement: must be an integer",
    ),
    (
        "settlement-a-boolean",
        lambda d: _shop(d)["accounts"].update(settlement=True),
        "parties[0].shops[0].accounts.settlement: must be an integer",
    ),
    (
        "settlement-a-float",
        lambda d: _shop(d)["accounts"].update(settlement=1.5),
        "parties[0].shops[0].accounts.settlement: must be an integer",
    ),
    (
        "account-id-zero",
        lambda d: _shop(d)["accounts"].update(payout=0),
        "parties[0].shops[0].accounts.payout: must be at least 1",
    ),
    (
        "account-id-too-big",
        lambda d: _shop(d)["accounts"].update(payout=2**63),
        f"parties[0].shops[0].accounts.payout: must be at most {INT64_MAX}",
    ),
    (
        "guarantee-missing",
        lambda d: _shop(d)["accounts"].pop("guarantee"),
        "parties[0].shops[0].accounts.guarantee: is missing",
    ),
    ("shop-id-missing", lambda d: _shop(d).pop("shop_id"), "parties[0].shops[0].shop_id: is missing"),
    (
        "shop-id-empty",
        lambda d: _shop(d).update(shop_id=""),
        "parties[0].shops[0].shop_id: must not be empty",
    ),
    (
        "party-id-a-number",
        lambda d: d["parties"][1].update(party_id=7),
        "parties[1].party_id: must be a string",
    ),
    ("parties-missing", lambda d: d.pop("parties"), "parties: is missing"),
    ("parties-not-a-list", lambda d: d.update(parties={}), "parties: must be a list"),
    ("party-not-an-object", lambda d: d["parties"].append("party-3"), "parties[3]: must be an object"),
    (
        "unknown-field",
        lambda d: _shop(d).update(payout_term=[]),
        "parties[0].shops[0].payout_term: unknown field",
    ),
    (
        "blocked-a-string",
        lambda d: d["parties"][0].update(blocked="no"),
        "parties[0].blocked: must be true or false",
    ),
    (
        "currency-lower-case",
        lambda d: _shop(d).update(currency="rub"),
        "parties[0].shops[0].currency: must be a currency code of three upper-case letters, e.g. RUB",
    ),
    (
        "system-accounts-currency",
        lambda d: d["system_accounts"].update(rubles={"settlement": 1}),
        "system_accounts.rubles: must be a currency code of three upper-case letters, e.g. RUB",
    ),
    (
        "system-settlement-missing",
        lambda d: d["system_accounts"]["RUB"].pop("settlement"),
        "system_accounts.RUB.settlement: is missing",
    ),
    (
        "unknown-account",
        lambda d: _term(d).update(source="merchant.wallet"),
        "parties[0].payout_terms[1].source: must be one of merchant.settlement, merchant.guarantee, "
        "merchant.payout, system.settlement, system.subagent",
    ),
    (
        "same-source-and-destination",
        lambda d: _term(d).update(destination="merchant.settlement"),
        "parties[0].payout_terms[1].destination: must differ from source",
    ),
    (
        "share-and-fixed",
        lambda d: _term(d)["volume"].update(fixed=5),
        'parties[0].payout_terms[1].volume: must have exactly one of "share" or "fixed"',
    ),
    (
        "neither-share-nor-fixed",
        lambda d: _term(d).update(volume={}),
        'parties[0].payout_terms[1].volume: must have exactly one of "share" or "fixed"',
    ),
    (
        "share-not-a-pair",
        lambda d: _term(d)["volume"].update(share=[1]),
        "parties[0].payout_terms[1].volume.share: must be [numerator, denominator]",
    ),
    (
        "share-denominator-zero",
        lambda d: _term(d)["volume"].update(share=[1, 0]),
        "parties[0].payout_terms[1].volume.share[1]: must be at least 1",
    ),
    (
        "share-numerator-negative",
        lambda d: _term(d)["volume"].update(share=[-1, 100]),
        "parties[0].payout_terms[1].volume.share[0]: must not be negative",
    ),
    (
        "share-a-float",
        lambda d: _term(d)["volume"].update(share=[0.01, 1]),
        "parties[0].payout_terms[1].volume.share[0]: must be an integer",
    ),
    (
        "unknown-rounding",
        lambda d: _term(d)["volume"].update(rounding="half_up"),
        "parties[0].payout_terms[1].volume.rounding: must be one of round_half_away_from_zero, "
        "round_half_even, floor, ceil",
    ),
    (
        "rounding-of-fixed",
        lambda d: _term(d).update(volume={"fixed": 5, "rounding": "floor"}),
        'parties[0].payout_terms[1].volume.rounding: applies only to a "share"',
    ),
    (
        "fixed-negative",
        lambda d: _term(d).update(volume={"fixed": -5}),
        "parties[0].payout_terms[1].volume.fixed: must not be negative",
    ),
    (
        "duplicate-party",
        lambda d: d["parties"][2].update(party_id="party-1"),
        "parties[2].party_id: duplicate party id 'party-1'",
    ),
    (
        "duplicate-shop",
        lambda d: d["parties"][0]["shops"][1].update(shop_id="shop-1"),
        "parties[0].shops[1].shop_id: duplicate shop id 'shop-1'",
    ),
    (
        "duplicate-payout-tool",
        lambda d: _shop(d).update(payout_tool_ids=["tool-1", "tool-1"]),
        "parties[0].shops[0].payout_tool_ids[1]: duplicate payout tool id 'tool-1'",
    ),
    (
        "default-tool-not-among-tools",
        lambda d: _shop(d).update(default_payout_tool_id="tool-9"),
        "parties[0].shops[0].default_payout_tool_id: 'tool-9' is not in payout_tool_ids",
    ),
    (
        "shop-terms-not-a-list",
        lambda d: _shop(d).update(payout_terms={"share": [1, 1]}),
        "parties[0].shops[0].payout_terms: must be a list",
    ),
]


@pytest.mark.parametrize(
    ("change", "problem"),
    [pytest.param(change, problem, id=name) for name, change, problem in CONFIG_ERRORS],
)
def test_config_error_is_one_line_naming_the_file_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    path = write_config(tmp_path, _mutated(change))

    with pytest.raises(ConfigError) as error:
        config_file.load(path)

    assert str(error.value) == f"party-management config {path}: {problem}"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"[]", "must be an object"),
        (b'{"parties": [], "parties": []}', "not valid JSON: duplicate key 'parties'"),
        (b'{"parties": [NaN]}', "not valid JSON: NaN is not a number"),
        (
            b'{"parties": "\xff"}',
            "not valid JSON: 'utf-8' codec can't decode byte 0xff in position 13: invalid start byte",
        ),
    ],
)
def test_malformed_json_is_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as error:
        config_file.load(path)

    assert str(error.value) == f"party-management config {path}: {problem}"


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"

    with pytest.raises(ConfigError) as error:
        config_file.load(path)

    assert str(error.value) == f"party-management config {path}: cannot read it: No such file or directory"


def test_spec_example_config_loads_with_its_defaults(spec_config: Config) -> None:
    party = spec_config.parties["party-1"]
    shop = party.shops["shop-no-default-tool"]

    assert not shop.blocked
    assert shop.default_payout_tool_id == ""
    assert shop.payout_terms is None
    assert party.payout_terms is not None
    assert party.payout_terms[0].volume == config_file.ShareVolume(1, 1, HALF_AWAY)
    assert spec_config.system_accounts["EUR"].subagent is None
