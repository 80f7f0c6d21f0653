"""What the payout service needs of the world: PartyManagement, and storage (creates and changes of
payouts, each one transaction, and reads).

The service is written against these small ports only, so its rules (idempotent replay, refusals,
accounting dispatch) run against an in-memory fake in unit tests as they do against PostgreSQL
(`payout_manager.storage.unit_of_work`) in production.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from payout_manager.accounting.rules import Account, Batch
from payout_manager.payouts.cash_flow import CashFlowPosting
from payout_manager.payouts.model import Accounting, Payout, PayoutEvent, PayoutStatus

T = TypeVar("T")


@dataclass(frozen=True)
class PayoutFilter:
    party_id: str = ""
    shop_id: str = ""
    statuses: tuple[PayoutStatus, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None
    # None: every party's; else only these parties' (a caller confined to them, SPEC 5).
    parties: frozenset[str] | None = None


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: listing is newest first, by (created_at, payout_id)."""

    created_at: datetime
    payout_id: str


class ComputedCashFlow(Protocol):
    @property
    def postings(self) -> tuple[CashFlowPosting, ...]: ...

    @property
    def payout_tool_id(self) -> str: ...


class PartyManagement(Protocol):
    """What the payout service needs of PartyManagement (clients.party_management provides it)."""

    def compute_payout_cash_flow(
        self,
        party_id: str,
        shop_id: str,
        amount: int,
        currency: str,
        payout_tool_id: str,
        at: datetime,
        *,
        deadline: float | None = None,
    ) -> ComputedCashFlow: ...


@dataclass(frozen=True)
class Listed:
    """A payout of a listing: where it sorts, and the serialized payout_manager.v1.Event of its
    latest change, whose snapshot is the payout as stored now (its revision is the event's
    sequence_id)."""

    created_at: datetime
    payout_id: str
    latest_event: bytes


class PayoutStore(Protocol):
    def get(self, payout_id: str) -> Payout | None:
        """The payout, or None."""
        ...

    def events(self, payout_id: str, after_sequence_id: int, limit: int) -> list[bytes]:
        """The serialized events after `after_sequence_id`, oldest first."""
        ...

    def event(self, payout_id: str, sequence_id: int) -> bytes | None: ...

    def list(self, where: PayoutFilter, after: Cursor | None, limit: int) -> list[Listed]:
        """Up to `limit` payouts matching `where`, newest first, after `after`."""
        ...


class UnitOfWork(Protocol):
    """The payouts, for reads of several statements."""

    @property
    def payouts(self) -> PayoutStore: ...


class Storage(Protocol):
    def payout(self, payout_id: str, *, stale: bool = False) -> Payout | None:
        """The payout as stored now, or None; `stale`: as a replica has it, if there is one (a
        payout the replica lacks is read where every commit is)."""
        ...

    def create(
        self,
        payout: Payout,
        event: PayoutEvent,
        batch: Batch,
        checked: Collection[int],
        max_unresolved: int,
    ) -> bool:
        """In one transaction: stores the new `payout`, holds `batch` in its plan and stores `event`.

        False, and nothing stored, when a payout with its id exists. Refused
        (PAYOUT_LIMIT_EXCEEDED), storing nothing, when its shop has `max_unresolved` payouts
        UNPAID or PAID already; the change that resolves one gives its place back. Refused
        (INSUFFICIENT_FUNDS), storing nothing, when the minimum available amount of a `checked`
        account would fall below zero.
        """
        ...

    def change(
        self, changed: Payout, event: PayoutEvent, accounting: Accounting, revert: Batch | None
    ) -> bool:
        """In one transaction: stores `changed` with its `accounting` on the payout's plan and `event`.

        Only if the stored payout is still at the revision before `changed.revision`; False, and
        nothing stored, if not. `revert`: the batch a REVERT holds and commits in the revert plan.
        """
        ...

    def accounts(self, account_ids: Collection[int]) -> dict[int, Account]:
        """The accounts that exist of `account_ids`, with their balances now."""
        ...

    def read(self, work: Callable[[UnitOfWork], T]) -> T:
        """Runs read-only `work`; each statement sees the latest commits."""
        ...

    def stale_read(self, work: Callable[[UnitOfWork], T], settled: Callable[[T], bool] = ...) -> T:
        """Runs read-only `work` where its answer may be a little stale (a replica, if any).

        An answer that `settled` rejects, or a refusal that something is not found, is read again
        where every commit is (`storage.replica` has the rule).
        """
        ...
