"""Logs of a real `serve`: one JSON object per line, a line per call, no password anywhere."""

from __future__ import annotations

import re

import grpc
import pytest
from sqlalchemy.engine import make_url
from support.payouts import create
from support.serving import StartServe, log_lines

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.world import World

PASSWORD = "s3cret-Pw-7"
CREATE = "payout_manager.v1.PayoutManagement.CreatePayout"


@pytest.fixture
def url_with_password(database_url: str) -> str:
    # The test server trusts local connections, so any password connects.
    return make_url(database_url).set(password=PASSWORD).render_as_string(hide_password=False)


def test_every_line_is_json_and_each_call_has_its_line_without_the_password(
    start_serve: StartServe, world: World, url_with_password: str
) -> None:
    shop = world.add_shop(funds=100_000)
    served = start_serve(2, env={"PM_DATABASE_URL": url_with_password, "PM_LOG_LEVEL": "DEBUG"})

    with grpc.insecure_channel(served.address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        made = stub.CreatePayout(
            pb.CreatePayoutRequest(
                party_id=shop.party_id, shop_id=shop.shop_id, cash=party_pb.Cash(amount=1_000, currency="RUB")
            ),
            metadata=(("x-request-id", "from-the-caller-1"),),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError):
            stub.CreatePayout(pb.CreatePayoutRequest(party_id=shop.party_id), timeout=10)
    served.stop()

    logged = log_lines(served.process.output())
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in logged)
    calls = [entry for entry in logged if entry.get("method") == CREATE]
    ok = next(entry for entry in calls if entry["request_id"] == "from-the-caller-1")
    assert (ok["code"], ok["payout_id"], ok["level"]) == ("OK", made.payout_id, "INFO")
    # Without a policy every caller is anonymous, and so is who created the payout.
    assert (ok["caller"], made.created_by) == ("anonymous", "anonymous")
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] > 0
    refused = next(entry for entry in calls if entry["code"] == "INVALID_ARGUMENT")
    assert re.fullmatch(r"[0-9a-f]{32}", refused["request_id"])
    assert PASSWORD not in served.process.output()


def test_the_log_level_leaves_out_what_is_below_it(start_serve: StartServe, world: World) -> None:
    shop = world.add_shop(funds=100_000)
    served = start_serve(1, env={"PM_LOG_LEVEL": "WARNING"})
    with grpc.insecure_channel(served.address) as channel:
        create(payout_manager_pb2_grpc.PayoutManagementStub(channel), shop.party_id, shop.shop_id, 1_000)
    served.stop()

    logged = log_lines(served.process.output())
    # Without Kafka, serve warns that events wait in the database: WARNING lines still come.
    assert any(entry["level"] == "WARNING" for entry in logged)
    assert {entry["level"] for entry in logged} <= {"WARNING", "ERROR", "CRITICAL"}
    assert not any("method" in entry for entry in logged)
