"""Cash-flow postings as PartyManagement computes them, and how a payout reads them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class AccountType(enum.Enum):
    """The kind of account a cash-flow posting moves money between (names as in the proto)."""

    MERCHANT_SETTLEMENT = "MERCHANT_SETTLEMENT"
    MERCHANT_GUARANTEE = "MERCHANT_GUARANTEE"
    MERCHANT_PAYOUT = "MERCHANT_PAYOUT"
    SYSTEM_SETTLEMENT = "SYSTEM_SETTLEMENT"
    SYSTEM_SUBAGENT = "SYSTEM_SUBAGENT"
    EXTERNAL_INCOME = "EXTERNAL_INCOME"
    EXTERNAL_OUTCOME = "EXTERNAL_OUTCOME"
    PROVIDER_SETTLEMENT = "PROVIDER_SETTLEMENT"


@dataclass(frozen=True)
class CashFlowAccount:
    type: AccountType
    account_id: int


@dataclass(frozen=True)
class CashFlowPosting:
    """One movement of `amount` minor units of `currency` from `source` to `destination`."""

    source: CashFlowAccount
    destination: CashFlowAccount
    amount: int
    currency: str
    details: str = ""

    def reversed(self) -> CashFlowPosting:
        return CashFlowPosting(self.destination, self.source, self.amount, self.currency, self.details)


@dataclass(frozen=True)
class PayoutSums:
    """What a cash flow means for the merchant: the amount paid out and the fee."""

    amount: int
    fee: int


_PAYOUT_AMOUNT = (AccountType.MERCHANT_SETTLEMENT, AccountType.MERCHANT_PAYOUT)
_PAYOUT_FIXED_FEE = {
    (AccountType.MERCHANT_PAYOUT, AccountType.SYSTEM_SETTLEMENT),
    (AccountType.MERCHANT_PAYOUT, AccountType.MERCHANT_SETTLEMENT),
}
_FEE = (AccountType.MERCHANT_SETTLEMENT, AccountType.SYSTEM_SETTLEMENT)


def sum_payout(postings: Sequence[CashFlowPosting]) -> PayoutSums:
    """Classifies postings by (source type, destination type) and sums them (SPEC 1.1, step 4).

    amount = PAYOUT_AMOUNT - PAYOUT_FIXED_FEE, fee = FEE + PAYOUT_FIXED_FEE; postings of any other
    kind are held like the rest but count towards neither.
    """
    payout_amount = fixed_fee = fee = 0
    for posting in postings:
        kind = (posting.source.type, posting.destination.type)
        if kind == _PAYOUT_AMOUNT:
            payout_amount += posting.amount
        elif kind in _PAYOUT_FIXED_FEE:
            fixed_fee += posting.amount
        elif kind == _FEE:
            fee += posting.amount
    return PayoutSums(amount=payout_amount - fixed_fee, fee=fee + fixed_fee)


def settlement_accounts(postings: Sequence[CashFlowPosting]) -> list[int]:
    """The merchant settlement accounts a cash flow touches: the ones whose funds are checked."""
    ids = {
        account.account_id
        for posting in postings
        for account in (posting.source, posting.destination)
        if account.type is AccountType.MERCHANT_SETTLEMENT
    }
    return sorted(ids)
