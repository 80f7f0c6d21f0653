"""QuotePayout (SPEC 1.1): what a create would hold now, by the same PartyManagement call and rules,
holding, storing and publishing nothing; and with the create's refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from support.books import stored_rows
from support.events import Stack, records_on_topic
from support.payouts import Stub, create, refusal, violated_fields

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.world import PLAIN_TERMS, Shop, World

INT64_MAX = 2**63 - 1
# A refusal as a test compares it: (code, ErrorInfo reason) and the fields it names.
Answer = tuple[tuple[grpc.StatusCode, str], list[str]]


def quote(payouts: Stub, shop: Shop, amount: int, currency: str = "RUB", tool: str = "") -> pb.PayoutQuote:
    return payouts.QuotePayout(
        pb.QuotePayoutRequest(
            party_id=shop.party_id,
            shop_id=shop.shop_id,
            cash=party_pb.Cash(amount=amount, currency=currency),
            payout_tool_id=tool,
        )
    )


def test_a_quote_and_an_immediate_create_agree_and_the_quote_changes_nothing(
    payouts: Stub, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=50_000)
    system = world.system_settlement()
    accounts = (shop.settlement, shop.guarantee, shop.payout, system)
    balances = [world.balance(a) for a in accounts]
    before = stored_rows(database_url)

    quoted = quote(payouts, shop, 20_000)

    # Nothing held, stored or queued for the topic: every account of its cash flow as it was.
    assert {a for p in quoted.cash_flow for a in (p.source.account_id, p.destination.account_id)} <= set(
        accounts
    )
    assert [world.balance(a) for a in accounts] == balances
    assert stored_rows(database_url) == before
    assert (quoted.amount, quoted.fee, quoted.available_amount, quoted.sufficient) == (
        20_000,
        200,
        50_000,
        True,
    )

    made = create(payouts, shop.party_id, shop.shop_id, 20_000)
    assert (made.amount, made.fee, made.payout_tool_id) == (quoted.amount, quoted.fee, quoted.payout_tool_id)
    assert list(made.cash_flow) == list(quoted.cash_flow)
    # The create holds what the quote said it would: its net debit of the settlement account.
    assert world.balance(shop.settlement).min_available_amount == 50_000 - 20_200
    assert quote(payouts, shop, 20_000).available_amount == 50_000 - 20_200


def test_sufficient_is_exact_at_the_boundary_and_agrees_with_the_create(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_100)  # exactly 10_000 plus its 1% fee

    enough = quote(payouts, shop, 10_000)
    short = quote(payouts, shop, 10_001)

    assert (enough.sufficient, enough.available_amount) == (True, 10_100)
    assert (short.sufficient, short.available_amount) == (False, 10_100)
    with pytest.raises(grpc.RpcError) as refused:
        create(payouts, shop.party_id, shop.shop_id, 10_001)
    assert refusal(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert create(payouts, shop.party_id, shop.shop_id, 10_000).status == pb.PAYOUT_STATUS_UNPAID
    assert quote(payouts, shop, 1).sufficient is False


def test_a_quote_is_refused_exactly_as_the_create_would_be(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    blocked_party = world.add_shop(funds=10_000, party_blocked=True)
    blocked_shop = world.add_shop(funds=10_000, shop_blocked=True)
    fixed_fee = {"source": "merchant.payout", "destination": "system.settlement", "volume": {"fixed": 500}}
    eaten = world.add_shop(funds=10_000, terms=[*PLAIN_TERMS, fixed_fee])
    # The ledger's refusals of the create's hold: a settlement account in dollars, or none at all.
    dollars = world.add_shop(settlement=world.account("USD"))
    missing = world.add_shop(settlement=10**15)

    def both(call: Callable[[Stub, bool], object]) -> tuple[Answer, Answer]:
        answers: list[Answer] = []
        for quoting in (True, False):
            with pytest.raises(grpc.RpcError) as refused:
                call(payouts, quoting)
            answers.append((refusal(refused.value), violated_fields(refused.value)))
        return answers[0], answers[1]

    def asking(
        party_id: str, shop_id: str, amount: int | None, currency: str = "RUB", tool: str = ""
    ) -> Callable[[Stub, bool], object]:
        def call(stub: Stub, quoting: bool) -> object:
            cash = None if amount is None else party_pb.Cash(amount=amount, currency=currency)
            if quoting:
                return stub.QuotePayout(
                    pb.QuotePayoutRequest(party_id=party_id, shop_id=shop_id, cash=cash, payout_tool_id=tool)
                )
            return stub.CreatePayout(
                pb.CreatePayoutRequest(party_id=party_id, shop_id=shop_id, cash=cash, payout_tool_id=tool)
            )

        return call

    code = grpc.StatusCode
    cases = {
        "unknown party": (asking("no-such-party", shop.shop_id, 100), (code.NOT_FOUND, "PARTY_NOT_FOUND")),
        "unknown shop": (asking(shop.party_id, "no-such-shop", 100), (code.NOT_FOUND, "SHOP_NOT_FOUND")),
        "unknown tool": (
            asking(shop.party_id, shop.shop_id, 100, tool="nope"),
            (code.NOT_FOUND, "PAYOUT_TOOL_NOT_FOUND"),
        ),
        "blocked party": (
            asking(blocked_party.party_id, blocked_party.shop_id, 100),
            (code.FAILED_PRECONDITION, "PARTY_BLOCKED"),
        ),
        "blocked shop": (
            asking(blocked_shop.party_id, blocked_shop.shop_id, 100),
            (code.FAILED_PRECONDITION, "SHOP_BLOCKED"),
        ),
        "other currency": (
            asking(shop.party_id, shop.shop_id, 100, currency="USD"),
            (code.INVALID_ARGUMENT, "CURRENCY_MISMATCH"),
        ),
        "bad currency": (
            asking(shop.party_id, shop.shop_id, 100, currency="rub"),
            (code.INVALID_ARGUMENT, "INVALID_REQUEST"),
        ),
        "no amount": (asking(shop.party_id, shop.shop_id, 0), (code.INVALID_ARGUMENT, "INVALID_REQUEST")),
        "no cash": (asking(shop.party_id, shop.shop_id, None), (code.INVALID_ARGUMENT, "INVALID_REQUEST")),
        "no party": (asking("", shop.shop_id, 100), (code.INVALID_ARGUMENT, "INVALID_REQUEST")),
        "fees eat the amount": (
            asking(eaten.party_id, eaten.shop_id, 500),
            (code.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        ),
        "past int64": (
            asking(shop.party_id, shop.shop_id, INT64_MAX),
            (code.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE"),
        ),
        "settlement in dollars": (
            asking(dollars.party_id, dollars.shop_id, 100),
            (code.INVALID_ARGUMENT, "CURRENCY_MISMATCH"),
        ),
        "no settlement account": (
            asking(missing.party_id, missing.shop_id, 100),
            (code.NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        ),
    }
    for name, (call, expected) in cases.items():
        quoted, created = both(call)
        assert quoted == created, name
        assert quoted[0] == expected, name
    for account in (shop, blocked_party, blocked_shop, eaten):
        assert world.balance(account.settlement).min_available_amount == 10_000


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def test_quotes_put_nothing_on_the_topic(stack: Stack) -> None:
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=10_000)

    first = create(served.payouts, shop.party_id, shop.shop_id, 1_000)
    for amount in (1_000, 8_900, 9_000, INT64_MAX // 2):
        quote(served.payouts, shop, amount)
    second = create(served.payouts, shop.party_id, shop.shop_id, 1_000)

    # Once the two creates' events are on the topic (the relay publishes in order), it holds
    # nothing else: the quotes between them published nothing.
    stack.published({first.payout_id: 1, second.payout_id: 1})
    assert records_on_topic(stack.bootstrap_servers, stack.topic) == 2
