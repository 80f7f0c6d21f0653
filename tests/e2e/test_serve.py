"""`payout-manager serve` as a real process: health, reflection, workers, shutdown, PartyManagement down.

Every test starts serve processes of its own (the session's server is only used, through `world`,
to create accounts), so stopping and killing them disturbs no other test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]  # no stubs installed
import psycopg2
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from support.payouts import refusal
from support.serving import PartyManagementServer, Served, StartServe

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.party_management.v1 import party_management_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.processes import Process, free_port, signal_name, wait_until_listening
from payout_manager_testing.world import PLAIN_TERMS, Shop, World

PAYOUT_MANAGEMENT = "payout_manager.v1.PayoutManagement"
ACCOUNTER = "accounter.v1.Accounter"
HEALTH = "grpc.health.v1.Health"
STOPPING_LINE = "stopping: in-flight calls have"


class SlowPartyManagement:
    """A PartyManagement in front of the reference one that holds each cash flow call for `delay` s.

    It makes CreatePayout calls slow on purpose, so that a test knows they are in flight.
    """

    SERVICE = "party_management.v1.PartyManagement"

    def __init__(self, upstream: str, delay: float) -> None:
        self.delay = delay
        self._channel = grpc.insecure_channel(upstream)
        self._upstream = party_management_pb2_grpc.PartyManagementStub(self._channel)
        self._received = 0
        self._condition = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "GetShop": grpc.unary_unary_rpc_method_handler(
                self._get_shop,
                request_deserializer=party_pb.GetShopRequest.FromString,
                response_serializer=party_pb.Shop.SerializeToString,
            ),
            "ComputePayoutCashFlow": grpc.unary_unary_rpc_method_handler(
                self._compute_payout_cash_flow,
                request_deserializer=party_pb.ComputePayoutCashFlowRequest.FromString,
                response_serializer=party_pb.ComputePayoutCashFlowResponse.SerializeToString,
            ),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.SERVICE, handlers),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def wait_for_calls(self, count: int, timeout: float = 15.0) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._received >= count, timeout=timeout):
                raise TimeoutError(f"PartyManagement got {self._received} cash flow calls, not {count}")

    def close(self) -> None:
        self._server.stop(None).wait()
        self._channel.close()

    def _get_shop(self, request: party_pb.GetShopRequest, context: grpc.ServicerContext) -> party_pb.Shop:
        return self._upstream.GetShop(request, timeout=10)

    def _compute_payout_cash_flow(
        self, request: party_pb.ComputePayoutCashFlowRequest, context: grpc.ServicerContext
    ) -> party_pb.ComputePayoutCashFlowResponse:
        with self._condition:
            self._received += 1
            self._condition.notify_all()
        time.sleep(self.delay)
        return self._upstream.ComputePayoutCashFlow(request, timeout=10)


def payouts_stub(channel: grpc.Channel) -> payout_manager_pb2_grpc.PayoutManagementStub:
    return payout_manager_pb2_grpc.PayoutManagementStub(channel)


def create_request(shop: Shop, amount: int, payout_id: str = "") -> pb.CreatePayoutRequest:
    return pb.CreatePayoutRequest(
        payout_id=payout_id,
        party_id=shop.party_id,
        shop_id=shop.shop_id,
        cash=party_pb.Cash(amount=amount, currency=shop.currency),
    )


def stored_payouts(database_url: str, payout_ids: list[str]) -> dict[str, str]:
    """Status of each of `payout_ids` that is in the database, read directly from PostgreSQL."""
    with contextlib.closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT payout_id, status FROM payout WHERE payout_id = ANY(%s)", (payout_ids,))
        return dict(cursor.fetchall())


def error_reason(error: grpc.RpcError) -> tuple[str, str] | None:
    """(reason, domain) of the google.rpc.ErrorInfo a refusal carries."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, info.domain
    return None


def balances(world: World, *account_ids: int) -> list[tuple[int, int, int]]:
    return [
        (account.own_amount, account.min_available_amount, account.max_available_amount)
        for account in (world.balance(account_id) for account_id in account_ids)
    ]


def listening_children(served: Served) -> list[psutil.Process]:
    """The children of the serve process that hold a listening socket on its port."""
    parent = psutil.Process(served.process.popen.pid)
    return [child for child in parent.children() if listens_on(child, served.port)]


def wait_for_listening_children(served: Served, count: int, timeout: float = 30.0) -> list[psutil.Process]:
    """The listening children, once there are `count` of them.

    Needed because SERVING from some connections only proves that one worker is up.
    """
    deadline = time.monotonic() + timeout
    while len(children := listening_children(served)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(children)} children listen, not {count}:\n{served.process.output()}")
        time.sleep(0.05)
    return children


def listens_on(process: psutil.Process, port: int) -> bool:
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def established_on(process: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


# --- health and reflection ----------------------------------------------------------------------


@pytest.fixture
def served(start_serve: StartServe) -> Served:
    return start_serve(workers=1)


@pytest.mark.parametrize("service", ["", PAYOUT_MANAGEMENT, ACCOUNTER])
def test_health_check_reports_serving(served: Served, service: str) -> None:
    with grpc.insecure_channel(served.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(served: Served) -> None:
    with grpc.insecure_channel(served.address) as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="no.such.v1.Service"), timeout=5
        )

    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_served_services(served: Served) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(served.address) as channel:
        replies = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=5)
        )

    assert len(replies) == 1
    names = {service.name for service in replies[0].list_services_response.service}
    assert {PAYOUT_MANAGEMENT, ACCOUNTER, HEALTH} <= names


def test_reflection_describes_the_payout_management_service(served: Served) -> None:
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=PAYOUT_MANAGEMENT)
    with grpc.insecure_channel(served.address) as channel:
        replies = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=5)
        )

    files = replies[0].file_descriptor_response.file_descriptor_proto
    assert files, replies[0]
    assert pb.DESCRIPTOR.serialized_pb in files


# --- workers ------------------------------------------------------------------------------------


def test_two_workers_are_two_processes_listening_on_one_port(start_serve: StartServe) -> None:
    served = start_serve(workers=2)

    workers = wait_for_listening_children(served, 2)

    time.sleep(0.5)  # a third one, if any, would have shown up by now
    assert len(listening_children(served)) == 2
    assert len({worker.pid for worker in workers}) == 2
    assert not listens_on(psutil.Process(served.process.popen.pid), served.port)


def test_two_workers_both_take_connections(start_serve: StartServe) -> None:
    served = start_serve(workers=2)
    workers = wait_for_listening_children(served, 2)

    # The kernel spreads new connections over the listeners: 24 of them all on one worker has odds 2**-23.
    # A local subchannel pool gives each channel its own connection instead of one shared by all.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(served.address, options=options) for _ in range(24)]
    try:
        for channel in channels:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        connections = [established_on(worker, served.port) for worker in workers]
    finally:
        for channel in channels:
            channel.close()

    assert all(count > 0 for count in connections), f"connections per worker: {connections}"
    assert sum(connections) >= len(channels)


def test_sigterm_with_two_workers_stops_both_and_exits_zero_within_the_grace_period(
    start_serve: StartServe,
) -> None:
    grace = 5.0
    served = start_serve(workers=2, env={"PM_SHUTDOWN_GRACE": str(grace)})
    workers = wait_for_listening_children(served, 2)

    started = time.monotonic()
    code = served.stop(timeout=grace + 10)
    elapsed = time.monotonic() - started

    assert code == 0, f"serve exited with {signal_name(code)}:\n{served.process.output()}"
    assert elapsed < grace, f"stopping took {elapsed:.1f} s"
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
    assert served.process.output().count(STOPPING_LINE) == 2


def test_a_worker_that_dies_stops_the_other_and_serve_exits_nonzero(start_serve: StartServe) -> None:
    served = start_serve(workers=2)
    dying, other = wait_for_listening_children(served, 2)

    dying.kill()
    try:
        code = served.process.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve kept running with one worker:\n{served.process.output()}") from None

    assert code != 0
    other.wait(timeout=5)
    assert not other.is_running()


# --- graceful shutdown --------------------------------------------------------------------------


def test_sigterm_taken_by_any_thread_stops_serve(start_serve: StartServe) -> None:
    served = start_serve(workers=1)
    pid = served.process.popen.pid
    other_threads = [thread.id for thread in psutil.Process(pid).threads() if thread.id != pid]
    assert other_threads

    # kill() with a thread's id sends the process-wide SIGTERM with that thread as the preferred
    # taker: what the kernel may do with any SIGTERM, and did here under load.
    os.kill(other_threads[0], signal.SIGTERM)
    try:
        code = served.process.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"serve ignored a SIGTERM taken by a thread other than the main one:\n{served.process.output()}"
        ) from None

    assert code == 0, f"serve exited with {signal_name(code)}:\n{served.process.output()}"
    assert STOPPING_LINE in served.process.output()


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones(
    start_serve: StartServe, world: World, party_management: PartyManagementServer, database_url: str
) -> None:
    in_flight = 8
    slow = SlowPartyManagement(party_management.address, delay=3.0)
    try:
        served = start_serve(
            workers=1,
            party_management_address=slow.address,
            env={"PM_PARTY_MANAGEMENT_TIMEOUT": "10", "PM_SHUTDOWN_GRACE": "20"},
        )
        shop = world.add_shop(funds=1_000_000, terms=PLAIN_TERMS)
        payout_ids = [f"graceful-{uuid.uuid4()}" for _ in range(in_flight)]
        with grpc.insecure_channel(served.address) as channel, futures.ThreadPoolExecutor(in_flight) as pool:
            stub = payouts_stub(channel)
            calls = [
                pool.submit(stub.CreatePayout, create_request(shop, 1_000, payout_id), timeout=30)
                for payout_id in payout_ids
            ]
            slow.wait_for_calls(in_flight)

            served.process.popen.send_signal(signal.SIGTERM)
            served.wait_for_log(STOPPING_LINE)
            with grpc.insecure_channel(served.address) as late, pytest.raises(grpc.RpcError) as refused:
                payouts_stub(late).GetPayout(pb.GetPayoutRequest(payout_id=payout_ids[0]), timeout=5)
            still_running = sum(1 for call in calls if not call.done())

            created = [call.result() for call in calls]
        code = served.process.popen.wait(timeout=30)
    finally:
        slow.close()

    # Refused by the server's drain, which a client retries elsewhere: not gRPC's CANCELLED.
    assert refusal(refused.value) == (grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING")
    assert still_running == in_flight, "the in-flight calls finished before the late call was refused"
    assert [payout.payout_id for payout in created] == payout_ids
    assert all(payout.status == pb.PAYOUT_STATUS_UNPAID for payout in created)
    assert code == 0, f"serve exited with {signal_name(code)}:\n{served.process.output()}"
    assert stored_payouts(database_url, payout_ids) == dict.fromkeys(payout_ids, "UNPAID")
    assert world.balance(shop.settlement).min_available_amount == 1_000_000 - in_flight * 1_000


# Calls that reached grpc core but no handler yet are CANCELLED when the server shuts down instead of
# UNAVAILABLE (grpc/grpc#41785, open): tolerated here, as long as such a call did nothing.
REFUSED_AT_SHUTDOWN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


def test_sigterm_during_a_burst_of_creates_keeps_every_accepted_payout_and_nothing_else(
    start_serve: StartServe, world: World, database_url: str
) -> None:
    calls = 50
    served = start_serve(workers=1)
    shop = world.add_shop(funds=10_000_000, terms=PLAIN_TERMS)
    payout_ids = [f"burst-{uuid.uuid4()}" for _ in range(calls)]
    first_done = threading.Event()

    def create(stub: payout_manager_pb2_grpc.PayoutManagementStub, payout_id: str) -> grpc.StatusCode:
        try:
            stub.CreatePayout(create_request(shop, 1_000, payout_id), timeout=30)
        except grpc.RpcError as error:
            return error.code()
        finally:
            first_done.set()
        return grpc.StatusCode.OK

    with grpc.insecure_channel(served.address) as channel, futures.ThreadPoolExecutor(calls) as pool:
        stub = payouts_stub(channel)
        results = [pool.submit(create, stub, payout_id) for payout_id in payout_ids]
        assert first_done.wait(timeout=30)
        served.process.popen.send_signal(signal.SIGTERM)
        codes = dict(zip(payout_ids, (result.result() for result in results), strict=True))
    try:
        code = served.process.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve did not stop after SIGTERM:\n{served.process.output()}") from None

    assert set(codes.values()) <= {grpc.StatusCode.OK, *REFUSED_AT_SHUTDOWN}, codes
    accepted = {payout_id for payout_id, status in codes.items() if status == grpc.StatusCode.OK}
    assert accepted
    assert set(stored_payouts(database_url, payout_ids)) == accepted
    assert code == 0, f"serve exited with {signal_name(code)}:\n{served.process.output()}"
    assert STOPPING_LINE in served.process.output()
    # The accepted payouts hold their amounts; the refused ones hold nothing.
    assert world.balance(shop.settlement).min_available_amount == 10_000_000 - len(accepted) * 1_000


# --- PartyManagement down ----------------------------------------------------------------------


def test_serve_started_without_party_management_refuses_creates_within_the_deadline(
    start_serve: StartServe, world: World
) -> None:
    served = start_serve(workers=1, party_management_address=f"127.0.0.1:{free_port()}")
    shop = world.add_shop(funds=100_000)
    before = balances(world, shop.settlement, shop.guarantee, shop.payout)
    payout_id = f"no-pm-{uuid.uuid4()}"

    with grpc.insecure_channel(served.address) as channel:
        stub = payouts_stub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreatePayout(create_request(shop, 10_000, payout_id), timeout=3)
        elapsed = time.monotonic() - started
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPayout(pb.GetPayoutRequest(payout_id=payout_id), timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
    assert error_reason(refused.value) == ("PARTY_MANAGEMENT_UNAVAILABLE", "payout-manager")
    assert elapsed < 4, f"the refusal took {elapsed:.1f} s"
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert balances(world, shop.settlement, shop.guarantee, shop.payout) == before


def test_serve_uses_party_management_once_it_comes_up(
    start_serve: StartServe, world: World, party_management: PartyManagementServer, tmp_path: Path
) -> None:
    late_address = f"127.0.0.1:{free_port()}"
    served = start_serve(workers=1, party_management_address=late_address)
    shop = world.add_shop(funds=100_000, terms=PLAIN_TERMS)

    with grpc.insecure_channel(served.address) as channel:
        stub = payouts_stub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreatePayout(create_request(shop, 10_000), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        late = Process(
            ["party-management", "--config", str(party_management.config_path), "--address", late_address],
            {},
            tmp_path / "late-party-management.log",
        )
        try:
            wait_until_listening(late_address, late)
            payout = stub.CreatePayout(create_request(shop, 10_000), timeout=10)
        finally:
            late.stop()

    assert payout.status == pb.PAYOUT_STATUS_UNPAID
    assert world.balance(shop.settlement).min_available_amount == 90_000
