"""QuotePayout (SPEC 1.1): what a create would hold now, by the same PartyManagement call and rules,
holding, storing and publishing nothing; and with the create's refusals."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg2
import pytest
from support.books import dsn
from support.payouts import Stub, create, refusal, violated_fields

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.world import Shop, World


def quote(payouts: Stub, shop: Shop, amount: int, currency: str = "RUB", tool: str = "") -> pb.PayoutQuote:
    return payouts.QuotePayout(
        pb.QuotePayoutRequest(
            party_id=shop.party_id,
            shop_id=shop.shop_id,
            cash=party_pb.Cash(amount=amount, currency=currency),
            payout_tool_id=tool,
        )
    )


def stored(database_url: str) -> tuple[int, ...]:
    """Payouts, events, outbox rows and posting plans stored: what a quote must not add to."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM payout), (SELECT count(*) FROM payout_event),"
            " (SELECT count(*) FROM payout_event_outbox), (SELECT count(*) FROM posting_plan)"
        )
        row = cursor.fetchone()
    connection.close()
    assert row is not None
    return tuple(row)


def test_a_quote_and_an_immediate_create_agree_and_the_quote_changes_nothing(
    payouts: Stub, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=50_000)
    system = world.system_settlement()
    accounts = (shop.settlement, shop.guarantee, shop.payout, system)
    balances = [world.balance(a) for a in accounts]
    before = stored(database_url)

    quoted = quote(payouts, shop, 20_000)

    # Nothing held, stored or queued for the topic.
    assert [world.balance(a) for a in accounts] == balances
    assert stored(database_url) == before
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

    def both(call: Callable[[Stub, bool], object]) -> tuple[object, object]:
        answers = []
        for quoting in (True, False):
            with pytest.raises(grpc.RpcError) as refused:
                call(payouts, quoting)
            answers.append((refusal(refused.value), violated_fields(refused.value)))
        return answers[0], answers[1]

    def asking(
        party_id: str, shop_id: str, amount: int, currency: str = "RUB", tool: str = ""
    ) -> Callable[[Stub, bool], object]:
        def call(stub: Stub, quoting: bool) -> object:
            cash = party_pb.Cash(amount=amount, currency=currency)
            if quoting:
                return stub.QuotePayout(
                    pb.QuotePayoutRequest(party_id=party_id, shop_id=shop_id, cash=cash, payout_tool_id=tool)
                )
            return stub.CreatePayout(
                pb.CreatePayoutRequest(party_id=party_id, shop_id=shop_id, cash=cash, payout_tool_id=tool)
            )

        return call

    cases = {
        "unknown party": asking("no-such-party", shop.shop_id, 100),
        "unknown shop": asking(shop.party_id, "no-such-shop", 100),
        "unknown tool": asking(shop.party_id, shop.shop_id, 100, tool="nope"),
        "blocked party": asking(blocked_party.party_id, blocked_party.shop_id, 100),
        "blocked shop": asking(blocked_shop.party_id, blocked_shop.shop_id, 100),
        "other currency": asking(shop.party_id, shop.shop_id, 100, currency="USD"),
        "bad currency": asking(shop.party_id, shop.shop_id, 100, currency="rub"),
        "no amount": asking(shop.party_id, shop.shop_id, 0),
        "no party": asking("", shop.shop_id, 100),
    }
    for name, call in cases.items():
        quoted, created = both(call)
        assert quoted == created, name
    for account in (shop, blocked_party, blocked_shop):
        assert world.balance(account.settlement).min_available_amount == 10_000
