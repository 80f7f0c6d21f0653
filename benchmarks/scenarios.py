"""The scenarios: each drives ghz against the stack and measures one row of the report.

Every payout takes 1000.00 RUB from a shop funded for far more than any run pays out, under the
realistic terms: each one also credits the one shared system settlement account with a fee.
The reads: a page of one shop's payouts, and the shared system settlement account's balances at
a past moment (whose history every payout adds to).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks import ghz
from benchmarks.ghz import Calls
from benchmarks.measure import Meter, Row, RssSamples
from benchmarks.stack import CURRENCY, HOT_SHOP

AMOUNT = "100000"
CREATE = "CreatePayout"
CONFIRM = "ConfirmPayout"
LIST = "ListPayouts"
GET_ACCOUNT = "GetAccount"
PAGE_SIZE = 100


def create_request(party_id: str, shop_id: str, payout_id: str = "") -> dict[str, Any]:
    """A CreatePayout request as ghz's JSON; without `payout_id` the server makes one."""
    request: dict[str, Any] = {
        "party_id": party_id,
        "shop_id": shop_id,
        "cash": {"amount": AMOUNT, "currency": CURRENCY},
    }
    if payout_id:
        request["payout_id"] = payout_id
    return request


@dataclass(frozen=True)
class Bench:
    target: ghz.Target
    meter: Meter
    # Shops party-0/shop-0 .. party-(shops-1)/shop-(shops-1), funded.
    shops: int

    def spread_shop(self) -> tuple[str, str]:
        """Party and shop ids whose ghz template makes request n go to shop n mod `shops`."""
        shop = f"{{{{mod .RequestNumber {self.shops}}}}}"
        return f"party-{shop}", f"shop-{shop}"

    def spread_request(self, payout_id: str = "") -> dict[str, Any]:
        """Request n goes to shop n mod `shops`."""
        return create_request(*self.spread_shop(), payout_id)


def _ok_of_last(calls: list[Calls]) -> int:
    return calls[-1].ok


def _creates(
    bench: Bench,
    name: str,
    request: dict[str, Any],
    *,
    in_flight: int,
    seconds: float,
    rss: RssSamples | None = None,
) -> Row:
    def load() -> list[Calls]:
        return [ghz.run(bench.target, CREATE, request, in_flight=in_flight, seconds=seconds)]

    return bench.meter.measure(name, in_flight, rss.during(load) if rss else load, _ok_of_last)


def create_over_shops(
    bench: Bench, name: str, *, in_flight: int, seconds: float, rss: RssSamples | None = None
) -> Row:
    """(a) CreatePayout, each call to the next of the shops in turn."""
    return _creates(bench, name, bench.spread_request(), in_flight=in_flight, seconds=seconds, rss=rss)


def create_then_confirm(bench: Bench, name: str, *, in_flight: int, seconds: float) -> Row:
    """(b) Creates for `seconds`, then confirms every payout created; payouts = those confirmed."""
    payout_id = "b-{{.RequestNumber}}"

    def load() -> list[Calls]:
        request = bench.spread_request(payout_id)
        created = ghz.run(bench.target, CREATE, request, in_flight=in_flight, seconds=seconds)
        confirmed = ghz.run(
            bench.target, CONFIRM, {"payout_id": payout_id}, in_flight=in_flight, total=created.count
        )
        return [created, confirmed]

    return bench.meter.measure(name, in_flight, load, _ok_of_last)


def hot_shop(bench: Bench, name: str, *, in_flight: int, seconds: float) -> Row:
    """(c) CreatePayout, every call to the one hot shop."""
    request = create_request(HOT_SHOP.party_id, HOT_SHOP.shop_id)
    return _creates(bench, name, request, in_flight=in_flight, seconds=seconds)


def _ok_calls(calls: list[Calls]) -> int:
    return sum(c.ok for c in calls)


def list_payouts(bench: Bench, name: str, *, in_flight: int, seconds: float) -> Row:
    """ListPayouts of one shop, a page of PAGE_SIZE, each call the next of the shops in turn.

    The row's payouts are the calls made (OK ones).
    """
    party_id, shop_id = bench.spread_shop()
    request = {"party_id": party_id, "shop_id": shop_id, "page_size": PAGE_SIZE}

    def load() -> list[Calls]:
        return [ghz.run(bench.target, LIST, request, in_flight=in_flight, seconds=seconds)]

    return bench.meter.measure(name, in_flight, load, _ok_calls)


def get_account_at(
    bench: Bench, name: str, account_id: int, at: datetime, *, in_flight: int, seconds: float
) -> Row:
    """Accounter.GetAccount of `account_id` with its balances `at` a past moment."""
    request = {"account_id": str(account_id), "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z")}

    def load() -> list[Calls]:
        return [
            ghz.run(
                bench.target,
                GET_ACCOUNT,
                request,
                in_flight=in_flight,
                seconds=seconds,
                service=ghz.ACCOUNTER,
            )
        ]

    return bench.meter.measure(name, in_flight, load, _ok_calls)
