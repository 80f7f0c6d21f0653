"""accounter.v1.Accounter: the ledger for back-office funding and inspection (SPEC 1.2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from sqlalchemy import Connection

from payout_manager.access.caller import Caller
from payout_manager.accounting.rules import Account
from payout_manager.api import convert
from payout_manager.proto.accounter.v1 import accounter_pb2 as pb
from payout_manager.storage.database import Database
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.replica import Reads


class AccounterServicer:
    def __init__(
        self,
        database: Database,
        *,
        replica: Database | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`replica`: where `GetAccount` with `at` reads, when the replica has replayed past `at`."""
        self._database = database
        self._reads = Reads(database, replica)
        self._clock = clock

    def CreateAccount(
        self, request: pb.CreateAccountRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Account:
        account = self._database.transaction(
            lambda c: Ledger(c).create_account(request.currency, request.description)
        )
        return convert.account_to_proto(account)

    def GetAccount(
        self, request: pb.GetAccountRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Account:
        if not request.HasField("at"):
            account = self._database.transaction(lambda c: Ledger(c).get_account(request.account_id))
            return convert.account_to_proto(account)
        at = convert.moment("at", request.at)

        def past(connection: Connection) -> tuple[Account, datetime | None]:
            ledger = Ledger(connection)
            # First: the balance read after it is at least as recent as this moment.
            replayed = ledger.replayed_until()
            return ledger.get_account(request.account_id, at), replayed

        # From a replica only if it has replayed a commit made at `at` or later (None: a primary).
        # Without a transaction: each statement sees what was committed before it started, so the
        # balance, read after the replay mark, is at least as recent; and what a past moment's
        # balance is made of no longer changes. That is two round trips fewer than BEGIN ... COMMIT.
        account, _ = self._reads.stale(
            lambda database: database.read(past),
            settled=lambda answer: answer[1] is None or answer[1] >= at,
        )
        return convert.account_to_proto(account)

    def Hold(
        self, request: pb.HoldRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.PostingPlanLog:
        batch = convert.batch(request)
        accounts = self._database.transaction(lambda c: Ledger(c).hold(request.plan_id, batch, self._clock()))
        return convert.plan_log(accounts)

    def CommitPlan(
        self, request: pb.CommitPlanRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.PostingPlanLog:
        def commit(connection: Connection) -> dict[int, Account]:
            ledger = Ledger(connection)
            return ledger.accounts(ledger.commit_plan(request.plan_id, self._clock()))

        return convert.plan_log(self._database.transaction(commit))

    def RollbackPlan(
        self, request: pb.RollbackPlanRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.PostingPlanLog:
        def rollback(connection: Connection) -> dict[int, Account]:
            ledger = Ledger(connection)
            return ledger.accounts(ledger.rollback_plan(request.plan_id, self._clock()))

        return convert.plan_log(self._database.transaction(rollback))

    def GetPlan(
        self, request: pb.GetPlanRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.PostingPlan:
        plan = self._database.transaction(lambda c: Ledger(c).get_plan(request.plan_id))
        return convert.plan_to_proto(plan)
