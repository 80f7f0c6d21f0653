"""The ledger's rules, without I/O: what a posting is, and what hold, commit and rollback do.

An account has an own (committed) amount and, for every plan on hold, that plan's net effect on
it. A net debit lowers `min_available`, a net credit raises `max_available`; commit moves the net
into `own_amount`, rollback drops it (the procedure pm_finish_plan of migration 0005 does both).
Balances are whole minor units that must fit in int64.
"""

from __future__ import annotations

import enum
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from payout_manager.errors import FieldViolation, Reason, Refusal, invalid

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
CURRENCY = re.compile(r"[A-Z]{3}")
MAX_PLAN_ID_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 1024
MAX_POSTINGS = 100


class PlanStatus(enum.Enum):
    HOLD = "HOLD"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


@dataclass(frozen=True)
class Posting:
    from_id: int
    to_id: int
    amount: int
    currency: str
    description: str = ""


@dataclass(frozen=True)
class Batch:
    id: int
    postings: tuple[Posting, ...]


@dataclass(frozen=True)
class Plan:
    id: str
    status: PlanStatus
    batches: tuple[Batch, ...]


@dataclass(frozen=True)
class Balance:
    """An account as the ledger keeps it: own amount and the sums of held debits and credits."""

    account_id: int
    currency: str
    own_amount: int
    held_debit: int
    held_credit: int

    @property
    def min_available_amount(self) -> int:
        return self.own_amount - self.held_debit

    @property
    def max_available_amount(self) -> int:
        return self.own_amount + self.held_credit


@dataclass(frozen=True)
class Account:
    id: int
    currency: str
    description: str
    creation_time: datetime
    own_amount: int
    min_available_amount: int
    max_available_amount: int


def balance_of(account: Account) -> Balance:
    """The ledger's balance behind an account's amounts: what it holds as debits and as credits."""
    return Balance(
        account.id,
        account.currency,
        account.own_amount,
        account.own_amount - account.min_available_amount,
        account.max_available_amount - account.own_amount,
    )


def text_violations(field: str, value: str, *, max_length: int, required: bool) -> list[FieldViolation]:
    """The problems of one text field: emptiness, length and NUL characters (PostgreSQL refuses NUL)."""
    if required and not value:
        return [FieldViolation(field, "must not be empty")]
    if len(value) > max_length:
        return [FieldViolation(field, f"must be at most {max_length} characters")]
    if "\x00" in value:
        return [FieldViolation(field, "must not contain NUL characters")]
    return []


def currency_violations(field: str, value: str) -> list[FieldViolation]:
    if not CURRENCY.fullmatch(value):
        return [FieldViolation(field, "must be an ISO 4217 code of three upper-case letters")]
    return []


def check_batch(plan_id: str, batch: Batch) -> None:
    """Refuses a batch that no ledger state could accept, before any I/O."""
    violations = text_violations("plan_id", plan_id, max_length=MAX_PLAN_ID_LENGTH, required=True)
    if not batch.postings:
        violations.append(FieldViolation("batch.postings", "must hold at least one posting"))
    if len(batch.postings) > MAX_POSTINGS:
        violations.append(FieldViolation("batch.postings", f"must hold at most {MAX_POSTINGS} postings"))
    for index, posting in enumerate(batch.postings[:MAX_POSTINGS]):
        field = f"batch.postings[{index}]"
        if posting.from_id == posting.to_id:
            violations.append(FieldViolation(f"{field}.to_id", "must differ from from_id"))
        if posting.amount < 0:
            violations.append(FieldViolation(f"{field}.amount", "must not be negative"))
        violations += currency_violations(f"{field}.currency", posting.currency)
        violations += text_violations(
            f"{field}.description", posting.description, max_length=MAX_DESCRIPTION_LENGTH, required=False
        )
    if violations:
        raise invalid(violations)


def net_by_account(postings: Iterable[Posting]) -> dict[int, int]:
    """Each account's net effect of the postings: credits positive, debits negative."""
    net: dict[int, int] = defaultdict(int)
    for posting in postings:
        net[posting.from_id] -= posting.amount
        net[posting.to_id] += posting.amount
    return dict(net)


def _in_int64(balance: Balance) -> Balance:
    for value in (
        balance.own_amount,
        balance.held_debit,
        balance.held_credit,
        balance.min_available_amount,
        balance.max_available_amount,
    ):
        if not INT64_MIN <= value <= INT64_MAX:
            raise Refusal(
                Reason.AMOUNT_OUT_OF_RANGE,
                f"account {balance.account_id} would leave the int64 range of minor units",
                (FieldViolation("batch.postings", f"would take account {balance.account_id} out of int64"),),
            )
    return balance


def hold(balance: Balance, net_before: int, net_after: int) -> Balance:
    """The balance after a plan's net on this account moved from `net_before` to `net_after`."""
    return _in_int64(
        replace(
            balance,
            held_debit=balance.held_debit - max(0, -net_before) + max(0, -net_after),
            held_credit=balance.held_credit - max(0, net_before) + max(0, net_after),
        )
    )


def combined(account_id: int, currency: str, parts: Iterable[Balance]) -> Balance:
    """One account's balance from the balances of its slots (parts of it), in int64 like each part."""
    parts = list(parts)
    return _in_int64(
        Balance(
            account_id,
            currency,
            sum(p.own_amount for p in parts),
            sum(p.held_debit for p in parts),
            sum(p.held_credit for p in parts),
        )
    )


def check_accounts(postings: Sequence[Posting], balances: Mapping[int, Balance]) -> None:
    """Refuses postings naming unknown accounts or moving another currency than the account's."""
    for index, posting in enumerate(postings):
        for account_id in (posting.from_id, posting.to_id):
            balance = balances.get(account_id)
            if balance is None:
                raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
            if balance.currency != posting.currency:
                raise Refusal(
                    Reason.CURRENCY_MISMATCH,
                    f"posting {index} moves {posting.currency} but account {account_id} is in "
                    f"{balance.currency}",
                    (FieldViolation(f"batch.postings[{index}].currency", f"must be {balance.currency}"),),
                )


def check_plan_open(plan_id: str, status: PlanStatus) -> None:
    if status is not PlanStatus.HOLD:
        raise Refusal(Reason.INVALID_PLAN_STATE, f"plan {plan_id} is {status.value}; it takes no more holds")
