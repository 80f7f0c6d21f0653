"""Prometheus metrics on PM_METRICS_ADDRESS: scraped from a real `serve`, over real calls."""

from __future__ import annotations

import grpc
import pytest
from support.metrics import scrape, value
from support.payouts import confirm, create
from support.serving import StartServe

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.processes import free_port
from payout_manager_testing.world import World


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scrape_shows_calls_payouts_outbox_and_pool(
    start_serve: StartServe, world: World, workers: int
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    served = start_serve(workers, env={"PM_METRICS_ADDRESS": metrics})
    # Each worker reports its pool once it serves; the first SERVING answer may come before the other.
    served.wait_for_workers(workers)
    shop = world.add_shop(funds=100_000)
    before = scrape(metrics)

    with grpc.insecure_channel(served.address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        made = [create(stub, shop.party_id, shop.shop_id, 1_000) for _ in range(3)]
        confirm(stub, made[0].payout_id)
        with pytest.raises(grpc.RpcError):
            stub.GetPayout(pb.GetPayoutRequest(payout_id="no-such-payout"), timeout=10)
    after = scrape(metrics)

    full = "payout_manager.v1.PayoutManagement.CreatePayout"
    calls = "pm_grpc_calls_total"
    assert value(after, calls, method=full, code="OK") - value(before, calls, method=full, code="OK") == 3
    get = "payout_manager.v1.PayoutManagement.GetPayout"
    assert (
        value(after, calls, method=get, code="NOT_FOUND") - value(before, calls, method=get, code="NOT_FOUND")
        == 1
    )
    count = "pm_grpc_call_duration_seconds_count"
    assert value(after, count, method=full) - value(before, count, method=full) == 3
    assert value(after, "pm_payouts", status="UNPAID") - value(before, "pm_payouts", status="UNPAID") == 2
    assert (
        value(after, "pm_payouts", status="CONFIRMED") - value(before, "pm_payouts", status="CONFIRMED") == 1
    )
    # No Kafka in this test: the events wait in the outbox, and the oldest has an age.
    assert value(after, "pm_outbox_events") >= 4
    assert value(after, "pm_outbox_oldest_event_age_seconds") > 0
    assert value(after, "pm_database_pool_size") == 10 * workers
    assert value(after, "pm_database_connections_in_use") == 0
    assert ("pm_party_management_retries_total", ()) in after
    assert ("pm_kafka_delivery_failures_total", ()) in after
    assert ("pm_payouts_expired_total", ()) in after


def test_without_the_setting_no_metrics_port_is_opened(start_serve: StartServe) -> None:
    served = start_serve(1)
    served.wait_for_log("serving on port")

    assert "metrics on" not in served.process.output()
