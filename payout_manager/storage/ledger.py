"""The ledger's SQL: accounts, posting plans and their balances, inside the caller's transaction.

Accounts are locked in ascending id order, always, so two plans touching the same accounts queue
instead of deadlocking. Balances are computed in Python from the locked rows (exact integers) and
written back, with a row in `account_balance` for every change so past balances can be read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from payout_manager.accounting import rules
from payout_manager.accounting.rules import Account, Balance, Batch, Plan, PlanStatus, Posting
from payout_manager.errors import FieldViolation, Reason, Refusal, invalid
from payout_manager.storage.tables import (
    account,
    account_balance,
    posting,
    posting_plan,
    posting_plan_account,
)


def _account(row: Row[Any], balance: Balance | None = None) -> Account:
    balance = balance or _balance(row)
    return Account(
        id=row.id,
        currency=row.currency,
        description=row.description,
        creation_time=row.created_at,
        own_amount=balance.own_amount,
        min_available_amount=balance.min_available_amount,
        max_available_amount=balance.max_available_amount,
    )


def _balance(row: Row[Any]) -> Balance:
    return Balance(row.id, row.currency, row.own_amount, row.held_debit, row.held_credit)


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
            .values(
                currency=currency,
                description=description,
                created_at=func.clock_timestamp(),
                own_amount=0,
                held_debit=0,
                held_credit=0,
            )
            .returning(*account.c)
        ).one()
        created = _account(row)
        self._log_balances([_balance(row)], at=row.created_at)
        return created

    def get_account(self, account_id: int, at: datetime | None = None) -> Account:
        """The account now, or with its balances as they were at `at`."""
        row = self._connection.execute(select(account).where(account.c.id == account_id)).first()
        if row is None:
            raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
        if at is None:
            return _account(row)
        past = self._connection.execute(
            select(account_balance)
            .where(account_balance.c.account_id == account_id, account_balance.c.at <= at)
            .order_by(account_balance.c.at.desc(), account_balance.c.id.desc())
            .limit(1)
        ).first()
        if past is None:
            raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {account_id} did not exist at {at.isoformat()}")
        return Account(
            id=row.id,
            currency=row.currency,
            description=row.description,
            creation_time=row.created_at,
            own_amount=past.own_amount,
            min_available_amount=past.min_available_amount,
            max_available_amount=past.max_available_amount,
        )

    def accounts(self, account_ids: Iterable[int]) -> dict[int, Account]:
        rows = self._connection.execute(select(account).where(account.c.id.in_(sorted(set(account_ids)))))
        return {row.id: _account(row) for row in rows}

    def hold(self, plan_id: str, batch: Batch, now: datetime) -> dict[int, Account]:
        """Holds `batch` in plan `plan_id`, creating the plan; a replayed batch is a no-op."""
        rules.check_batch(plan_id, batch)
        created = (
            self._connection.execute(
                pg_insert(posting_plan)
                .values(id=plan_id, status=PlanStatus.HOLD.value, created_at=now, updated_at=now)
                .on_conflict_do_nothing()
                .returning(posting_plan.c.id)
            ).first()
            is not None
        )
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
                return self.accounts(self._plan_nets(plan_id))
            if held and batch.id < max(held):
                raise invalid([FieldViolation("batch.id", f"must be above {max(held)}, the last batch held")])

        account_ids = sorted({p.from_id for p in batch.postings} | {p.to_id for p in batch.postings})
        locked = self._lock_accounts(account_ids)
        rules.check_accounts(batch.postings, {id_: _balance(row) for id_, row in locked.items()})
        before = {} if created else self._plan_nets(plan_id)
        batch_net = rules.net_by_account(batch.postings)
        after = {id_: before.get(id_, 0) + batch_net.get(id_, 0) for id_ in account_ids}
        balances = {
            id_: rules.hold(_balance(locked[id_]), before.get(id_, 0), after[id_]) for id_ in account_ids
        }

        self._connection.execute(
            insert(posting),
            [
                {
                    "plan_id": plan_id,
                    "batch_id": batch.id,
                    "position": position,
                    "from_id": p.from_id,
                    "to_id": p.to_id,
                    "amount": p.amount,
                    "currency": p.currency,
                    "description": p.description,
                }
                for position, p in enumerate(batch.postings)
            ],
        )
        upsert = pg_insert(posting_plan_account)
        self._connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[posting_plan_account.c.plan_id, posting_plan_account.c.account_id],
                set_={"net": upsert.excluded.net},
            ),
            [{"plan_id": plan_id, "account_id": id_, "net": net} for id_, net in after.items()],
        )
        self._write_balances(balances.values())
        return {id_: _account(locked[id_], balances[id_]) for id_ in account_ids}

    def commit_plan(self, plan_id: str, now: datetime) -> dict[int, Account]:
        """Moves the plan's held nets into own amounts; committing twice is a no-op."""
        return self._finish(plan_id, PlanStatus.COMMITTED, now)

    def rollback_plan(self, plan_id: str, now: datetime) -> dict[int, Account]:
        """Drops the plan's holds; rolling back twice is a no-op."""
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

    def _finish(self, plan_id: str, target: PlanStatus, now: datetime) -> dict[int, Account]:
        check_plan_id(plan_id)
        status = self._lock_plan(plan_id)
        nets = self._plan_nets(plan_id)
        if status is target:
            return self.accounts(nets)
        if status is not PlanStatus.HOLD:
            raise Refusal(
                Reason.INVALID_PLAN_STATE,
                f"plan {plan_id} is {status.value}; it cannot become {target.value}",
            )
        apply = rules.commit if target is PlanStatus.COMMITTED else rules.rollback
        locked = self._lock_accounts(sorted(nets))
        balances = {id_: apply(_balance(locked[id_]), net) for id_, net in nets.items()}
        self._write_balances(balances.values())
        self._connection.execute(
            update(posting_plan)
            .where(posting_plan.c.id == plan_id)
            .values(status=target.value, updated_at=now)
        )
        return {id_: _account(locked[id_], balances[id_]) for id_ in sorted(nets)}

    def _lock_plan(self, plan_id: str) -> PlanStatus:
        status = self._connection.execute(
            select(posting_plan.c.status).where(posting_plan.c.id == plan_id).with_for_update()
        ).scalar_one_or_none()
        if status is None:
            raise Refusal(Reason.PLAN_NOT_FOUND, f"plan {plan_id} does not exist")
        return PlanStatus(status)

    def _lock_accounts(self, account_ids: Collection[int]) -> dict[int, Row[Any]]:
        rows = self._connection.execute(
            select(account).where(account.c.id.in_(account_ids)).order_by(account.c.id).with_for_update()
        )
        return {row.id: row for row in rows}

    def _plan_nets(self, plan_id: str) -> dict[int, int]:
        rows = self._connection.execute(
            select(posting_plan_account.c.account_id, posting_plan_account.c.net).where(
                posting_plan_account.c.plan_id == plan_id
            )
        )
        return {row.account_id: row.net for row in rows}

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

    def _write_balances(self, balances: Iterable[Balance]) -> None:
        balances = list(balances)
        if not balances:
            return
        self._connection.execute(
            update(account)
            .where(account.c.id == bindparam("b_id"))
            .values(
                own_amount=bindparam("b_own"),
                held_debit=bindparam("b_debit"),
                held_credit=bindparam("b_credit"),
            ),
            [
                {
                    "b_id": b.account_id,
                    "b_own": b.own_amount,
                    "b_debit": b.held_debit,
                    "b_credit": b.held_credit,
                }
                for b in balances
            ],
        )
        self._log_balances(balances, at=None)

    def _log_balances(self, balances: Iterable[Balance], at: datetime | None) -> None:
        # clock_timestamp(), taken while the account row is locked, orders one account's changes.
        self._connection.execute(
            insert(account_balance).values(at=at if at is not None else func.clock_timestamp()),
            [
                {
                    "account_id": b.account_id,
                    "own_amount": b.own_amount,
                    "min_available_amount": b.min_available_amount,
                    "max_available_amount": b.max_available_amount,
                }
                for b in balances
            ],
        )
