"""Payout terms applied to a payout request: the reference server's cash-flow computation, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from clients.party_management.config import (
    INT64_MAX,
    AccountRef,
    Config,
    FixedVolume,
    Party,
    PayoutTerm,
    Rounding,
    Shop,
    SystemAccounts,
)
from payout_manager.errors import Code, Reason
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting

_ACCOUNT_TYPES: dict[AccountRef, AccountType] = {
    AccountRef.MERCHANT_SETTLEMENT: AccountType.MERCHANT_SETTLEMENT,
    AccountRef.MERCHANT_GUARANTEE: AccountType.MERCHANT_GUARANTEE,
    AccountRef.MERCHANT_PAYOUT: AccountType.MERCHANT_PAYOUT,
    AccountRef.SYSTEM_SETTLEMENT: AccountType.SYSTEM_SETTLEMENT,
    AccountRef.SYSTEM_SUBAGENT: AccountType.SYSTEM_SUBAGENT,
}


@dataclass
class TermsRefusal(Exception):  # noqa: N818 - PartyManagement's refusal, as the payout manager's Refusal
    """PartyManagement refuses the request: the status code and ErrorInfo reason it answers with."""

    code: Code
    reason: Reason
    message: str

    def __post_init__(self) -> None:
        super().__init__(self.message)


def share(amount: int, numerator: int, denominator: int, rounding: Rounding) -> int:
    """`amount * numerator / denominator` rounded to a whole number, exactly (no floats)."""
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, not {denominator}")
    # divmod floors, so the remainder is in [0, denominator) whatever the sign of the amount.
    quotient, remainder = divmod(amount * numerator, denominator)
    if remainder == 0 or rounding is Rounding.FLOOR:
        return quotient
    if rounding is Rounding.CEIL:
        return quotient + 1
    twice = 2 * remainder
    if twice < denominator:
        return quotient
    if twice > denominator:
        return quotient + 1
    # Exactly half way between quotient and quotient + 1.
    if rounding is Rounding.ROUND_HALF_EVEN:
        return quotient if quotient % 2 == 0 else quotient + 1
    return quotient + 1 if quotient >= 0 else quotient


def find_shop(config: Config, party_id: str, shop_id: str) -> tuple[Party, Shop]:
    """The party and its shop; NOT_FOUND with PARTY_NOT_FOUND or SHOP_NOT_FOUND when either is unknown."""
    party = config.parties.get(party_id)
    if party is None:
        raise TermsRefusal(Code.NOT_FOUND, Reason.PARTY_NOT_FOUND, f"party {party_id!r} not found")
    shop = party.shops.get(shop_id)
    if shop is None:
        raise TermsRefusal(
            Code.NOT_FOUND, Reason.SHOP_NOT_FOUND, f"shop {shop_id!r} of party {party_id!r} not found"
        )
    return party, shop


def compute_postings(
    config: Config, party_id: str, shop_id: str, amount: int, currency: str, payout_tool_id: str
) -> tuple[tuple[CashFlowPosting, ...], str]:
    """The payout's cash-flow postings and the payout tool they are for (the shop's default if empty).

    Raises TermsRefusal for every request the terms do not allow. Postings that round to zero are
    left out.
    """
    if amount <= 0:
        raise TermsRefusal(
            Code.INVALID_ARGUMENT, Reason.INVALID_REQUEST, f"cash.amount must be positive, not {amount}"
        )
    party, shop = find_shop(config, party_id, shop_id)
    tool_id = _payout_tool(shop, payout_tool_id)
    if party.blocked:
        raise TermsRefusal(Code.FAILED_PRECONDITION, Reason.PARTY_BLOCKED, f"party {party_id!r} is blocked")
    if shop.blocked:
        raise TermsRefusal(Code.FAILED_PRECONDITION, Reason.SHOP_BLOCKED, f"shop {shop_id!r} is blocked")
    if currency != shop.currency:
        raise TermsRefusal(
            Code.INVALID_ARGUMENT,
            Reason.CURRENCY_MISMATCH,
            f"cash.currency {currency!r} is not the shop's currency {shop.currency!r}",
        )
    terms = shop.payout_terms if shop.payout_terms is not None else party.payout_terms
    if not terms:
        raise _not_permitted(f"shop {shop_id!r} of party {party_id!r} has no payout terms")
    system = config.system_accounts.get(currency)
    if system is None:
        raise _not_permitted(f"there are no system accounts for {currency}")

    postings = []
    for term in terms:
        # Accounts first: a missing system account refuses every amount, not only those it gets money in.
        source = _account(term.source, shop, system)
        destination = _account(term.destination, shop, system)
        volume = _volume(term, amount)
        if volume > 0:
            postings.append(CashFlowPosting(source, destination, volume, currency, term.details))
    return tuple(postings), tool_id


def _payout_tool(shop: Shop, payout_tool_id: str) -> str:
    if payout_tool_id:
        if payout_tool_id not in shop.payout_tool_ids:
            raise TermsRefusal(
                Code.NOT_FOUND,
                Reason.PAYOUT_TOOL_NOT_FOUND,
                f"payout tool {payout_tool_id!r} not found for shop {shop.shop_id!r}",
            )
        return payout_tool_id
    if not shop.default_payout_tool_id:
        raise TermsRefusal(
            Code.NOT_FOUND,
            Reason.PAYOUT_TOOL_NOT_FOUND,
            f"no payout tool given and shop {shop.shop_id!r} has no default payout tool",
        )
    return shop.default_payout_tool_id


def _volume(term: PayoutTerm, amount: int) -> int:
    volume = term.volume
    if isinstance(volume, FixedVolume):
        return volume.amount
    result = share(amount, volume.numerator, volume.denominator, volume.rounding)
    if result > INT64_MAX:
        raise TermsRefusal(
            Code.INVALID_ARGUMENT,
            Reason.AMOUNT_OUT_OF_RANGE,
            f"the {term.details or 'posting'} volume {volume.numerator}/{volume.denominator} of {amount} "
            f"does not fit in int64",
        )
    return result


def _account(ref: AccountRef, shop: Shop, system: SystemAccounts) -> CashFlowAccount:
    account_ids: dict[AccountRef, int | None] = {
        AccountRef.MERCHANT_SETTLEMENT: shop.accounts.settlement,
        AccountRef.MERCHANT_GUARANTEE: shop.accounts.guarantee,
        AccountRef.MERCHANT_PAYOUT: shop.accounts.payout,
        AccountRef.SYSTEM_SETTLEMENT: system.settlement,
        AccountRef.SYSTEM_SUBAGENT: system.subagent,
    }
    account_id = account_ids[ref]
    if account_id is None:
        raise _not_permitted(f"there is no {ref.value} account for {shop.currency}")
    return CashFlowAccount(type=_ACCOUNT_TYPES[ref], account_id=account_id)


def _not_permitted(message: str) -> TermsRefusal:
    return TermsRefusal(Code.FAILED_PRECONDITION, Reason.PAYOUTS_NOT_PERMITTED, message)
