"""Malformed and random requests to every RPC: none gets INTERNAL or UNKNOWN, none changes a balance.

Every property runs against the real server. Before each one, a funded shop, a shop with two
cancelled payouts, two plans that are finished and the accounts behind them exist; the random
requests may name them, but always with something wrong, so no legitimate call can move money, and
after every example their balances must be exactly what they were.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.books import stored_rows
from support.strategies import (
    INT64_MAX,
    INT64_MIN,
    enum_numbers,
    int32s,
    int64s,
    long_texts,
    raw_requests,
    short_texts,
    string_maps,
    texts,
    timestamps,
)

from payout_manager.payouts import listing
from payout_manager.proto.accounter.v1 import accounter_pb2 as acc_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.world import Shop, World

Payouts = payout_manager_pb2_grpc.PayoutManagementStub
Accounter = accounter_pb2_grpc.AccounterStub
Request = TypeVar("Request", bound=Message)

DOMAIN = "payout-manager"
# The codes a refusal of bad input may carry. UNAVAILABLE / PARTY_MANAGEMENT_UNAVAILABLE is legal
# in general, but with PartyManagement up it would hide a failure, so it is not accepted here.
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
FUNDS = 1_000_000
CURRENCY = "RUB"
TOOLS = ("", "tool-1", "tool-2")
CALL_TIMEOUT = 30.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024 - 1024
EXAMPLES = 100
RAW_EXAMPLES = 50


@dataclass(frozen=True)
class Known:
    """What exists before the random requests, and the accounts whose balances must not move."""

    shop: Shop
    spent_shop: Shop
    payout_ids: tuple[str, ...]
    page_token: str
    plan_ids: tuple[str, ...]
    accounts: tuple[int, ...]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # How Hypothesis shows this fixture in a failing example: briefly.
        printer.text(f"Known(shop={self.shop.shop_id!r}, spent_shop={self.spent_shop.shop_id!r})")


def _finished_plan(accounter: Accounter, source: int, target: int, *, commit: bool) -> str:
    plan_id = f"bad-input-{uuid.uuid4()}"
    posting = acc_pb.Posting(from_id=source, to_id=target, amount=1, currency=CURRENCY)
    accounter.Hold(acc_pb.HoldRequest(plan_id=plan_id, batch=acc_pb.PostingBatch(id=1, postings=[posting])))
    if commit:
        accounter.CommitPlan(acc_pb.CommitPlanRequest(plan_id=plan_id))
    else:
        accounter.RollbackPlan(acc_pb.RollbackPlanRequest(plan_id=plan_id))
    return plan_id


@pytest.fixture(scope="module")
def known(world: World, payouts: Payouts, accounter: Accounter) -> Known:
    shop = world.add_shop(funds=FUNDS)
    spent_shop = world.add_shop(funds=FUNDS)
    payout_ids = []
    for amount in (1_000, 2_000):
        payout_id = f"bad-input-{uuid.uuid4()}"
        payouts.CreatePayout(
            pb.CreatePayoutRequest(
                payout_id=payout_id,
                party_id=spent_shop.party_id,
                shop_id=spent_shop.shop_id,
                cash=party_pb.Cash(amount=amount, currency=CURRENCY),
                metadata={"purpose": "bad input"},
            )
        )
        payouts.CancelPayout(pb.CancelPayoutRequest(payout_id=payout_id, details="to be poked at"))
        payout_ids.append(payout_id)
    page = payouts.ListPayouts(
        pb.ListPayoutsRequest(party_id=spent_shop.party_id, shop_id=spent_shop.shop_id, page_size=1)
    )
    assert page.next_page_token, "two payouts in pages of one must leave a next page"
    source, target = world.account(CURRENCY, "bad input source"), world.account(CURRENCY, "bad input target")
    plan_ids = (
        _finished_plan(accounter, source, target, commit=True),
        _finished_plan(accounter, source, target, commit=False),
    )
    accounts = (
        shop.settlement,
        shop.guarantee,
        shop.payout,
        spent_shop.settlement,
        spent_shop.guarantee,
        spent_shop.payout,
        source,
        target,
        world.system_settlement(CURRENCY),
    )
    return Known(shop, spent_shop, tuple(payout_ids), page.next_page_token, plan_ids, accounts)


Balances = tuple[tuple[int, int, int, int], ...]


def balances(accounter: Accounter, known: Known) -> Balances:
    """Own, min and max available amounts of every known account."""
    accounts = (
        accounter.GetAccount(acc_pb.GetAccountRequest(account_id=account_id), timeout=CALL_TIMEOUT)
        for account_id in known.accounts
    )
    return tuple((a.id, a.own_amount, a.min_available_amount, a.max_available_amount) for a in accounts)


def assert_proper_refusal(error: grpc.RpcError) -> None:
    """A refusal of bad input: an expected code, one ErrorInfo of our domain, BadRequest if invalid."""
    code = error.code()
    # One assertion per kind of failure, so that Hypothesis reports each kind as a bug of its own.
    assert code is not grpc.StatusCode.INTERNAL, f"INTERNAL: {error.details()!r}"
    assert code is not grpc.StatusCode.UNKNOWN, f"UNKNOWN: {error.details()!r}"
    assert code in REFUSAL_CODES, f"refused with {code.name}: {error.details()!r}"
    status = rpc_status.from_call(error)
    assert status is not None, f"{code.name} without a google.rpc.Status: {error.details()!r}"
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert [info.domain for info in infos] == [DOMAIN], f"ErrorInfo details of {code.name}: {infos}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in status.details), (
            f"INVALID_ARGUMENT/{infos[0].reason} without a BadRequest"
        )


def assert_handled(call: Callable[[], object]) -> None:
    """The call succeeds or is refused properly; any other failure is a bug of the server."""
    try:
        call()
    except grpc.RpcError as error:
        assert_proper_refusal(error)


@dataclass(frozen=True)
class Books:
    """The known accounts' balances when a test began."""

    accounter: Accounter
    known: Known
    before: Balances

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Books(before={self.before})")

    def assert_unchanged(self) -> None:
        assert balances(self.accounter, self.known) == self.before, (
            "a refused or harmless request moved money"
        )


@pytest.fixture
def books(accounter: Accounter, known: Known) -> Books:
    return Books(accounter, known, balances(accounter, known))


# `books` is taken once per test, not per example, on purpose: every example of a test is checked
# against the balances from before the first one.
properties = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def prove_survives(
    data: st.DataObject,
    requests: st.SearchStrategy[Request],
    rpc: grpc.UnaryUnaryMultiCallable[Request, Any],
    books: Books,
) -> None:
    """Sends one random request to `rpc`: handled, and no known balance moved."""
    request = data.draw(requests, label="request")
    # gRPC refuses a request over its message size limit itself, before the service sees it.
    assume(request.ByteSize() < MAX_REQUEST_BYTES)
    assert_handled(lambda: rpc(request, timeout=CALL_TIMEOUT))
    books.assert_unchanged()


# Strategies for the requests of each RPC. Parties and shops of tests are named `party-...` and
# `shop-...`; random ones never start so, so that PartyManagement knows none of them.


def unknown_party_ids() -> st.SearchStrategy[str]:
    return texts().filter(lambda text: not text.startswith("party-"))


def unknown_shop_ids() -> st.SearchStrategy[str]:
    return texts().filter(lambda text: not text.startswith("shop-"))


def payout_ids(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(texts(), st.sampled_from(known.payout_ids))


def plan_ids(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(texts(), st.sampled_from(known.plan_ids))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy's values, or None: the sub-message is missing."""
    return st.one_of(st.none(), strategy)


def cash() -> st.SearchStrategy[party_pb.Cash]:
    return st.builds(party_pb.Cash, amount=int64s(), currency=st.one_of(st.just(CURRENCY), texts()))


def _without_nul(text: str) -> bool:
    return "\x00" not in text


def _has_nul(text: str) -> str:
    return f"{text}\x00"


def bad_texts(max_length: int) -> st.SearchStrategy[str]:
    """Text that no field limited to `max_length` characters accepts: too long, or with NUL."""
    return st.one_of(st.builds(_has_nul, short_texts()), long_texts().filter(lambda t: len(t) > max_length))


def _poison_create(request: pb.CreatePayoutRequest, draw: st.DrawFn) -> None:
    """Makes an otherwise valid create for the funded shop invalid, in one of many ways."""
    poison = draw(st.integers(0, 9))
    if poison == 0:
        request.cash.amount = draw(st.one_of(st.just(0), st.integers(INT64_MIN, 0)))
    elif poison == 1:
        request.ClearField("cash")
    elif poison == 2:
        request.cash.currency = draw(
            st.one_of(st.sampled_from(["USD", "EUR", "rub"]), texts()).filter(
                lambda currency: currency != CURRENCY
            )
        )
    elif poison == 3:
        # More than the shop has: refused for funds, or for leaving int64 near the top.
        request.cash.amount = draw(st.one_of(st.integers(FUNDS + 1, INT64_MAX), st.just(INT64_MAX)))
    elif poison == 4:
        request.metadata.clear()
        request.metadata.update({f"key{index}": "value" for index in range(draw(st.integers(33, 2000)))})
    elif poison == 5:
        request.metadata[draw(st.one_of(st.just(""), bad_texts(256)))] = draw(short_texts())
    elif poison == 6:
        request.metadata[draw(st.text(min_size=1, max_size=10).filter(_without_nul))] = draw(bad_texts(256))
    elif poison == 7:
        request.payout_id = draw(bad_texts(64))
    elif poison == 8:
        request.payout_tool_id = draw(
            st.one_of(bad_texts(64), texts().filter(lambda tool: tool not in TOOLS))
        )
    else:
        request.shop_id = draw(unknown_shop_ids())


@st.composite
def poisoned_creates(draw: st.DrawFn, known: Known) -> pb.CreatePayoutRequest:
    request = pb.CreatePayoutRequest(
        payout_id=draw(payout_ids(known)),
        party_id=known.shop.party_id,
        shop_id=known.shop.shop_id,
        cash=party_pb.Cash(amount=draw(st.integers(1, FUNDS // 2)), currency=CURRENCY),
        payout_tool_id=draw(st.sampled_from(TOOLS)),
        metadata=draw(
            st.dictionaries(
                st.text(min_size=1, max_size=8).filter(_without_nul),
                st.text(max_size=8).filter(_without_nul),
                max_size=4,
            )
        ),
    )
    _poison_create(request, draw)
    return request


def create_payout_requests(known: Known) -> st.SearchStrategy[pb.CreatePayoutRequest]:
    def random_create(party_ids: st.SearchStrategy[str]) -> st.SearchStrategy[pb.CreatePayoutRequest]:
        return st.builds(
            pb.CreatePayoutRequest,
            payout_id=payout_ids(known),
            party_id=party_ids,
            shop_id=unknown_shop_ids(),
            cash=optional(cash()),
            payout_tool_id=texts(),
            metadata=string_maps(),
        )

    return st.one_of(
        random_create(unknown_party_ids()),
        random_create(st.sampled_from([known.shop.party_id, known.spent_shop.party_id])),
        poisoned_creates(known),
    )


def get_payout_requests(known: Known) -> st.SearchStrategy[pb.GetPayoutRequest]:
    revisions = st.one_of(st.sampled_from([0, 1, 2, 3]), int64s())
    return st.builds(pb.GetPayoutRequest, payout_id=payout_ids(known), revision=revisions)


def confirm_payout_requests(known: Known) -> st.SearchStrategy[pb.ConfirmPayoutRequest]:
    return st.builds(pb.ConfirmPayoutRequest, payout_id=payout_ids(known))


def cancel_payout_requests(known: Known) -> st.SearchStrategy[pb.CancelPayoutRequest]:
    return st.builds(pb.CancelPayoutRequest, payout_id=payout_ids(known), details=texts())


def mark_payout_paid_requests(known: Known) -> st.SearchStrategy[pb.MarkPayoutPaidRequest]:
    return st.builds(pb.MarkPayoutPaidRequest, payout_id=payout_ids(known))


def fail_payout_requests(known: Known) -> st.SearchStrategy[pb.FailPayoutRequest]:
    failures = st.builds(
        pb.PayoutFailure, code=enum_numbers(list(pb.PayoutFailureCode.values())), details=texts()
    )
    return st.builds(pb.FailPayoutRequest, payout_id=payout_ids(known), failure=optional(failures))


def quote_payout_requests(known: Known) -> st.SearchStrategy[pb.QuotePayoutRequest]:
    """Quotes as random as the creates: any party, shop, cash and payout tool."""
    return st.builds(
        pb.QuotePayoutRequest,
        party_id=st.one_of(st.sampled_from([known.shop.party_id, known.spent_shop.party_id]), texts()),
        shop_id=st.one_of(st.sampled_from([known.shop.shop_id, known.spent_shop.shop_id]), texts()),
        cash=optional(
            st.builds(
                party_pb.Cash,
                amount=st.one_of(st.integers(0, FUNDS * 2), int64s()),
                currency=st.one_of(st.just(CURRENCY), texts()),
            )
        ),
        payout_tool_id=st.one_of(st.just(""), texts()),
    )


def _copies(value: Any, count: int) -> list[Any]:
    return [value] * count


_STATUSES = list(pb.PayoutStatus.values())


def statuses() -> st.SearchStrategy[list[int]]:
    return st.one_of(
        st.lists(enum_numbers(_STATUSES), max_size=8),
        st.builds(_copies, enum_numbers(_STATUSES), st.integers(50, 5000)),
    )


def _token(data: object) -> str:
    """`data` framed as the server frames a page token, checksum included."""
    return listing.seal(base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("="))


def _tampered(token: str, changes: dict[str, object], dropped: list[str]) -> str:
    """A real page token with its fields replaced or removed, framed as the server frames them."""
    body = token.rpartition(".")[0]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data.update(changes)
    for key in dropped:
        data.pop(key, None)
    return _token(data)


_JSON_ODDITIES: list[object] = [
    None,
    True,
    False,
    [],
    {},
    1.5,
    float("nan"),
    10**30,
    -(10**30),
    "\ud800",
    "\x00",
]


def json_values() -> st.SearchStrategy[object]:
    return st.one_of(st.sampled_from(_JSON_ODDITIES), int64s(), st.integers(), texts(), st.floats())


def page_tokens(known: Known) -> st.SearchStrategy[str]:
    """Garbage, well-framed forgeries, and the known shop's real token with its fields tampered."""
    forged = st.builds(
        _token,
        st.fixed_dictionaries({}, optional={"t": json_values(), "id": json_values(), "f": json_values()}),
    )
    tampered = st.builds(
        _tampered,
        st.just(known.page_token),
        st.fixed_dictionaries({}, optional={"t": json_values(), "id": json_values()}),
        st.lists(st.sampled_from(["t", "id", "f"]), max_size=1),
    )
    return st.one_of(texts(), forged, tampered, st.just(known.page_token))


def list_payouts_requests(known: Known) -> st.SearchStrategy[pb.ListPayoutsRequest]:
    spent = known.spent_shop
    anything = st.builds(
        pb.ListPayoutsRequest,
        party_id=st.one_of(texts(), st.just(spent.party_id)),
        shop_id=st.one_of(texts(), st.just(spent.shop_id)),
        statuses=statuses(),
        created_from=optional(timestamps()),
        created_to=optional(timestamps()),
        page_size=int32s(),
        page_token=page_tokens(known),
    )
    # Only with the filters it was made for does a (tampered) token get past its fingerprint.
    same_filters = st.builds(
        pb.ListPayoutsRequest,
        party_id=st.just(spent.party_id),
        shop_id=st.just(spent.shop_id),
        page_size=int32s(),
        page_token=page_tokens(known),
    )
    return st.one_of(anything, same_filters)


def get_payout_events_requests(known: Known) -> st.SearchStrategy[pb.GetPayoutEventsRequest]:
    return st.builds(
        pb.GetPayoutEventsRequest, payout_id=payout_ids(known), after_sequence_id=int64s(), limit=int32s()
    )


def create_account_requests(known: Known) -> st.SearchStrategy[acc_pb.CreateAccountRequest]:
    currencies = st.one_of(st.sampled_from(["RUB", "USD", "XXX"]), texts())
    return st.builds(acc_pb.CreateAccountRequest, currency=currencies, description=texts())


def account_ids(known: Known) -> st.SearchStrategy[int]:
    return st.one_of(int64s(), st.sampled_from(known.accounts))


def get_account_requests(known: Known) -> st.SearchStrategy[acc_pb.GetAccountRequest]:
    return st.builds(acc_pb.GetAccountRequest, account_id=account_ids(known), at=optional(timestamps()))


def unknown_account_ids() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, -1, INT64_MIN, INT64_MAX]),
        st.integers(INT64_MIN, 0),
        st.integers(10**15, INT64_MAX),
    )


def _posting(
    from_id: int, to_id: int, amount: int, currency: str, description: str, swap: bool
) -> acc_pb.Posting:
    if swap:
        from_id, to_id = to_id, from_id
    return acc_pb.Posting(
        from_id=from_id, to_id=to_id, amount=amount, currency=currency, description=description
    )


def postings_to_unknown_accounts(known: Known) -> st.SearchStrategy[acc_pb.Posting]:
    return st.builds(
        _posting,
        unknown_account_ids(),
        st.one_of(unknown_account_ids(), st.sampled_from(known.accounts)),
        int64s(),
        st.one_of(st.just(CURRENCY), texts()),
        texts(),
        st.booleans(),
    )


@st.composite
def invalid_postings_between_known_accounts(draw: st.DrawFn, known: Known) -> acc_pb.Posting:
    accounts = st.sampled_from(known.accounts)
    posting = acc_pb.Posting(
        from_id=draw(accounts),
        to_id=draw(accounts),
        amount=draw(st.one_of(st.integers(0, FUNDS), int64s())),
        currency=draw(st.one_of(st.just(CURRENCY), texts())),
        description=draw(short_texts()),
    )
    poison = draw(st.integers(0, 3))
    if poison == 0:
        posting.to_id = posting.from_id
    elif poison == 1:
        posting.amount = draw(st.integers(INT64_MIN, -1))
    elif poison == 2:
        posting.currency = draw(
            st.one_of(st.sampled_from(["USD", "rub", ""]), texts()).filter(lambda c: c != CURRENCY)
        )
    else:
        posting.description = draw(bad_texts(1024))
    return posting


def hold_requests(known: Known) -> st.SearchStrategy[acc_pb.HoldRequest]:
    """Holds that cannot succeed: every posting names an unknown account or is invalid itself."""
    posting = st.one_of(postings_to_unknown_accounts(known), invalid_postings_between_known_accounts(known))
    postings = st.one_of(st.lists(posting, max_size=6), st.builds(_copies, posting, st.integers(90, 150)))
    batch = st.builds(acc_pb.PostingBatch, id=int64s(), postings=postings)
    return st.builds(acc_pb.HoldRequest, plan_id=plan_ids(known), batch=optional(batch))


def commit_plan_requests(known: Known) -> st.SearchStrategy[acc_pb.CommitPlanRequest]:
    return st.builds(acc_pb.CommitPlanRequest, plan_id=plan_ids(known))


def rollback_plan_requests(known: Known) -> st.SearchStrategy[acc_pb.RollbackPlanRequest]:
    return st.builds(acc_pb.RollbackPlanRequest, plan_id=plan_ids(known))


def get_plan_requests(known: Known) -> st.SearchStrategy[acc_pb.GetPlanRequest]:
    return st.builds(acc_pb.GetPlanRequest, plan_id=plan_ids(known))


# PayoutManagement


@properties
@given(data=st.data())
def test_create_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, create_payout_requests(known), payouts.CreatePayout, books)


@properties
@given(data=st.data())
def test_get_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, get_payout_requests(known), payouts.GetPayout, books)


@properties
@given(data=st.data())
def test_confirm_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, confirm_payout_requests(known), payouts.ConfirmPayout, books)


@properties
@given(data=st.data())
def test_cancel_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, cancel_payout_requests(known), payouts.CancelPayout, books)


@properties
@given(data=st.data())
def test_mark_payout_paid_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, mark_payout_paid_requests(known), payouts.MarkPayoutPaid, books)


@properties
@given(data=st.data())
def test_fail_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, fail_payout_requests(known), payouts.FailPayout, books)


@properties
@given(data=st.data())
def test_quote_payout_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, database_url: str, data: st.DataObject
) -> None:
    stored = stored_rows(database_url)
    prove_survives(data, quote_payout_requests(known), payouts.QuotePayout, books)
    # Answered or refused, a quote stores nothing: no payout, event, outbox row or plan.
    assert stored_rows(database_url) == stored


@properties
@given(data=st.data())
def test_list_payouts_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, list_payouts_requests(known), payouts.ListPayouts, books)


@properties
@given(data=st.data())
def test_get_payout_events_survives_random_requests(
    payouts: Payouts, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, get_payout_events_requests(known), payouts.GetPayoutEvents, books)


# Accounter


@properties
@given(data=st.data())
def test_create_account_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, create_account_requests(known), accounter.CreateAccount, books)


@properties
@given(data=st.data())
def test_get_account_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, get_account_requests(known), accounter.GetAccount, books)


@properties
@given(data=st.data())
def test_hold_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, hold_requests(known), accounter.Hold, books)


@properties
@given(data=st.data())
def test_commit_plan_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, commit_plan_requests(known), accounter.CommitPlan, books)


@properties
@given(data=st.data())
def test_rollback_plan_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, rollback_plan_requests(known), accounter.RollbackPlan, books)


@properties
@given(data=st.data())
def test_get_plan_survives_random_requests(
    accounter: Accounter, known: Known, books: Books, data: st.DataObject
) -> None:
    prove_survives(data, get_plan_requests(known), accounter.GetPlan, books)


# Raw bytes where a serialized request belongs


METHODS = [
    f"/{service.full_name}/{method.name}"
    for service in (
        pb.DESCRIPTOR.services_by_name["PayoutManagement"],
        acc_pb.DESCRIPTOR.services_by_name["Accounter"],
    )
    for method in service.methods
]


@pytest.mark.parametrize("method", METHODS)
@settings(
    max_examples=RAW_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=raw_requests())
def test_raw_bytes_are_handled_or_refused_as_malformed(
    channel: grpc.Channel, books: Books, method: str, raw: bytes
) -> None:
    # No serializers: the bytes go on the wire as they are, and come back as bytes.
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    assert_handled(lambda: rpc(raw, timeout=CALL_TIMEOUT))
    books.assert_unchanged()


def test_the_properties_cover_every_rpc() -> None:
    assert len(METHODS) == 15
    tested = {name.removeprefix("test_").removesuffix("_survives_random_requests") for name in globals()}
    for method in METHODS:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in method.rsplit("/", 1)[1]).lstrip("_")
        assert snake in tested, f"no property test for {method}"


# Requests the properties above found mishandled, pinned so that each fails (or passes) every time:
# a property that finds one of them again may shrink it to a different request.


def _many_bad_postings() -> acc_pb.HoldRequest:
    posting = acc_pb.Posting(from_id=1, to_id=1, amount=-1, currency="rub")
    return acc_pb.HoldRequest(plan_id="bad", batch=acc_pb.PostingBatch(id=1, postings=[posting] * 100))


def _many_long_metadata_keys() -> pb.CreatePayoutRequest:
    return pb.CreatePayoutRequest(
        party_id="no-such-party",
        shop_id="no-such-shop",
        cash=party_pb.Cash(amount=1, currency=CURRENCY),
        metadata={f"{'k' * 257}{index}": "v" for index in range(33)},
    )


FOUND_BY_THE_PROPERTIES = [
    pytest.param(
        "GetAccount",
        acc_pb.GetAccountRequest(account_id=1, at=Timestamp(seconds=10**14)),
        id="get-account-at-beyond-timedelta",
    ),
    pytest.param(
        "ListPayouts",
        pb.ListPayoutsRequest(created_from=Timestamp(seconds=INT64_MIN)),
        id="list-payouts-created-from-int64-min",
    ),
    pytest.param(
        "ListPayouts",
        pb.ListPayoutsRequest(statuses=[pb.PAYOUT_STATUS_UNSPECIFIED] * 100),
        id="list-payouts-100-unknown-statuses",
    ),
    pytest.param("Hold", _many_bad_postings(), id="hold-100-invalid-postings"),
    pytest.param("CreatePayout", _many_long_metadata_keys(), id="create-payout-33-long-metadata-keys"),
]


@pytest.mark.parametrize(("method", "request_"), FOUND_BY_THE_PROPERTIES)
def test_requests_found_by_the_properties_are_refused_properly(
    payouts: Payouts, accounter: Accounter, books: Books, method: str, request_: Message
) -> None:
    stub = accounter if hasattr(accounter, method) else payouts
    assert_handled(lambda: getattr(stub, method)(request_, timeout=CALL_TIMEOUT))
    books.assert_unchanged()


def test_a_page_token_naming_an_unencodable_payout_id_is_refused(
    payouts: Payouts, known: Known, books: Books
) -> None:
    spent = known.spent_shop
    # JSON may escape a lone surrogate, which no UTF-8 text (and no PostgreSQL query) can carry.
    token = _tampered(known.page_token, {"id": "\ud800"}, [])
    request = pb.ListPayoutsRequest(party_id=spent.party_id, shop_id=spent.shop_id, page_token=token)
    assert_handled(lambda: payouts.ListPayouts(request, timeout=CALL_TIMEOUT))
    books.assert_unchanged()
