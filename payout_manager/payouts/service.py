"""The payout service: each call is one transaction of payout, accounting and event (SPEC 1.1)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from payout_manager.access.caller import Caller, job
from payout_manager.accounting import rules
from payout_manager.accounting.rules import Batch, Posting
from payout_manager.errors import FieldViolation, Reason, Refusal
from payout_manager.payouts import listing, model, validation
from payout_manager.payouts.cash_flow import CashFlowPosting, PayoutSums, settlement_accounts, sum_payout
from payout_manager.payouts.model import (
    DEFAULT_MAX_UNRESOLVED_PER_SHOP,
    Accounting,
    Payout,
    PayoutFailure,
    PayoutRequest,
    PayoutStatus,
)
from payout_manager.payouts.ports import (
    ComputedCashFlow,
    Cursor,
    Listed,
    PartyManagement,
    PayoutFilter,
    PayoutStore,
    Storage,
    UnitOfWork,
)

# Who cancels an expired payout, and the cancel details it gives (SPEC 1.1, Expiry).
EXPIRY = job("expiry")
EXPIRED = "expired"


@dataclass(frozen=True)
class Quote:
    """What a create would hold now (SPEC 1.1 QuotePayout)."""

    amount: int
    fee: int
    cash_flow: tuple[CashFlowPosting, ...]
    payout_tool_id: str
    # The shop's settlement account's minimum available amount now, before this payout.
    available_amount: int
    # Whether a create now would pass the funds check.
    sufficient: bool


@dataclass(frozen=True)
class Page:
    payouts: list[Listed]
    next_page_token: str


def hold_batch(postings: tuple[CashFlowPosting, ...]) -> Batch:
    """The postings as the one batch a payout's plan holds (SPEC 1.1, CreatePayout step 5)."""
    return Batch(
        1,
        tuple(
            Posting(p.source.account_id, p.destination.account_id, p.amount, p.currency, p.details)
            for p in postings
        ),
    )


def _not_found(payout_id: str) -> Refusal:
    return Refusal(Reason.PAYOUT_NOT_FOUND, f"payout {payout_id} does not exist")


def _visible(payouts: PayoutStore, payout_id: str, caller: Caller) -> Payout:
    """The payout, if it exists and `caller` may touch its party: to others it does not exist."""
    payout = payouts.get(payout_id)
    if payout is None or not caller.may_touch(payout.party_id):
        raise _not_found(payout_id)
    return payout


class PayoutService:
    def __init__(
        self,
        storage: Storage,
        party_management: PartyManagement,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        max_unresolved_per_shop: int = DEFAULT_MAX_UNRESOLVED_PER_SHOP,
    ) -> None:
        self._max_unresolved = max_unresolved_per_shop
        self._storage = storage
        self._party_management = party_management
        self._clock = clock
        self._new_id = new_id

    def create(self, request: PayoutRequest, caller: Caller, *, deadline: float | None = None) -> Payout:
        """Creates an UNPAID payout holding its cash flow; idempotent on a given payout id."""
        validation.check_create(request)
        _may_pay_out(request, caller)
        if not request.payout_id:
            request = replace(request, payout_id=self._new_id())
        else:
            existing = self._storage.payout(request.payout_id)
            if existing is not None:
                return _replayed(existing, request)

        cash_flow, sums = self._priced(request, deadline)
        payout, event = model.create(
            request,
            payout_tool_id=cash_flow.payout_tool_id,
            amount=sums.amount,
            fee=sums.fee,
            cash_flow=cash_flow.postings,
            now=self._clock(),
            initiator=caller.identity,
        )
        # Only the settlement accounts are checked, so only they serialize payouts; the shared
        # system account every fee goes to is credited through any free slot of it. A refusal
        # (insufficient funds) stores nothing: no hold, no payout, no event.
        checked = settlement_accounts(payout.cash_flow)
        event = replace(event, event_id=self._new_id())
        if self._storage.create(payout, event, hold_batch(payout.cash_flow), checked, self._max_unresolved):
            return payout
        # A concurrent create with this id committed first: judge this call against it.
        winner = self._storage.payout(payout.payout_id)
        assert winner is not None
        return _replayed(winner, request)

    def quote(self, request: PayoutRequest, caller: Caller, *, deadline: float | None = None) -> Quote:
        """What `request`'s create would hold now, by the same PartyManagement call and the same
        rules, with its refusals; holds, stores and publishes nothing."""
        validation.check_create(request)
        _may_pay_out(request, caller)
        cash_flow, sums = self._priced(request, deadline)
        batch = hold_batch(cash_flow.postings)
        accounts = self._storage.accounts({i for p in batch.postings for i in (p.from_id, p.to_id)})
        balances = {account_id: rules.balance_of(account) for account_id, account in accounts.items()}
        # The create's hold by the ledger's own rules, in its order: an unknown account or another
        # currency (pm_hold_new_plan's PM002, PM003), then a balance leaving int64 (its 22003).
        rules.check_accounts(batch.postings, balances)
        held = {i: rules.hold(balances[i], 0, net) for i, net in rules.net_by_account(batch.postings).items()}
        # Then the create's funds check (PM001): no settlement account below zero after the hold.
        checked = settlement_accounts(cash_flow.postings)
        return Quote(
            amount=sums.amount,
            fee=sums.fee,
            cash_flow=cash_flow.postings,
            payout_tool_id=cash_flow.payout_tool_id,
            available_amount=balances[checked[0]].min_available_amount if checked else 0,
            sufficient=all(held[i].min_available_amount >= 0 for i in checked),
        )

    def _priced(self, request: PayoutRequest, deadline: float | None) -> tuple[ComputedCashFlow, PayoutSums]:
        """PartyManagement's cash flow for `request` and its sums; refused if nothing is paid out
        or a sum leaves int64."""
        cash_flow = self._party_management.compute_payout_cash_flow(
            request.party_id,
            request.shop_id,
            request.amount,
            request.currency,
            request.payout_tool_id,
            self._clock(),
            deadline=deadline,
        )
        sums = sum_payout(cash_flow.postings)
        if sums.amount <= 0:
            raise Refusal(
                Reason.INSUFFICIENT_FUNDS,
                f"the payout's fees ({sums.fee}) leave nothing to pay out of {request.amount}",
            )
        # The payout stores both as bigint: the create's statement would refuse them (22003).
        for name, value in (("amount", sums.amount), ("fee", sums.fee)):
            if not rules.INT64_MIN <= value <= rules.INT64_MAX:
                raise Refusal(
                    Reason.AMOUNT_OUT_OF_RANGE,
                    f"the payout's {name} ({value}) would leave the int64 range of minor units",
                    (FieldViolation("cash.amount", f"gives a payout {name} out of int64"),),
                )
        return cash_flow, sums

    def confirm(self, payout_id: str, caller: Caller) -> Payout:
        return self._change(payout_id, PayoutStatus.CONFIRMED, caller)

    def cancel(self, payout_id: str, details: str, caller: Caller) -> Payout:
        validation.check_details(details)
        return self._change(payout_id, PayoutStatus.CANCELLED, caller, details)

    def mark_paid(self, payout_id: str, caller: Caller) -> Payout:
        return self._change(payout_id, PayoutStatus.PAID, caller)

    def fail(self, payout_id: str, failure: PayoutFailure, caller: Caller) -> Payout:
        """The bank or provider refused the money: the hold rolled back, or a confirm reverted."""
        validation.check_details(failure.details, "failure.details")
        return self._change(payout_id, PayoutStatus.FAILED, caller, failure=failure)

    def expire(self, payout_id: str, ttl: timedelta) -> Payout | None:
        """Cancels the payout as expired if it is UNPAID and older than `ttl`: the cancelled payout.

        None, and nothing done, when it is not (or no longer) both. The decision stands only at the
        revision it was made on: a confirm or a mark-paid that lands first is read again, and the
        payout left as it made it, never cancelled (which would revert a confirmed one).
        """

        def expired(current: Payout) -> bool:
            return current.status is PayoutStatus.UNPAID and current.created_at + ttl < self._clock()

        payout, changed = self._changed(payout_id, PayoutStatus.CANCELLED, EXPIRY, EXPIRED, only_if=expired)
        return payout if changed else None

    def get(self, payout_id: str, caller: Caller) -> Payout:
        """The payout's latest revision; from a replica, as of its lag (a payout it lacks is read
        from the primary)."""
        validation.check_payout_id(payout_id)
        return self._visible_now(payout_id, caller, stale=True)

    def event(self, payout_id: str, revision: int, caller: Caller) -> bytes:
        """The stored event `revision` of the payout: its snapshot is the payout at that revision."""
        validation.check_payout_id(payout_id)

        def read(unit: UnitOfWork) -> bytes:
            payouts = unit.payouts
            # A confined caller's payout is checked first; anyone else's only when nothing is found.
            confined = caller.parties is not None
            if confined:
                _visible(payouts, payout_id, caller)
            payload = payouts.event(payout_id, revision)
            if payload is not None:
                return payload
            if not confined:
                _visible(payouts, payout_id, caller)
            raise Refusal(Reason.REVISION_NOT_FOUND, f"payout {payout_id} has no revision {revision}")

        return self._storage.stale_read(read)

    def events(self, payout_id: str, after_sequence_id: int, limit: int, caller: Caller) -> list[bytes]:
        """The payout's stored events after `after_sequence_id`, oldest first."""
        validation.check_payout_id(payout_id)

        def read(unit: UnitOfWork) -> list[bytes]:
            payouts = unit.payouts
            confined = caller.parties is not None
            if confined:
                _visible(payouts, payout_id, caller)
            found = payouts.events(payout_id, after_sequence_id, limit)
            if not found and not confined:
                _visible(payouts, payout_id, caller)
            return found

        # No event after the caller's sequence id may only mean that a replica lags: the primary says.
        return self._storage.stale_read(read, bool)

    def list(self, where: PayoutFilter, page_token: str, page_size: int, caller: Caller) -> Page:
        """One page of payouts, newest first, and the token of the next page ('' on the last).

        A caller confined to parties sees only theirs: another party's listing is empty.
        """
        after = listing.decode(page_token, where) if page_token else None
        if caller.parties is not None:
            if where.party_id and not caller.may_touch(where.party_id):
                return Page([], "")
            if not where.party_id:
                where = replace(where, parties=caller.parties)
        rows = self._storage.stale_read(lambda unit: unit.payouts.list(where, after, page_size + 1))
        page, more = rows[:page_size], len(rows) > page_size
        token = listing.encode(Cursor(page[-1].created_at, page[-1].payout_id), where) if more else ""
        return Page(page, token)

    def _visible_now(self, payout_id: str, caller: Caller, *, stale: bool = False) -> Payout:
        """The payout as stored now (or on a replica, `stale`), if `caller` may see it (as `_visible`)."""
        payout = self._storage.payout(payout_id, stale=stale)
        if payout is None or not caller.may_touch(payout.party_id):
            raise _not_found(payout_id)
        return payout

    def _change(
        self,
        payout_id: str,
        target: PayoutStatus,
        caller: Caller,
        details: str = "",
        failure: PayoutFailure | None = None,
    ) -> Payout:
        return self._changed(payout_id, target, caller, details, failure=failure)[0]

    def _changed(
        self,
        payout_id: str,
        target: PayoutStatus,
        caller: Caller,
        details: str = "",
        *,
        failure: PayoutFailure | None = None,
        only_if: Callable[[Payout], bool] | None = None,
    ) -> tuple[Payout, bool]:
        """The payout after its change to `target`, and whether this call changed it (not a no-op,
        and `only_if` held for the payout as read)."""
        validation.check_payout_id(payout_id)
        # Read, decide, then store the change if nothing changed the payout in between; else
        # read again. Each failed attempt means another change landed, and a payout changes at
        # most once per status, so this ends.
        for _ in range(len(PayoutStatus) + 1):
            current = self._visible_now(payout_id, caller)
            if only_if is not None and not only_if(current):
                return current, False
            change = model.transition(
                current,
                target,
                now=self._clock(),
                initiator=caller.identity,
                details=details,
                failure=failure,
            )
            if change.event is None:
                return current, False
            revert = None
            if change.accounting is Accounting.REVERT:
                # A revert is never refused for lack of funds: no account of it is checked.
                revert = hold_batch(tuple(p.reversed() for p in current.cash_flow))
            event = replace(change.event, event_id=self._new_id())
            if self._storage.change(change.payout, event, change.accounting, revert):
                return change.payout, True
        raise AssertionError(f"payout {payout_id} kept changing under its change to {target.value}")


def _may_pay_out(request: PayoutRequest, caller: Caller) -> None:
    if not caller.may_touch(request.party_id):
        raise Refusal(
            Reason.PARTY_NOT_ALLOWED, f"{caller.identity} may not pay out for party {request.party_id}"
        )


def _replayed(existing: Payout, request: PayoutRequest) -> Payout:
    if existing.was_requested_as(request):
        return existing
    raise Refusal(
        Reason.PAYOUT_ALREADY_EXISTS,
        f"payout {existing.payout_id} exists and was created with other parameters",
    )
