"""The testing kit (testing/payout_manager_testing) as a team that integrates would use it.

Its fixtures run here on this suite's PostgreSQL and Kafka (conftest.py hands them over); a second
pytest run, in a subprocess of its own, uses the plugin as installed (the pytest11 entry point) and
shows that the stack it started is gone when that session ends, after a failing test too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg2
import pytest
from support.payouts import refusal

from payout_manager.proto.accounter.v1 import accounter_pb2
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1.payout_manager_pb2_grpc import PayoutManagementStub
from payout_manager_testing.plugin import Books, Stubs
from payout_manager_testing.stack import KIT_PRINCIPAL, PayoutManagerStack, Security
from payout_manager_testing.topic import TopicReader
from payout_manager_testing.world import Shop


def create_request(shop: Shop, amount: int) -> pb.CreatePayoutRequest:
    return pb.CreatePayoutRequest(
        party_id=shop.party_id,
        shop_id=shop.shop_id,
        cash=party_pb.Cash(amount=amount, currency=shop.currency),
    )


def test_a_funded_shop_pays_out_and_the_topic_and_the_books_show_it(
    payout_manager_shop: Callable[..., Shop],
    payout_manager_stubs: Stubs,
    payout_manager_topic: TopicReader,
    payout_manager_books: Books,
) -> None:
    shop = payout_manager_shop(funds=100_000)
    payouts = payout_manager_stubs.payouts

    made = payouts.CreatePayout(create_request(shop, 10_000))
    confirmed = payouts.ConfirmPayout(pb.ConfirmPayoutRequest(payout_id=made.payout_id))

    assert confirmed.status == pb.PAYOUT_STATUS_CONFIRMED
    records = payout_manager_topic.read_events_of({made.payout_id: 2}, timeout=60)
    mine = [r.event for r in records if r.key == made.payout_id]
    assert [e.sequence_id for e in mine] == [1, 2]
    assert mine[-1].payout == confirmed
    settlement = payout_manager_stubs.accounter.GetAccount(
        accounter_pb2.GetAccountRequest(account_id=shop.settlement)
    )
    debited = sum(p.volume.amount for p in confirmed.cash_flow if p.source.account_id == shop.settlement)
    assert debited >= 10_000 and settlement.own_amount == 100_000 - debited
    payout_manager_books.assert_balanced()


def test_an_underfunded_shop_is_refused_and_nothing_is_held(
    payout_manager_shop: Callable[..., Shop], payout_manager_stubs: Stubs
) -> None:
    shop = payout_manager_shop(funds=5_000)

    with pytest.raises(grpc.RpcError) as refused:
        payout_manager_stubs.payouts.CreatePayout(create_request(shop, 10_000))

    assert refusal(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    settlement = payout_manager_stubs.accounter.GetAccount(
        accounter_pb2.GetAccountRequest(account_id=shop.settlement)
    )
    assert (settlement.own_amount, settlement.min_available_amount) == (5_000, 5_000)


# A downstream test module: one test that passes, one that fails; both write where the stack was.
DOWNSTREAM = """
import json, os
from pathlib import Path

def _record(stack):
    Path(os.environ["KIT_RECORD"]).write_text(json.dumps({
        "address": stack.address, "database_url": stack.database_url, "directory": str(stack.directory),
    }))

def test_passes(payout_manager_stack, payout_manager_shop):
    _record(payout_manager_stack)
    assert payout_manager_shop(funds=10).settlement > 0

def test_fails(payout_manager_stack):
    _record(payout_manager_stack)
    assert False, "a downstream test that fails"
"""


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


def test_the_stack_is_gone_when_the_session_ends_even_after_a_failing_test(
    postgres_server_url: str, payout_manager_kafka_servers: str, tmp_path: Path
) -> None:
    (tmp_path / "test_downstream.py").write_text(textwrap.dedent(DOWNSTREAM))
    record = tmp_path / "record.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={
            **os.environ,
            "KIT_RECORD": str(record),
            "PM_TEST_DATABASE_URL": postgres_server_url,
            "PM_TEST_KAFKA_BOOTSTRAP_SERVERS": payout_manager_kafka_servers,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert run.returncode == 1 and "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    stack = json.loads(record.read_text())
    assert not listening(stack["address"])
    # serve by its address, the reference PartyManagement by its config in the stack's directory.
    leftovers = [
        pid
        for pattern in (stack["address"], stack["directory"])
        for pid in subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    assert leftovers == [], f"processes of the stack still running: {leftovers}"
    database = stack["database_url"].rpartition("/")[2]
    with psycopg2.connect(postgres_server_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (database,))
        assert cursor.fetchone() == (0,)
    connection.close()


def test_a_secured_stack_makes_the_certificates_and_holds_to_the_policy_given(
    postgres_server_url: str, tmp_path: Path
) -> None:
    reader = "spiffe://team/reader"
    policy = {
        "roles": {"reader": ["payout_manager.v1.PayoutManagement/GetPayout"]},
        "principals": [{"id": reader, "roles": ["reader"]}],
    }

    with PayoutManagerStack.start(
        tmp_path, postgres_server_url=postgres_server_url, workers=1, security=Security(policy)
    ) as stack:
        shop = stack.new_shop(funds=50_000)
        made = stack.payouts().CreatePayout(create_request(shop, 1_000))
        as_reader = stack.payouts(reader)
        seen = as_reader.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id))
        with pytest.raises(grpc.RpcError) as denied:
            as_reader.CreatePayout(create_request(shop, 1_000))
        with pytest.raises(grpc.RpcError) as unknown:
            stack.payouts("spiffe://team/stranger").GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id))
        with pytest.raises(grpc.RpcError) as plaintext:
            PayoutManagementStub(grpc.insecure_channel(stack.address)).GetPayout(
                pb.GetPayoutRequest(payout_id=made.payout_id), timeout=5
            )

    assert seen == made and made.created_by == KIT_PRINCIPAL
    assert refusal(denied.value) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED")
    assert refusal(unknown.value) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CALLER")
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
