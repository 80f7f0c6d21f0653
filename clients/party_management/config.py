"""The reference PartyManagement server's JSON file (SPEC 1.3), read into frozen dataclasses.

Everything is checked when the file is loaded, so computing a cash flow never meets a surprise; a
problem is reported as one line naming the file and the field (`parties[0].shops[1].currency`).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn, TypeVar

INT64_MAX = 2**63 - 1

# The SPEC's example terms, as the JSON file spells them: the whole amount to the shop's payout
# account, and a 1% fee (rounded half away from zero) to the system's settlement account. The demo,
# the tests and the benchmarks start from these.
EXAMPLE_TERMS: tuple[dict[str, object], ...] = (
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
)

_CURRENCY = re.compile(r"[A-Z]{3}")

_Member = TypeVar("_Member", bound=enum.Enum)


class ConfigError(Exception):
    """The reference server cannot start as configured; the message is the one line to print."""


class AccountRef(enum.Enum):
    """An account a payout term moves money between: one of the shop's, or one of the system's."""

    MERCHANT_SETTLEMENT = "merchant.settlement"
    MERCHANT_GUARANTEE = "merchant.guarantee"
    MERCHANT_PAYOUT = "merchant.payout"
    SYSTEM_SETTLEMENT = "system.settlement"
    SYSTEM_SUBAGENT = "system.subagent"


class Rounding(enum.Enum):
    ROUND_HALF_AWAY_FROM_ZERO = "round_half_away_from_zero"
    ROUND_HALF_EVEN = "round_half_even"
    FLOOR = "floor"
    CEIL = "ceil"


@dataclass(frozen=True)
class ShareVolume:
    """`numerator / denominator` of the payout amount, rounded to whole minor units."""

    numerator: int
    denominator: int
    rounding: Rounding = Rounding.ROUND_HALF_AWAY_FROM_ZERO


@dataclass(frozen=True)
class FixedVolume:
    """A constant number of minor units, whatever the payout amount."""

    amount: int


Volume = ShareVolume | FixedVolume


@dataclass(frozen=True)
class PayoutTerm:
    source: AccountRef
    destination: AccountRef
    volume: Volume
    details: str = ""


@dataclass(frozen=True)
class ShopAccounts:
    settlement: int
    guarantee: int
    payout: int


@dataclass(frozen=True)
class Shop:
    shop_id: str
    currency: str
    accounts: ShopAccounts
    blocked: bool = False
    payout_tool_ids: tuple[str, ...] = ()
    default_payout_tool_id: str = ""
    # None: the party's terms apply. An empty tuple: this shop may not pay out at all.
    payout_terms: tuple[PayoutTerm, ...] | None = None


@dataclass(frozen=True)
class Party:
    party_id: str
    shops: Mapping[str, Shop]
    blocked: bool = False
    payout_terms: tuple[PayoutTerm, ...] | None = None


@dataclass(frozen=True)
class SystemAccounts:
    settlement: int
    subagent: int | None = None


@dataclass(frozen=True)
class Config:
    parties: Mapping[str, Party]
    system_accounts: Mapping[str, SystemAccounts]


def load(path: Path) -> Config:
    """Reads and checks the config file; raises ConfigError naming the file and the first problem."""
    try:
        try:
            text = path.read_bytes()
        except OSError as error:
            raise _Invalid("", f"cannot read it: {error.strerror or error}") from None
        try:
            document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except (ValueError, RecursionError) as error:
            raise _Invalid("", f"not valid JSON: {error}") from None
        return _config(document)
    except _Invalid as invalid:
        where = f"{invalid.where}: " if invalid.where else ""
        raise ConfigError(f"party-management config {path}: {where}{invalid.problem}") from None


class _Invalid(Exception):  # noqa: N818 - internal, becomes a ConfigError with the file name
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads would silently keep the last of two equal keys: a typo an operator never sees.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def _config(document: object) -> Config:
    top = _object(document, "", required={"parties"}, optional={"system_accounts"})
    system_accounts = {
        _currency(currency, f"system_accounts.{currency}"): _system_accounts(
            value, f"system_accounts.{currency}"
        )
        for currency, value in _mapping(top.get("system_accounts", {}), "system_accounts").items()
    }
    parties: dict[str, Party] = {}
    for index, value in enumerate(_list(top["parties"], "parties")):
        where = f"parties[{index}]"
        party = _party(value, where)
        if party.party_id in parties:
            raise _Invalid(f"{where}.party_id", f"duplicate party id {party.party_id!r}")
        parties[party.party_id] = party
    return Config(parties=MappingProxyType(parties), system_accounts=MappingProxyType(system_accounts))


def _system_accounts(value: object, where: str) -> SystemAccounts:
    fields = _object(value, where, required={"settlement"}, optional={"subagent"})
    subagent = fields.get("subagent")
    return SystemAccounts(
        settlement=_account_id(fields["settlement"], f"{where}.settlement"),
        subagent=None if subagent is None else _account_id(subagent, f"{where}.subagent"),
    )


def _party(value: object, where: str) -> Party:
    fields = _object(value, where, required={"party_id", "shops"}, optional={"blocked", "payout_terms"})
    shops: dict[str, Shop] = {}
    for index, shop_value in enumerate(_list(fields["shops"], f"{where}.shops")):
        shop_where = f"{where}.shops[{index}]"
        shop = _shop(shop_value, shop_where)
        if shop.shop_id in shops:
            raise _Invalid(f"{shop_where}.shop_id", f"duplicate shop id {shop.shop_id!r}")
        shops[shop.shop_id] = shop
    return Party(
        party_id=_id(fields["party_id"], f"{where}.party_id"),
        shops=MappingProxyType(shops),
        blocked=_bool(fields.get("blocked", False), f"{where}.blocked"),
        payout_terms=_optional_terms(fields, where),
    )


def _shop(value: object, where: str) -> Shop:
    fields = _object(
        value,
        where,
        required={"shop_id", "currency", "accounts"},
        optional={"blocked", "payout_tool_ids", "default_payout_tool_id", "payout_terms"},
    )
    tool_ids: list[str] = []
    for index, tool_value in enumerate(_list(fields.get("payout_tool_ids", []), f"{where}.payout_tool_ids")):
        tool_where = f"{where}.payout_tool_ids[{index}]"
        tool_id = _id(tool_value, tool_where)
        if tool_id in tool_ids:
            raise _Invalid(tool_where, f"duplicate payout tool id {tool_id!r}")
        tool_ids.append(tool_id)
    default_value = fields.get("default_payout_tool_id")
    default = "" if default_value in (None, "") else _id(default_value, f"{where}.default_payout_tool_id")
    if default and default not in tool_ids:
        raise _Invalid(f"{where}.default_payout_tool_id", f"{default!r} is not in payout_tool_ids")
    return Shop(
        shop_id=_id(fields["shop_id"], f"{where}.shop_id"),
        currency=_currency(fields["currency"], f"{where}.currency"),
        accounts=_shop_accounts(fields["accounts"], f"{where}.accounts"),
        blocked=_bool(fields.get("blocked", False), f"{where}.blocked"),
        payout_tool_ids=tuple(tool_ids),
        default_payout_tool_id=default,
        payout_terms=_optional_terms(fields, where),
    )


def _shop_accounts(value: object, where: str) -> ShopAccounts:
    fields = _object(value, where, required={"settlement", "guarantee", "payout"})
    return ShopAccounts(
        settlement=_account_id(fields["settlement"], f"{where}.settlement"),
        guarantee=_account_id(fields["guarantee"], f"{where}.guarantee"),
        payout=_account_id(fields["payout"], f"{where}.payout"),
    )


def _optional_terms(fields: Mapping[str, object], where: str) -> tuple[PayoutTerm, ...] | None:
    value = fields.get("payout_terms")
    if value is None:
        return None
    where = f"{where}.payout_terms"
    return tuple(_term(term, f"{where}[{index}]") for index, term in enumerate(_list(value, where)))


def _term(value: object, where: str) -> PayoutTerm:
    fields = _object(value, where, required={"source", "destination", "volume"}, optional={"details"})
    source = _account_ref(fields["source"], f"{where}.source")
    destination = _account_ref(fields["destination"], f"{where}.destination")
    if source is destination:
        raise _Invalid(f"{where}.destination", "must differ from source")
    return PayoutTerm(
        source=source,
        destination=destination,
        volume=_volume(fields["volume"], f"{where}.volume"),
        details=_str(fields.get("details", ""), f"{where}.details"),
    )


def _volume(value: object, where: str) -> Volume:
    fields = _object(value, where, optional={"share", "fixed", "rounding"})
    if ("share" in fields) == ("fixed" in fields):
        raise _Invalid(where, 'must have exactly one of "share" or "fixed"')
    if "fixed" in fields:
        if "rounding" in fields:
            raise _Invalid(f"{where}.rounding", 'applies only to a "share"')
        return FixedVolume(_int(fields["fixed"], f"{where}.fixed", minimum=0))
    parts = fields["share"]
    if not isinstance(parts, list) or len(parts) != 2:
        raise _Invalid(f"{where}.share", "must be [numerator, denominator]")
    return ShareVolume(
        numerator=_int(parts[0], f"{where}.share[0]", minimum=0),
        denominator=_int(parts[1], f"{where}.share[1]", minimum=1),
        rounding=_enum(
            Rounding, fields.get("rounding", Rounding.ROUND_HALF_AWAY_FROM_ZERO.value), f"{where}.rounding"
        ),
    )


def _account_ref(value: object, where: str) -> AccountRef:
    return _enum(AccountRef, value, where)


def _enum(kind: type[_Member], value: object, where: str) -> _Member:
    for member in kind:
        if member.value == value:
            return member
    raise _Invalid(where, "must be one of " + ", ".join(str(member.value) for member in kind))


# --- field readers: each checks one JSON value and names its place when it is wrong ---


def _object(
    value: object, where: str, *, required: Set[str] = frozenset(), optional: Set[str] = frozenset()
) -> dict[str, object]:
    fields = _mapping(value, where)
    for name in sorted(required):
        if name not in fields:
            raise _Invalid(_join(where, name), "is missing")
    for name in fields:
        if name not in required and name not in optional:
            raise _Invalid(_join(where, name), "unknown field")
    return fields


def _mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Invalid(where, "must be an object")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _Invalid(where, "must be a list")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(where, "must be a string")
    return value


def _id(value: object, where: str) -> str:
    text = _str(value, where)
    if not text:
        raise _Invalid(where, "must not be empty")
    return text


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(where, "must be true or false")
    return value


def _int(value: object, where: str, *, minimum: int) -> int:
    # bool is an int to Python, but `true` is never a number an operator meant.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(where, "must be an integer")
    if value < minimum:
        raise _Invalid(where, "must not be negative" if minimum == 0 else f"must be at least {minimum}")
    if value > INT64_MAX:
        raise _Invalid(where, f"must be at most {INT64_MAX}")
    return value


def _account_id(value: object, where: str) -> int:
    return _int(value, where, minimum=1)


def _currency(value: object, where: str) -> str:
    text = _str(value, where)
    if not _CURRENCY.fullmatch(text):
        raise _Invalid(where, "must be a currency code of three upper-case letters, e.g. RUB")
    return text


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


__all__ = [
    "INT64_MAX",
    "AccountRef",
    "Config",
    "ConfigError",
    "FixedVolume",
    "Party",
    "PayoutTerm",
    "Rounding",
    "ShareVolume",
    "Shop",
    "ShopAccounts",
    "SystemAccounts",
    "Volume",
    "load",
]
