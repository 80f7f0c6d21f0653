"""The ledger's SQL: accounts, posting plans and their balances, inside the caller's transaction.

An account's balance is the sum of its slots (`account_slot`). A hold locks, for each account:
- every slot, waiting, when the caller checks the account's funds or the plan already holds a net
  on it: the account's balance is then exact, and the plan's net stays in one slot;
- otherwise the lowest free slot, with SKIP LOCKED, never waiting; when every slot is locked it
  makes a new one. So the one system account that every payout credits with its fee does not make
  payouts queue: only accounts whose funds are checked serialize.

Waiting locks are taken in ascending (account id, slot) order, and a transaction waits for an
account only while holding locks on lower ones, so two plans queue instead of deadlocking. Every
change of a slot writes a row to `account_balance`, so past balances can be read back.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg2
from sqlalchemy import Connection, Row, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from payout_manager.accounting import rules
from payout_manager.accounting.rules import Account, Balance, Batch, Plan, PlanStatus, Posting
from payout_manager.errors import FieldViolation, Reason, Refusal, invalid
from payout_manager.storage import procedures
from payout_manager.storage.tables import (
    account,
    account_balance,
    account_slot,
    posting,
    posting_plan,
    posting_plan_account,
)

# Slots an account may grow to under contention; beyond, a change waits for a random slot.
MAX_SLOTS = 64
_NEW_SLOT_ATTEMPTS = 3

_TOTALS = text(
    """
    SELECT a.id, a.currency, a.description, a.created_at,
           sum(s.own_amount) AS own_amount, sum(s.held_debit) AS held_debit,
           sum(s.held_credit) AS held_credit
    FROM account a JOIN account_slot s ON s.account_id = a.id
    WHERE a.id = ANY(:ids)
    GROUP BY a.id
    """
)

# The account, with each slot's last balance at :at summed (slots made after :at add nothing), in
# one statement: no row when the account does not exist.
_ACCOUNT_AT = text(
    """
    SELECT a.id, a.currency, a.description, a.created_at, t.own_amount, t.min_available_amount,
           t.max_available_amount
    FROM account a
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(b.own_amount), 0) AS own_amount,
               coalesce(sum(b.min_available_amount), 0) AS min_available_amount,
               coalesce(sum(b.max_available_amount), 0) AS max_available_amount
        FROM account_slot s
        CROSS JOIN LATERAL (
            SELECT own_amount, min_available_amount, max_available_amount FROM account_balance
            WHERE account_id = s.account_id AND slot = s.slot AND at <= :at
            ORDER BY at DESC, id DESC LIMIT 1
        ) b
        WHERE s.account_id = a.id
    ) t
    WHERE a.id = :id
    """
)

# For each account: its lowest free slot, locked without waiting (NULL when all are locked), and
# the committed sums over all its slots, for the range check of the account's total.
_LOCK_FREE_SLOTS = text(
    """
    SELECT w.id AS account_id, a.currency, f.slot, f.own_amount, f.held_debit, f.held_credit,
           t.own_amount AS total_own, t.held_debit AS total_debit, t.held_credit AS total_credit,
           t.slots
    FROM unnest(CAST(:ids AS bigint[])) AS w(id)
    JOIN account a ON a.id = w.id
    LEFT JOIN LATERAL (
        SELECT slot, own_amount, held_debit, held_credit FROM account_slot
        WHERE account_id = w.id ORDER BY slot LIMIT 1
        FOR NO KEY UPDATE SKIP LOCKED
    ) f ON true
    CROSS JOIN LATERAL (
        SELECT sum(own_amount) AS own_amount, sum(held_debit) AS held_debit,
               sum(held_credit) AS held_credit, count(*) AS slots
        FROM account_slot WHERE account_id = w.id
    ) t
    ORDER BY w.id
    """
)

_NEW_SLOT = text(
    """
    INSERT INTO account_slot (account_id, slot, own_amount, held_debit, held_credit)
    VALUES (:id, :slot, 0, 0, 0)
    ON CONFLICT DO NOTHING
    RETURNING slot
    """
)

_WAIT_FOR_ANY_SLOT = text(
    """
    SELECT slot, own_amount, held_debit, held_credit FROM account_slot
    WHERE account_id = :id ORDER BY random() LIMIT 1
    FOR NO KEY UPDATE
    """
)

# New slot balances, and a row of history for each (stamped while the slot is locked).
_SLOT_CHANGES = """
    v AS (
        SELECT * FROM unnest(
            CAST(:account_ids AS bigint[]), CAST(:slots AS smallint[]), CAST(:own AS bigint[]),
            CAST(:debit AS bigint[]), CAST(:credit AS bigint[])
        ) AS v(account_id, slot, own_amount, held_debit, held_credit)
    ), changed AS (
        UPDATE account_slot s
        SET own_amount = v.own_amount, held_debit = v.held_debit, held_credit = v.held_credit
        FROM v WHERE s.account_id = v.account_id AND s.slot = v.slot
    ), history AS (
        INSERT INTO account_balance (account_id, slot, at, own_amount, min_available_amount,
                                     max_available_amount)
        SELECT account_id, slot, clock_timestamp(), own_amount, own_amount - held_debit,
               own_amount + held_credit
        FROM v
    )
"""

# A hold's writes in one statement: the slots, the plan's nets, the batch's postings.
_WRITE_HOLD = text(
    "WITH"  # noqa: S608 (constant SQL: only module constants are joined)
    + _SLOT_CHANGES
    + """
    , nets AS (
        INSERT INTO posting_plan_account (plan_id, account_id, slot, net)
        SELECT :plan_id, account_id, slot, net FROM unnest(
            CAST(:account_ids AS bigint[]), CAST(:slots AS smallint[]), CAST(:nets AS bigint[])
        ) AS n(account_id, slot, net)
        ON CONFLICT (plan_id, account_id) DO UPDATE SET net = excluded.net
    )
    INSERT INTO posting (plan_id, batch_id, position, from_id, to_id, amount, currency, description)
    SELECT :plan_id, :batch_id, p.position - 1, p.from_id, p.to_id, p.amount, p.currency, p.description
    FROM unnest(
        CAST(:from_ids AS bigint[]), CAST(:to_ids AS bigint[]), CAST(:amounts AS bigint[]),
        CAST(:currencies AS text[]), CAST(:descriptions AS text[])
    ) WITH ORDINALITY AS p(from_id, to_id, amount, currency, description, position)
    """
)

_NEW_PLAN = pg_insert(posting_plan).on_conflict_do_nothing().returning(posting_plan.c.id)
_LOCK_PLAN = select(posting_plan.c.status).where(posting_plan.c.id == bindparam("plan_id")).with_for_update()
_PLAN_NETS = select(posting_plan_account).where(posting_plan_account.c.plan_id == bindparam("plan_id"))
_LOCK_WHOLE = (
    select(account_slot, account.c.currency, account.c.description, account.c.created_at)
    .join(account, account.c.id == account_slot.c.account_id)
    .where(account_slot.c.account_id.in_(bindparam("ids", expanding=True)))
    .order_by(account_slot.c.account_id, account_slot.c.slot)
    .with_for_update(of=account_slot, key_share=True)
)


@dataclass(frozen=True)
class _Locked:
    """An account locked for a change: the slot to change, and the sum of its other slots."""

    slot: int
    balance: Balance
    others: Balance

    def total(self, slot_balance: Balance) -> Balance:
        return rules.combined(slot_balance.account_id, slot_balance.currency, (self.others, slot_balance))


@dataclass(frozen=True)
class _Net:
    """A plan's net effect on one account, held in one of the account's slots."""

    slot: int
    net: int


def _int(value: int | Decimal | None) -> int:
    # PostgreSQL sums bigints as numeric: exact, and turned into int without rounding.
    return 0 if value is None else int(value)


def _slot_balance(account_id: int, currency: str, row: Any) -> Balance:
    return Balance(account_id, currency, _int(row.own_amount), _int(row.held_debit), _int(row.held_credit))


def _account(account_id: int, row: Row[Any], balance: Balance) -> Account:
    """The account with `balance`; `row` has its currency, description and created_at."""
    return Account(
        id=account_id,
        currency=row.currency,
        description=row.description,
        creation_time=row.created_at,
        own_amount=balance.own_amount,
        min_available_amount=balance.min_available_amount,
        max_available_amount=balance.max_available_amount,
    )


def check_plan_id(plan_id: str) -> None:
    violations = rules.text_violations("plan_id", plan_id, max_length=rules.MAX_PLAN_ID_LENGTH, required=True)
    if violations:
        raise invalid(violations)


class Ledger:
    """Ledger operations on one connection; the caller owns the transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def create_account(self, currency: str, description: str) -> Account:
        violations = rules.currency_violations("currency", currency) + rules.text_violations(
            "description", description, max_length=rules.MAX_DESCRIPTION_LENGTH, required=False
        )
        if violations:
            raise invalid(violations)
        row = self._connection.execute(
            insert(account)
            .values(currency=currency, description=description, created_at=func.clock_timestamp())
            .returning(*account.c)
        ).one()
        self._connection.execute(
            insert(account_slot).values(account_id=row.id, slot=0, own_amount=0, held_debit=0, held_credit=0)
        )
        self._connection.execute(
            insert(account_balance).values(
                account_id=row.id,
                slot=0,
                at=row.created_at,
                own_amount=0,
                min_available_amount=0,
                max_available_amount=0,
            )
        )
        return _account(row.id, row, Balance(row.id, currency, 0, 0, 0))

    def get_account(self, account_id: int, at: datetime | None = None) -> Account:
        """The account now, or with its balances as they were at `at`."""
        if at is None:
            found = self.accounts([account_id])
            if account_id not in found:
                raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
            return found[account_id]
        row = self._connection.execute(_ACCOUNT_AT, {"id": account_id, "at": at}).first()
        if row is None:
            raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
        if row.created_at > at:
            raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} did not exist at {at.isoformat()}")
        return Account(
            id=row.id,
            currency=row.currency,
            description=row.description,
            creation_time=row.created_at,
            own_amount=_in_int64(account_id, row.own_amount),
            min_available_amount=_in_int64(account_id, row.min_available_amount),
            max_available_amount=_in_int64(account_id, row.max_available_amount),
        )

    def replayed_until(self) -> datetime | None:
        """On a replica, when the last transaction it replayed was committed on the primary (the
        earliest moment there is, if it has replayed none since it started); None on a primary,
        which has every commit."""
        recovering, replayed = self._connection.execute(
            text("SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()")
        ).one()
        if not recovering:
            return None
        moment: datetime = replayed if replayed is not None else datetime.min.replace(tzinfo=UTC)
        return moment

    def accounts(self, account_ids: Iterable[int]) -> dict[int, Account]:
        """The accounts with their balances now, summed over their slots."""
        rows = self._connection.execute(_TOTALS, {"ids": sorted(set(account_ids))})
        return {
            row.id: _account(
                row.id, row, rules.combined(row.id, row.currency, [_slot_balance(row.id, row.currency, row)])
            )
            for row in rows
        }

    def hold(
        self, plan_id: str, batch: Batch, now: datetime, *, checked: Collection[int] | None = None
    ) -> dict[int, Account]:
        """Holds `batch` in plan `plan_id`, creating the plan; a replayed batch is a no-op.

        `checked`: the accounts whose balance the caller reads to decide (None: all of them); they
        are locked whole and returned with their balances after the hold. The others are locked
        one slot each and left out of the result.
        """
        rules.check_batch(plan_id, batch)
        created = (
            self._connection.execute(
                _NEW_PLAN,
                {"id": plan_id, "status": PlanStatus.HOLD.value, "created_at": now, "updated_at": now},
            ).first()
            is not None
        )
        before: dict[int, _Net] = {}
        if not created:
            rules.check_plan_open(plan_id, self._lock_plan(plan_id))
            held = self._batches(plan_id)
            if batch.id in held:
                if held[batch.id] != batch.postings:
                    raise Refusal(
                        Reason.POSTINGS_MISMATCH,
                        f"batch {batch.id} of plan {plan_id} was held with other postings",
                        (FieldViolation("batch.postings", "differ from the postings held before"),),
                    )
                replayed = self.accounts(self._plan_nets(plan_id))
                return replayed if checked is None else {i: replayed[i] for i in checked if i in replayed}
            if held and batch.id < max(held):
                raise invalid([FieldViolation("batch.id", f"must be above {max(held)}, the last batch held")])
            before = self._plan_nets(plan_id)

        account_ids = sorted({p.from_id for p in batch.postings} | {p.to_id for p in batch.postings})
        whole = [i for i in account_ids if checked is None or i in checked or i in before]
        locked, rows = self._lock_whole(whole, {i: n.slot for i, n in before.items()})
        locked |= self._lock_free_slots([i for i in account_ids if i not in locked])
        rules.check_accounts(batch.postings, {i: target.balance for i, target in locked.items()})

        batch_net = rules.net_by_account(batch.postings)
        was = {i: before[i].net if i in before else 0 for i in account_ids}
        after = {i: was[i] + batch_net.get(i, 0) for i in account_ids}
        changed = {i: rules.hold(locked[i].balance, was[i], after[i]) for i in account_ids}
        totals = {i: locked[i].total(changed[i]) for i in account_ids}

        self._connection.execute(
            _WRITE_HOLD,
            {
                **_slot_changes({i: (locked[i].slot, changed[i]) for i in account_ids}),
                "plan_id": plan_id,
                "nets": [after[i] for i in account_ids],
                "batch_id": batch.id,
                "from_ids": [p.from_id for p in batch.postings],
                "to_ids": [p.to_id for p in batch.postings],
                "amounts": [p.amount for p in batch.postings],
                "currencies": [p.currency for p in batch.postings],
                "descriptions": [p.description for p in batch.postings],
            },
        )
        return {i: _account(i, rows[i], totals[i]) for i in whole}

    def commit_plan(self, plan_id: str, now: datetime) -> list[int]:
        """Moves the plan's held nets into own amounts; committing twice is a no-op.

        Returns the plan's accounts. Commit and rollback are the procedure pm_finish_plan
        (migration 0005), the one the payouts' changes call too.
        """
        return self._finish(plan_id, PlanStatus.COMMITTED, now)

    def rollback_plan(self, plan_id: str, now: datetime) -> list[int]:
        """Drops the plan's holds; rolling back twice is a no-op. Returns the plan's accounts."""
        return self._finish(plan_id, PlanStatus.ROLLED_BACK, now)

    def get_plan(self, plan_id: str) -> Plan:
        check_plan_id(plan_id)
        status = self._connection.execute(
            select(posting_plan.c.status).where(posting_plan.c.id == plan_id)
        ).scalar_one_or_none()
        if status is None:
            raise Refusal(Reason.PLAN_NOT_FOUND, f"plan {plan_id} does not exist")
        batches = tuple(Batch(id_, postings) for id_, postings in sorted(self._batches(plan_id).items()))
        return Plan(plan_id, PlanStatus(status), batches)

    def _finish(self, plan_id: str, target: PlanStatus, now: datetime) -> list[int]:
        check_plan_id(plan_id)
        try:
            rows = self._connection.exec_driver_sql(
                "SELECT * FROM pm_finish_plan(%s, %s, %s)", (plan_id, target.value, now)
            )
            return [account_id for (account_id,) in rows]
        except DBAPIError as error:
            refusal = procedures.refused(error.orig) if isinstance(error.orig, psycopg2.Error) else None
            if refusal is None:
                raise
            raise refusal from None

    def _lock_plan(self, plan_id: str) -> PlanStatus:
        status = self._connection.execute(_LOCK_PLAN, {"plan_id": plan_id}).scalar_one_or_none()
        if status is None:
            raise Refusal(Reason.PLAN_NOT_FOUND, f"plan {plan_id} does not exist")
        return PlanStatus(status)

    def _lock_whole(
        self, account_ids: list[int], pinned: Mapping[int, int]
    ) -> tuple[dict[int, _Locked], dict[int, Row[Any]]]:
        """Locks every slot of the accounts, waiting; the slot to change is the pinned one or the lowest.

        Also returns a row of each account, with its currency, description and created_at.
        """
        if not account_ids:
            return {}, {}
        slots: dict[int, dict[int, Balance]] = {}
        rows: dict[int, Row[Any]] = {}
        for row in self._connection.execute(_LOCK_WHOLE, {"ids": account_ids}):
            slots.setdefault(row.account_id, {})[row.slot] = _slot_balance(row.account_id, row.currency, row)
            rows[row.account_id] = row
        locked = {}
        for account_id, balances in slots.items():
            slot = pinned.get(account_id, min(balances))
            others = [b for s, b in balances.items() if s != slot]
            balance = balances[slot]
            locked[account_id] = _Locked(slot, balance, rules.combined(account_id, balance.currency, others))
        return locked, rows

    def _lock_free_slots(self, account_ids: list[int]) -> dict[int, _Locked]:
        """Locks one free slot of each account without waiting; makes a slot where none is free."""
        if not account_ids:
            return {}
        locked = {}
        for row in self._connection.execute(_LOCK_FREE_SLOTS, {"ids": account_ids}):
            total = Balance(
                row.account_id,
                row.currency,
                _int(row.total_own),
                _int(row.total_debit),
                _int(row.total_credit),
            )
            if row.slot is not None:
                balance = _slot_balance(row.account_id, row.currency, row)
                locked[row.account_id] = _Locked(row.slot, balance, _minus(total, balance))
            else:
                locked[row.account_id] = self._another_slot(row.account_id, row.currency, total, row.slots)
        return locked

    def _another_slot(self, account_id: int, currency: str, total: Balance, slots: int) -> _Locked:
        """Every slot of the account is locked: a new one, or past MAX_SLOTS a wait for any one."""
        if slots < MAX_SLOTS:
            for _ in range(_NEW_SLOT_ATTEMPTS):
                slot = self._connection.execute(
                    _NEW_SLOT, {"id": account_id, "slot": random.randrange(1, 2**15)}
                ).scalar_one_or_none()
                if slot is not None:
                    return _Locked(slot, Balance(account_id, currency, 0, 0, 0), total)
        row = self._connection.execute(_WAIT_FOR_ANY_SLOT, {"id": account_id}).one()
        balance = _slot_balance(account_id, currency, row)
        return _Locked(row.slot, balance, _minus(total, balance))

    def _plan_nets(self, plan_id: str) -> dict[int, _Net]:
        rows = self._connection.execute(_PLAN_NETS, {"plan_id": plan_id})
        return {row.account_id: _Net(row.slot, row.net) for row in rows}

    def _batches(self, plan_id: str) -> dict[int, tuple[Posting, ...]]:
        rows = self._connection.execute(
            select(posting)
            .where(posting.c.plan_id == plan_id)
            .order_by(posting.c.batch_id, posting.c.position)
        )
        batches: dict[int, list[Posting]] = {}
        for row in rows:
            batches.setdefault(row.batch_id, []).append(
                Posting(row.from_id, row.to_id, row.amount, row.currency, row.description)
            )
        return {id_: tuple(postings) for id_, postings in batches.items()}


def _slot_changes(changes: Mapping[int, tuple[int, Balance]]) -> dict[str, list[int]]:
    """The parameters of _SLOT_CHANGES: each account's changed slot and its new balance."""
    return {
        "account_ids": list(changes),
        "slots": [slot for slot, _ in changes.values()],
        "own": [b.own_amount for _, b in changes.values()],
        "debit": [b.held_debit for _, b in changes.values()],
        "credit": [b.held_credit for _, b in changes.values()],
    }


def _minus(total: Balance, part: Balance) -> Balance:
    return Balance(
        total.account_id,
        total.currency,
        total.own_amount - part.own_amount,
        total.held_debit - part.held_debit,
        total.held_credit - part.held_credit,
    )


def _in_int64(account_id: int, value: int | Decimal) -> int:
    amount = int(value)
    if not rules.INT64_MIN <= amount <= rules.INT64_MAX:
        raise Refusal(
            Reason.AMOUNT_OUT_OF_RANGE,
            f"account {account_id}'s balance is beyond the int64 range of minor units",
        )
    return amount
