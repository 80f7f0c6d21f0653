"""accounter.v1.Accounter over real gRPC on real PostgreSQL (SPEC 1.2 and 2).

Every test makes its own accounts and plan ids, so tests share the database without seeing each
other. Past balances are read at moments taken from the server's own clock: the creation time of a
marker account made between two steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payout_manager.proto.accounter.v1 import accounter_pb2 as pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc

Stub = accounter_pb2_grpc.AccounterStub

INT64_MAX = 2**63 - 1
UNKNOWN_ACCOUNT = INT64_MAX
DOMAIN = "payout-manager"

# (own_amount, min_available_amount, max_available_amount)
Balances = tuple[int, int, int]


@dataclass(frozen=True)
class Refused:
    """A refusal as a caller sees it: status code, ErrorInfo and BadRequest field violations."""

    code: grpc.StatusCode
    reason: str
    domain: str
    fields: tuple[str, ...]
    has_bad_request: bool


def refused(call: Callable[[], object]) -> Refused:
    """Runs `call`, which must fail with a gRPC status, and reads the status's details."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} carries no google.rpc.Status: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    has_info = has_bad_request = False
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            has_info = detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            has_bad_request = detail.Unpack(bad_request)
    assert has_info, f"{error.code()} carries no ErrorInfo"
    return Refused(
        code=error.code(),
        reason=info.reason,
        domain=info.domain,
        fields=tuple(v.field for v in bad_request.field_violations),
        has_bad_request=has_bad_request,
    )


def assert_refused(result: Refused, code: grpc.StatusCode, reason: str) -> None:
    assert (result.code, result.reason, result.domain) == (code, reason, DOMAIN)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert result.has_bad_request, "INVALID_ARGUMENT without google.rpc.BadRequest"


def new_account(accounter: Stub, currency: str = "RUB", description: str = "test") -> int:
    account: pb.Account = accounter.CreateAccount(
        pb.CreateAccountRequest(currency=currency, description=description)
    )
    return account.id


def server_now(accounter: Stub) -> Timestamp:
    """A moment from the server's clock, strictly after every change that already returned."""
    marker: pb.Account = accounter.CreateAccount(pb.CreateAccountRequest(currency="RUB", description="clock"))
    return marker.creation_time


def posting(
    from_id: int, to_id: int, amount: int, currency: str = "RUB", description: str = ""
) -> pb.Posting:
    return pb.Posting(from_id=from_id, to_id=to_id, amount=amount, currency=currency, description=description)


def hold(accounter: Stub, plan_id: str, batch_id: int, *postings: pb.Posting) -> pb.PostingPlanLog:
    log: pb.PostingPlanLog = accounter.Hold(
        pb.HoldRequest(plan_id=plan_id, batch=pb.PostingBatch(id=batch_id, postings=postings))
    )
    return log


def commit(accounter: Stub, plan_id: str) -> pb.PostingPlanLog:
    log: pb.PostingPlanLog = accounter.CommitPlan(pb.CommitPlanRequest(plan_id=plan_id))
    return log


def rollback(accounter: Stub, plan_id: str) -> pb.PostingPlanLog:
    log: pb.PostingPlanLog = accounter.RollbackPlan(pb.RollbackPlanRequest(plan_id=plan_id))
    return log


def get_plan(accounter: Stub, plan_id: str) -> pb.PostingPlan:
    plan: pb.PostingPlan = accounter.GetPlan(pb.GetPlanRequest(plan_id=plan_id))
    return plan


def account(accounter: Stub, account_id: int, at: Timestamp | None = None) -> pb.Account:
    found: pb.Account = accounter.GetAccount(pb.GetAccountRequest(account_id=account_id, at=at))
    return found


def balances_of(found: pb.Account) -> Balances:
    return (found.own_amount, found.min_available_amount, found.max_available_amount)


def balances(accounter: Stub, account_id: int, at: Timestamp | None = None) -> Balances:
    return balances_of(account(accounter, account_id, at))


def snapshot(accounter: Stub, account_ids: Sequence[int]) -> dict[int, Balances]:
    return {id_: balances(accounter, id_) for id_ in account_ids}


def new_plan_id() -> str:
    return f"test_{uuid.uuid4()}"


def assert_plan_missing(accounter: Stub, plan_id: str) -> None:
    assert_refused(refused(lambda: get_plan(accounter, plan_id)), grpc.StatusCode.NOT_FOUND, "PLAN_NOT_FOUND")


# --- CreateAccount and GetAccount -------------------------------------------------------------


def test_created_account_is_empty_in_its_currency(accounter: Stub) -> None:
    before = server_now(accounter)

    created: pb.Account = accounter.CreateAccount(
        pb.CreateAccountRequest(currency="USD", description="merchant settlement")
    )

    assert (created.currency, created.description) == ("USD", "merchant settlement")
    assert balances_of(created) == (0, 0, 0)
    assert created.creation_time.ToDatetime() > before.ToDatetime()
    assert account(accounter, created.id) == created


def test_created_accounts_get_distinct_ids(accounter: Stub) -> None:
    ids = {new_account(accounter) for _ in range(5)}

    assert len(ids) == 5


@pytest.mark.parametrize("currency", ["", "rub", "Rub", "RU", "RUBL", "R1B", "RU ", "ÄÖÜ", "R\x00B"])
def test_create_account_refuses_a_currency_that_is_not_three_upper_case_letters(
    accounter: Stub, currency: str
) -> None:
    result = refused(lambda: accounter.CreateAccount(pb.CreateAccountRequest(currency=currency)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert result.fields == ("currency",)


@pytest.mark.parametrize("account_id", [UNKNOWN_ACCOUNT, 0, -1])
def test_get_unknown_account_is_not_found(accounter: Stub, account_id: int) -> None:
    result = refused(lambda: account(accounter, account_id))

    assert_refused(result, grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


# --- Hold, commit, rollback -------------------------------------------------------------------


def test_hold_changes_no_own_amount_and_widens_the_available_range(accounter: Stub) -> None:
    source, destination = new_account(accounter), new_account(accounter)

    log = hold(accounter, new_plan_id(), 1, posting(source, destination, 100))

    assert balances(accounter, source) == (0, -100, 0)
    assert balances(accounter, destination) == (0, 0, 100)
    assert {id_: balances_of(a) for id_, a in log.affected_accounts.items()} == {
        source: (0, -100, 0),
        destination: (0, 0, 100),
    }


def test_commit_moves_the_nets_into_own_amounts_and_removes_the_hold(accounter: Stub) -> None:
    source, destination = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(source, destination, 100))

    log = commit(accounter, plan_id)

    assert balances(accounter, source) == (-100, -100, -100)
    assert balances(accounter, destination) == (100, 100, 100)
    assert {id_: balances_of(a) for id_, a in log.affected_accounts.items()} == {
        source: (-100, -100, -100),
        destination: (100, 100, 100),
    }
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_COMMITTED


def test_rollback_removes_the_hold_and_moves_nothing(accounter: Stub) -> None:
    source, destination = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(source, destination, 100))

    log = rollback(accounter, plan_id)

    assert balances(accounter, source) == (0, 0, 0)
    assert balances(accounter, destination) == (0, 0, 0)
    assert set(log.affected_accounts) == {source, destination}
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_ROLLED_BACK


def test_commit_keeps_the_holds_of_other_plans(accounter: Stub) -> None:
    source, destination = new_account(accounter), new_account(accounter)
    committed, still_held = new_plan_id(), new_plan_id()
    hold(accounter, committed, 1, posting(source, destination, 100))
    hold(accounter, still_held, 1, posting(source, destination, 40))

    commit(accounter, committed)

    assert balances(accounter, source) == (-100, -140, -100)
    assert balances(accounter, destination) == (100, 100, 140)


def test_a_plan_holds_the_combined_net_of_its_batches(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()

    hold(accounter, plan_id, 1, posting(a, b, 100))
    hold(accounter, plan_id, 2, posting(b, a, 30))

    assert balances(accounter, a) == (0, -70, 0)
    assert balances(accounter, b) == (0, 0, 70)
    commit(accounter, plan_id)
    assert balances(accounter, a) == (-70, -70, -70)
    assert balances(accounter, b) == (70, 70, 70)


def test_separate_plans_hold_their_debits_and_credits_separately(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)

    hold(accounter, new_plan_id(), 1, posting(a, b, 100))
    hold(accounter, new_plan_id(), 1, posting(b, a, 30))

    assert balances(accounter, a) == (0, -100, 30)
    assert balances(accounter, b) == (0, -30, 100)


def test_get_plan_returns_the_batches_in_id_order_and_the_status(accounter: Stub) -> None:
    a, b, c = new_account(accounter), new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    first = [posting(a, b, 100, description="payout"), posting(a, c, 5, description="fee")]
    second = [posting(b, a, 30, description="refund")]
    hold(accounter, plan_id, 3, *first)
    hold(accounter, plan_id, 7, *second)

    plan = get_plan(accounter, plan_id)

    assert plan.id == plan_id
    assert plan.status == pb.POSTING_PLAN_STATUS_HOLD
    assert [(batch.id, list(batch.postings)) for batch in plan.batches] == [(3, first), (7, second)]


def test_get_unknown_plan_is_not_found(accounter: Stub) -> None:
    assert_plan_missing(accounter, new_plan_id())


def test_batch_held_again_with_the_same_postings_is_a_no_op(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100, description="payout"))

    log = hold(accounter, plan_id, 1, posting(a, b, 100, description="payout"))

    assert balances(accounter, a) == (0, -100, 0)
    assert balances(accounter, b) == (0, 0, 100)
    assert {id_: balances_of(found) for id_, found in log.affected_accounts.items()} == {
        a: (0, -100, 0),
        b: (0, 0, 100),
    }
    assert [batch.id for batch in get_plan(accounter, plan_id).batches] == [1]
    commit(accounter, plan_id)
    assert balances(accounter, b) == (100, 100, 100)


def test_an_earlier_batch_held_again_with_the_same_postings_is_a_no_op(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    hold(accounter, plan_id, 2, posting(b, a, 30))

    hold(accounter, plan_id, 1, posting(a, b, 100))

    assert balances(accounter, a) == (0, -70, 0)
    assert [batch.id for batch in get_plan(accounter, plan_id).batches] == [1, 2]


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda a, b: [posting(a, b, 101)], id="other amount"),
        pytest.param(lambda a, b: [posting(b, a, 100)], id="other direction"),
        pytest.param(lambda a, b: [posting(a, b, 100, description="other")], id="other description"),
        pytest.param(lambda a, b: [posting(a, b, 100), posting(a, b, 100)], id="extra posting"),
        pytest.param(lambda a, b: [posting(a, b, 60), posting(a, b, 40)], id="same net, split"),
    ],
)
def test_batch_held_again_with_other_postings_is_refused(
    accounter: Stub, other: Callable[[int, int], list[pb.Posting]]
) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    plan_before = get_plan(accounter, plan_id)

    result = refused(lambda: hold(accounter, plan_id, 1, *other(a, b)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "POSTINGS_MISMATCH")
    assert result.fields == ("batch.postings",)
    assert snapshot(accounter, [a, b]) == {a: (0, -100, 0), b: (0, 0, 100)}
    assert get_plan(accounter, plan_id) == plan_before


def test_batch_id_below_the_last_held_is_refused(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 5, posting(a, b, 100))

    result = refused(lambda: hold(accounter, plan_id, 4, posting(b, a, 30)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert result.fields == ("batch.id",)
    assert snapshot(accounter, [a, b]) == {a: (0, -100, 0), b: (0, 0, 100)}
    assert [batch.id for batch in get_plan(accounter, plan_id).batches] == [5]


def test_commit_twice_is_a_no_op(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    commit(accounter, plan_id)

    log = commit(accounter, plan_id)

    assert snapshot(accounter, [a, b]) == {a: (-100, -100, -100), b: (100, 100, 100)}
    assert {id_: balances_of(found) for id_, found in log.affected_accounts.items()} == {
        a: (-100, -100, -100),
        b: (100, 100, 100),
    }
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_COMMITTED


def test_rollback_twice_is_a_no_op(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    rollback(accounter, plan_id)

    rollback(accounter, plan_id)

    assert snapshot(accounter, [a, b]) == {a: (0, 0, 0), b: (0, 0, 0)}
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_ROLLED_BACK


def test_commit_after_rollback_is_refused(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    rollback(accounter, plan_id)

    result = refused(lambda: commit(accounter, plan_id))

    assert_refused(result, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_PLAN_STATE")
    assert snapshot(accounter, [a, b]) == {a: (0, 0, 0), b: (0, 0, 0)}
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_ROLLED_BACK


def test_rollback_after_commit_is_refused(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    commit(accounter, plan_id)

    result = refused(lambda: rollback(accounter, plan_id))

    assert_refused(result, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_PLAN_STATE")
    assert snapshot(accounter, [a, b]) == {a: (-100, -100, -100), b: (100, 100, 100)}
    assert get_plan(accounter, plan_id).status == pb.POSTING_PLAN_STATUS_COMMITTED


@pytest.mark.parametrize("finish", [commit, rollback], ids=["committed", "rolled back"])
@pytest.mark.parametrize("batch_id", [1, 2], ids=["same batch again", "next batch"])
def test_hold_on_a_finished_plan_is_refused(
    accounter: Stub, finish: Callable[[Stub, str], pb.PostingPlanLog], batch_id: int
) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    finish(accounter, plan_id)
    before = snapshot(accounter, [a, b])
    plan_before = get_plan(accounter, plan_id)

    result = refused(lambda: hold(accounter, plan_id, batch_id, posting(a, b, 100)))

    assert_refused(result, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_PLAN_STATE")
    assert snapshot(accounter, [a, b]) == before
    assert get_plan(accounter, plan_id) == plan_before


@pytest.mark.parametrize("finish", [commit, rollback], ids=["commit", "rollback"])
def test_finishing_an_unknown_plan_is_not_found(
    accounter: Stub, finish: Callable[[Stub, str], pb.PostingPlanLog]
) -> None:
    plan_id = new_plan_id()

    result = refused(lambda: finish(accounter, plan_id))

    assert_refused(result, grpc.StatusCode.NOT_FOUND, "PLAN_NOT_FOUND")
    assert_plan_missing(accounter, plan_id)


# --- Refused postings: nothing changes --------------------------------------------------------


@dataclass(frozen=True)
class BadBatch:
    """A batch the accounter must refuse, next to a good posting that must not go through either."""

    code: grpc.StatusCode
    reason: str
    postings: Callable[[int, int, int], list[pb.Posting]]  # (a, b, usd) -> postings; a and b in RUB


BAD_BATCHES = [
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            lambda a, b, usd: [posting(a, b, 10), posting(a, a, 5)],
        ),
        id="from_id == to_id",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            lambda a, b, usd: [posting(a, b, 10), posting(a, b, -5)],
        ),
        id="negative amount",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
            lambda a, b, usd: [posting(a, b, 10), posting(a, UNKNOWN_ACCOUNT, 5)],
        ),
        id="unknown destination",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
            lambda a, b, usd: [posting(a, b, 10), posting(UNKNOWN_ACCOUNT, b, 5)],
        ),
        id="unknown source",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            lambda a, b, usd: [posting(a, b, 10), posting(a, b, 5, currency="USD")],
        ),
        id="currency other than both accounts'",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            lambda a, b, usd: [posting(a, b, 10), posting(a, usd, 5, currency="RUB")],
        ),
        id="currency other than the destination's",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            lambda a, b, usd: [posting(a, b, 10), posting(usd, b, 5, currency="USD")],
        ),
        id="currency other than the destination's, source matching",
    ),
    pytest.param(
        BadBatch(
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            lambda a, b, usd: [posting(a, b, 10), posting(a, b, 5, currency="rub")],
        ),
        id="malformed currency",
    ),
    pytest.param(
        BadBatch(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", lambda a, b, usd: []),
        id="empty batch",
    ),
]


@pytest.mark.parametrize("bad", BAD_BATCHES)
def test_refused_batch_of_a_new_plan_changes_nothing(accounter: Stub, bad: BadBatch) -> None:
    a, b, usd = new_account(accounter), new_account(accounter), new_account(accounter, "USD")
    plan_id = new_plan_id()

    result = refused(lambda: hold(accounter, plan_id, 1, *bad.postings(a, b, usd)))

    assert_refused(result, bad.code, bad.reason)
    assert snapshot(accounter, [a, b, usd]) == {a: (0, 0, 0), b: (0, 0, 0), usd: (0, 0, 0)}
    assert_plan_missing(accounter, plan_id)


@pytest.mark.parametrize("bad", BAD_BATCHES)
def test_refused_batch_of_an_open_plan_changes_nothing(accounter: Stub, bad: BadBatch) -> None:
    a, b, usd = new_account(accounter), new_account(accounter), new_account(accounter, "USD")
    plan_id = new_plan_id()
    hold(accounter, plan_id, 1, posting(a, b, 100))
    plan_before = get_plan(accounter, plan_id)

    result = refused(lambda: hold(accounter, plan_id, 2, *bad.postings(a, b, usd)))

    assert_refused(result, bad.code, bad.reason)
    assert snapshot(accounter, [a, b, usd]) == {a: (0, -100, 0), b: (0, 0, 100), usd: (0, 0, 0)}
    assert get_plan(accounter, plan_id) == plan_before


def test_refused_posting_names_the_offending_field(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)

    result = refused(
        lambda: hold(accounter, new_plan_id(), 1, posting(a, b, 10), posting(b, b, 5), posting(a, b, -1))
    )

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert set(result.fields) == {"batch.postings[1].to_id", "batch.postings[2].amount"}


def test_currency_mismatch_names_the_posting_currency(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)

    result = refused(lambda: hold(accounter, new_plan_id(), 1, posting(a, b, 10), posting(a, b, 5, "USD")))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    assert result.fields == ("batch.postings[1].currency",)


def test_hold_without_a_batch_is_refused(accounter: Stub) -> None:
    plan_id = new_plan_id()

    result = refused(lambda: accounter.Hold(pb.HoldRequest(plan_id=plan_id)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert result.fields == ("batch",)
    assert_plan_missing(accounter, plan_id)


def test_hold_without_a_plan_id_is_refused(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)

    result = refused(lambda: hold(accounter, "", 1, posting(a, b, 10)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert result.fields == ("plan_id",)
    assert snapshot(accounter, [a, b]) == {a: (0, 0, 0), b: (0, 0, 0)}


# --- Balances in the past ---------------------------------------------------------------------


def test_get_account_at_a_past_moment_returns_the_balances_of_then(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    created = server_now(accounter)
    first, second = new_plan_id(), new_plan_id()
    hold(accounter, first, 1, posting(a, b, 100))
    held = server_now(accounter)
    commit(accounter, first)
    committed = server_now(accounter)
    hold(accounter, second, 1, posting(b, a, 30))
    held_again = server_now(accounter)
    rollback(accounter, second)

    assert balances(accounter, a, at=created) == (0, 0, 0)
    assert balances(accounter, a, at=held) == (0, -100, 0)
    assert balances(accounter, a, at=committed) == (-100, -100, -100)
    assert balances(accounter, a, at=held_again) == (-100, -100, -70)
    assert balances(accounter, b, at=held_again) == (100, 70, 100)
    assert balances(accounter, a) == (-100, -100, -100)


def test_get_account_at_a_past_moment_keeps_its_identity(accounter: Stub) -> None:
    created: pb.Account = accounter.CreateAccount(
        pb.CreateAccountRequest(currency="EUR", description="history")
    )
    moment = server_now(accounter)
    hold(accounter, new_plan_id(), 1, posting(created.id, new_account(accounter, "EUR"), 5, "EUR"))

    then = account(accounter, created.id, at=moment)

    assert (then.id, then.currency, then.description, then.creation_time) == (
        created.id,
        "EUR",
        "history",
        created.creation_time,
    )
    assert balances_of(then) == (0, 0, 0)


def test_get_account_at_a_future_moment_returns_the_current_balances(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    hold(accounter, new_plan_id(), 1, posting(a, b, 100))
    future = Timestamp()
    future.FromDatetime(server_now(accounter).ToDatetime() + timedelta(days=365))

    assert balances(accounter, a, at=future) == (0, -100, 0)


def test_get_account_at_a_moment_before_it_existed_is_not_found(accounter: Stub) -> None:
    before = server_now(accounter)
    account_id = new_account(accounter)

    result = refused(lambda: account(accounter, account_id, at=before))

    assert_refused(result, grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


def test_get_account_at_the_epoch_is_not_found(accounter: Stub) -> None:
    account_id = new_account(accounter)

    result = refused(lambda: account(accounter, account_id, at=Timestamp(seconds=0)))

    assert_refused(result, grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


@pytest.mark.parametrize(
    ("moment", "field"),
    [
        (Timestamp(seconds=0, nanos=-1), "at.nanos"),
        (Timestamp(seconds=0, nanos=1_000_000_000), "at.nanos"),
        (Timestamp(seconds=-(10**12)), "at"),
        (Timestamp(seconds=10**12), "at"),
    ],
    ids=["negative nanos", "nanos of a whole second", "before year 1", "after year 9999"],
)
def test_get_account_at_a_malformed_moment_is_refused(accounter: Stub, moment: Timestamp, field: str) -> None:
    account_id = new_account(accounter)

    result = refused(lambda: account(accounter, account_id, at=moment))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert result.fields == (field,)


# --- Funds, double entry, int64 ---------------------------------------------------------------


def test_accounter_lets_a_source_account_go_negative(accounter: Stub) -> None:
    funding, merchant = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()

    hold(accounter, plan_id, 1, posting(funding, merchant, 1_000_000))
    commit(accounter, plan_id)

    assert balances(accounter, funding) == (-1_000_000, -1_000_000, -1_000_000)
    assert balances(accounter, merchant) == (1_000_000, 1_000_000, 1_000_000)


def test_own_amounts_sum_to_zero_after_commits(accounter: Stub) -> None:
    a, b, c, d = (new_account(accounter) for _ in range(4))
    committed = [new_plan_id() for _ in range(3)]
    hold(accounter, committed[0], 1, posting(a, b, 1_000), posting(a, c, 250))
    hold(accounter, committed[0], 2, posting(b, d, 400))
    hold(accounter, committed[1], 1, posting(c, a, 75), posting(d, b, 10))
    hold(accounter, committed[2], 1, posting(b, c, 333))
    rolled_back = new_plan_id()
    hold(accounter, rolled_back, 1, posting(d, a, 999))
    open_plan = new_plan_id()
    hold(accounter, open_plan, 1, posting(c, d, 42))

    for plan_id in committed:
        commit(accounter, plan_id)
    rollback(accounter, rolled_back)

    own = {id_: found[0] for id_, found in snapshot(accounter, [a, b, c, d]).items()}
    assert own == {a: -1_175, b: 277, c: 508, d: 390}
    assert sum(own.values()) == 0


def test_holds_of_many_plans_at_once_all_count(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_ids = [new_plan_id() for _ in range(20)]

    def hold_and_commit(plan_id: str) -> None:
        hold(accounter, plan_id, 1, posting(a, b, 10))
        commit(accounter, plan_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(hold_and_commit, plan_ids))

    assert snapshot(accounter, [a, b]) == {a: (-200, -200, -200), b: (200, 200, 200)}


def test_one_batch_held_by_many_callers_at_once_is_held_once(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: hold(accounter, plan_id, 1, posting(a, b, 10)), range(8)))

    assert snapshot(accounter, [a, b]) == {a: (0, -10, 0), b: (0, 0, 10)}
    assert len(get_plan(accounter, plan_id).batches) == 1


def test_hold_overflowing_a_credit_is_refused_and_changes_nothing(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    funding = new_plan_id()
    hold(accounter, funding, 1, posting(a, b, INT64_MAX))
    commit(accounter, funding)
    plan_id = new_plan_id()

    result = refused(lambda: hold(accounter, plan_id, 1, posting(a, b, 1)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE")
    assert snapshot(accounter, [a, b]) == {a: (-INT64_MAX, -INT64_MAX, -INT64_MAX), b: (INT64_MAX,) * 3}
    assert_plan_missing(accounter, plan_id)


def test_hold_overflowing_a_debit_is_refused_and_changes_nothing(accounter: Stub) -> None:
    a, b, c = new_account(accounter), new_account(accounter), new_account(accounter)
    funding = new_plan_id()
    hold(accounter, funding, 1, posting(a, b, INT64_MAX))
    commit(accounter, funding)
    at_the_edge = new_plan_id()
    hold(accounter, at_the_edge, 1, posting(a, c, 1))  # min_available reaches exactly -2**63
    plan_id = new_plan_id()

    result = refused(lambda: hold(accounter, plan_id, 1, posting(a, c, 1)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE")
    assert balances(accounter, a) == (-INT64_MAX, -(2**63), -INT64_MAX)
    assert balances(accounter, c) == (0, 0, 1)
    assert_plan_missing(accounter, plan_id)


def test_batch_whose_net_overflows_is_refused_and_changes_nothing(accounter: Stub) -> None:
    a, b = new_account(accounter), new_account(accounter)
    plan_id = new_plan_id()

    result = refused(lambda: hold(accounter, plan_id, 1, posting(a, b, INT64_MAX), posting(a, b, INT64_MAX)))

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE")
    assert snapshot(accounter, [a, b]) == {a: (0, 0, 0), b: (0, 0, 0)}
    assert_plan_missing(accounter, plan_id)


def test_amount_out_of_range_names_the_offending_field(accounter: Stub) -> None:
    """SPEC 2: INVALID_ARGUMENT carries BadRequest field violations, so the caller sees what to fix."""
    a, b = new_account(accounter), new_account(accounter)

    result = refused(
        lambda: hold(accounter, new_plan_id(), 1, posting(a, b, INT64_MAX), posting(a, b, INT64_MAX))
    )

    assert_refused(result, grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE")
    assert result.fields, "AMOUNT_OUT_OF_RANGE carries a BadRequest without any field violation"
