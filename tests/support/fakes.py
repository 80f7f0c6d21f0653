"""In-memory stand-ins for the payout service's ports, for unit tests of its rules without I/O.

`MemoryStorage` keeps payouts, events and posting plans in dicts; a transaction that raises leaves
them as they were, as a rolled-back database transaction would. The ledger keeps shumway's
arithmetic: a held plan's net debit on an account lowers its `min_available_amount`, commit moves
the nets into `own_amount`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from payout_manager.accounting.rules import Account, Batch, PlanStatus
from payout_manager.errors import Reason, Refusal
from payout_manager.events.codec import event_to_proto
from payout_manager.payouts.cash_flow import CashFlowPosting
from payout_manager.payouts.model import UNRESOLVED, Accounting, Payout, PayoutEvent
from payout_manager.payouts.ports import Cursor, Listed, PayoutFilter, UnitOfWork

T = TypeVar("T")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class MemoryPayouts:
    payouts: dict[str, Payout] = field(default_factory=dict)
    stored_events: dict[str, list[PayoutEvent]] = field(default_factory=lambda: defaultdict(list))

    def get(self, payout_id: str) -> Payout | None:
        return self.payouts.get(payout_id)

    def add(self, new: Payout) -> bool:
        if new.payout_id in self.payouts:
            return False
        self.payouts[new.payout_id] = new
        return True

    def save_change(self, changed: Payout) -> None:
        self.payouts[changed.payout_id] = changed

    def add_event(self, event: PayoutEvent) -> None:
        self.stored_events[event.payout_id].append(event)

    def events(self, payout_id: str, after_sequence_id: int, limit: int) -> list[bytes]:
        kept = [e for e in self.stored_events.get(payout_id, []) if e.sequence_id > after_sequence_id]
        return [event_to_proto(e).SerializeToString() for e in kept[:limit]]

    def event(self, payout_id: str, sequence_id: int) -> bytes | None:
        found = [e for e in self.stored_events.get(payout_id, []) if e.sequence_id == sequence_id]
        return event_to_proto(found[0]).SerializeToString() if found else None

    def list(self, where: PayoutFilter, after: Cursor | None, limit: int) -> list[Listed]:
        newest_first = sorted(self.payouts.values(), key=lambda p: (p.created_at, p.payout_id), reverse=True)
        matching = [
            p
            for p in newest_first
            if (not where.party_id or p.party_id == where.party_id)
            and (not where.shop_id or p.shop_id == where.shop_id)
            and (where.parties is None or p.party_id in where.parties)
            and (not where.statuses or p.status in where.statuses)
            and (after is None or (p.created_at, p.payout_id) < (after.created_at, after.payout_id))
        ]
        return [Listed(p.created_at, p.payout_id, self._latest_event(p)) for p in matching[:limit]]

    def _latest_event(self, payout: Payout) -> bytes:
        event = self.event(payout.payout_id, payout.revision)
        assert event is not None, f"{payout.payout_id} has no event of revision {payout.revision}"
        return event


@dataclass
class MemoryPlan:
    status: PlanStatus
    batches: list[Batch]

    def nets(self) -> dict[int, int]:
        """Per account, what the plan credits it minus what it debits it."""
        net: dict[int, int] = defaultdict(int)
        for batch in self.batches:
            for posting in batch.postings:
                net[posting.from_id] -= posting.amount
                net[posting.to_id] += posting.amount
        return net


@dataclass
class MemoryLedger:
    """Every account exists, in RUB, unless `currencies` names another or `missing` holds it."""

    own: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    plans: dict[str, MemoryPlan] = field(default_factory=dict)
    currencies: dict[int, str] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)

    def account(self, account_id: int) -> Account:
        held = [
            plan.nets().get(account_id, 0) for plan in self.plans.values() if plan.status is PlanStatus.HOLD
        ]
        own = self.own[account_id]
        return Account(
            account_id,
            self.currencies.get(account_id, "RUB"),
            "",
            EPOCH,
            own,
            own + sum(n for n in held if n < 0),
            own + sum(n for n in held if n > 0),
        )

    def hold(
        self, plan_id: str, batch: Batch, now: datetime, *, checked: Collection[int] | None = None
    ) -> dict[int, Account]:
        plan = self.plans.setdefault(plan_id, MemoryPlan(PlanStatus.HOLD, []))
        if plan.status is not PlanStatus.HOLD:
            raise Refusal(Reason.INVALID_PLAN_STATE, f"plan {plan_id} is {plan.status.value}")
        plan.batches.append(batch)
        accounts = {a for p in batch.postings for a in (p.from_id, p.to_id)} if checked is None else checked
        return {account_id: self.account(account_id) for account_id in accounts}

    def commit_plan(self, plan_id: str, now: datetime) -> list[int]:
        plan = self._finish(plan_id, PlanStatus.COMMITTED)
        for account_id, net in plan.nets().items():
            self.own[account_id] += net
        return sorted(plan.nets())

    def rollback_plan(self, plan_id: str, now: datetime) -> list[int]:
        return sorted(self._finish(plan_id, PlanStatus.ROLLED_BACK).nets())

    def _finish(self, plan_id: str, target: PlanStatus) -> MemoryPlan:
        plan = self.plans[plan_id]
        if plan.status is not PlanStatus.HOLD:
            raise Refusal(Reason.INVALID_PLAN_STATE, f"plan {plan_id} is {plan.status.value}")
        plan.status = target
        return plan


@dataclass
class MemoryUnitOfWork:
    payouts: MemoryPayouts
    ledger: MemoryLedger


@dataclass
class MemoryStorage:
    """The service's Storage in memory; `transactions` counts the units of work that committed."""

    unit: MemoryUnitOfWork = field(default_factory=lambda: MemoryUnitOfWork(MemoryPayouts(), MemoryLedger()))
    transactions: int = 0

    def transaction(self, work: Callable[[MemoryUnitOfWork], T]) -> T:
        before = copy.deepcopy(self.unit)
        try:
            result = work(self.unit)
        except BaseException:
            self.unit = before
            raise
        self.transactions += 1
        return result

    def read(self, work: Callable[[UnitOfWork], T]) -> T:
        return work(self.unit)

    def stale_read(self, work: Callable[[UnitOfWork], T], settled: Callable[[T], bool] = lambda _: True) -> T:
        """No replica here: every read sees every commit."""
        return work(self.unit)

    def payout(self, payout_id: str, *, stale: bool = False) -> Payout | None:
        return self.unit.payouts.get(payout_id)

    def accounts(self, account_ids: Collection[int]) -> dict[int, Account]:
        ledger = self.unit.ledger
        return {i: ledger.account(i) for i in account_ids if i not in ledger.missing}

    def create(
        self,
        payout: Payout,
        event: PayoutEvent,
        batch: Batch,
        checked: Collection[int],
        max_unresolved: int,
    ) -> bool:
        def store(unit: MemoryUnitOfWork) -> bool:
            if not unit.payouts.add(payout):
                return False
            unresolved = [
                p
                for p in unit.payouts.payouts.values()
                if (p.party_id, p.shop_id) == (payout.party_id, payout.shop_id) and p.status in UNRESOLVED
            ]
            if len(unresolved) > max_unresolved:
                raise Refusal(Reason.PAYOUT_LIMIT_EXCEEDED, f"shop {payout.shop_id} is at its limit")
            accounts = unit.ledger.hold(payout.plan_id, batch, payout.created_at, checked=checked)
            for account_id in checked:
                available = accounts[account_id].min_available_amount
                if available < 0:
                    raise Refusal(
                        Reason.INSUFFICIENT_FUNDS,
                        f"settlement account {account_id} lacks {-available} {payout.currency}",
                    )
            unit.payouts.add_event(event)
            return True

        return self.transaction(store)

    def change(
        self, changed: Payout, event: PayoutEvent, accounting: Accounting, revert: Batch | None
    ) -> bool:
        def store(unit: MemoryUnitOfWork) -> bool:
            current = unit.payouts.get(changed.payout_id)
            if current is None or current.revision != changed.revision - 1:
                return False
            now = changed.updated_at
            if accounting is Accounting.COMMIT:
                unit.ledger.commit_plan(changed.plan_id, now)
            elif accounting is Accounting.ROLLBACK:
                unit.ledger.rollback_plan(changed.plan_id, now)
            elif accounting is Accounting.REVERT:
                assert revert is not None
                unit.ledger.hold(changed.revert_plan_id, revert, now, checked=())
                unit.ledger.commit_plan(changed.revert_plan_id, now)
            unit.payouts.save_change(changed)
            unit.payouts.add_event(event)
            return True

        return self.transaction(store)


@dataclass(frozen=True)
class FixedCashFlow:
    postings: tuple[CashFlowPosting, ...]
    payout_tool_id: str


@dataclass
class FixedPartyManagement:
    """PartyManagement answering every payout with the postings `terms(amount)` gives, or with
    `refusal` when one is set."""

    terms: Callable[[int], tuple[CashFlowPosting, ...]]
    calls: int = 0
    refusal: Refusal | None = None

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
    ) -> FixedCashFlow:
        self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        return FixedCashFlow(self.terms(amount), payout_tool_id or "tool-1")
