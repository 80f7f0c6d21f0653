"""One-shot seeding of docker-compose.yml's fresh database: the accounts the PartyManagement config names.

The committed config (docker/party-management.json) names accounts 1, 2, ..., the ids a fresh database
gives out first. This creates them through `serve`'s Accounter API in the order of their ids, checks
each got the id the config gives it, then funds every shop's settlement account from a funding account
per currency (plan `demo-funding`). Once that plan is committed, running it again changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from clients.party_management import config as party_config
from payout_manager.proto.accounter.v1 import accounter_pb2 as pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc

PLAN_ID = "demo-funding"
# 1 000 000.00 in minor units on each shop's settlement account.
FUNDS = 100_000_000
READY_TIMEOUT = 30.0


class SeedError(Exception):
    """The database cannot be seeded as the config says; the message is the one line to print."""


def named_accounts(config: party_config.Config) -> dict[int, tuple[str, str]]:
    """Every account the config names: id -> (currency, description)."""
    named: dict[int, tuple[str, str]] = {}
    for currency, system in config.system_accounts.items():
        named[system.settlement] = (currency, f"system settlement {currency}")
        if system.subagent is not None:
            named[system.subagent] = (currency, f"system subagent {currency}")
    for party in config.parties.values():
        for shop in party.shops.values():
            accounts = shop.accounts
            for role, account_id in (
                ("settlement", accounts.settlement),
                ("guarantee", accounts.guarantee),
                ("payout", accounts.payout),
            ):
                named[account_id] = (shop.currency, f"{party.party_id}/{shop.shop_id} {role}")
    return named


def plan_status(stub: accounter_pb2_grpc.AccounterStub) -> pb.PostingPlanStatus.ValueType | None:
    """The funding plan's status, or None when there is no such plan yet."""
    try:
        return stub.GetPlan(pb.GetPlanRequest(plan_id=PLAN_ID)).status
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def create_and_hold(stub: accounter_pb2_grpc.AccounterStub, config: party_config.Config) -> None:
    for expected_id, (currency, description) in sorted(named_accounts(config).items()):
        account = stub.CreateAccount(pb.CreateAccountRequest(currency=currency, description=description))
        if account.id != expected_id:
            raise SeedError(
                f"{description!r} got account {account.id}, the config says {expected_id}: "
                "this seeds a fresh database only (`docker compose down -v` starts afresh)"
            )
    shops = [shop for party in config.parties.values() for shop in party.shops.values()]
    funding = {
        currency: stub.CreateAccount(
            pb.CreateAccountRequest(currency=currency, description=f"demo funding {currency}")
        ).id
        for currency in sorted({shop.currency for shop in shops})
    }
    postings = [
        pb.Posting(
            from_id=funding[shop.currency],
            to_id=shop.accounts.settlement,
            amount=FUNDS,
            currency=shop.currency,
            description="demo funding",
        )
        for shop in shops
    ]
    stub.Hold(pb.HoldRequest(plan_id=PLAN_ID, batch=pb.PostingBatch(id=1, postings=postings)))


def seed(address: str, config: party_config.Config) -> str:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT)
        stub = accounter_pb2_grpc.AccounterStub(channel)
        status = plan_status(stub)
        if status == pb.POSTING_PLAN_STATUS_COMMITTED:
            return "already seeded"
        if status is None:
            create_and_hold(stub, config)
        elif status != pb.POSTING_PLAN_STATUS_HOLD:
            raise SeedError(f"plan {PLAN_ID} is {pb.PostingPlanStatus.Name(status)}: start afresh")
        stub.CommitPlan(pb.CommitPlanRequest(plan_id=PLAN_ID))
        return "created the accounts the config names and funded its shops"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seed", description=__doc__)
    parser.add_argument("--address", required=True, help="HOST:PORT of `serve`")
    parser.add_argument("--config", type=Path, required=True, help="the PartyManagement JSON config")
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        print(f"seed: {seed(args.address, party_config.load(args.config))}")
    except (party_config.ConfigError, SeedError) as error:
        print(f"seed: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"seed: {args.address}: {error.code().name} {error.details()}", file=sys.stderr)
        return 1
    except grpc.FutureTimeoutError:
        print(f"seed: {args.address} did not answer within {READY_TIMEOUT:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
