"""The composition root: wires storage, PartyManagement and the servicers into a gRPC server.

`serve` runs one process, or `--workers N` processes that share the port with SO_REUSEPORT (the
kernel spreads connections among them). The serving process (the parent, with workers) also runs
the jobs that lead across every `serve`: the event relay when Kafka is set, the expiry of UNPAID
payouts when PM_UNPAID_PAYOUT_TTL is. SIGTERM: health NOT_SERVING, in-flight calls finish within
the grace period, then the expiry stops, then the relay hands its last batch over, then the
resources close. Workers whose parent dies (SIGKILL) stop too.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from clients.party_management.client import PartyManagementClient
from payout_manager import logs
from payout_manager.api import auth, tls
from payout_manager.api.accounter import AccounterServicer
from payout_manager.api.handlers import Gate, method_names, service_handler
from payout_manager.api.payout_management import PayoutManagementServicer
from payout_manager.events.kafka_config import KafkaConnection
from payout_manager.events.relay import Relay
from payout_manager.expiry import Expiry
from payout_manager.metrics import CallMetrics, MetricsServer
from payout_manager.payouts.service import PayoutService
from payout_manager.proto.accounter.v1 import accounter_pb2
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2
from payout_manager.settings import Settings, SettingsError
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.unit_of_work import SqlStorage

log = logging.getLogger(__name__)

SERVICES = (
    payout_manager_pb2.DESCRIPTOR.services_by_name["PayoutManagement"],
    accounter_pb2.DESCRIPTOR.services_by_name["Accounter"],
)
# Every method a policy may name: 'package.Service/Method'.
METHODS = tuple(name for service in SERVICES for name in method_names(service))


@dataclass
class RunningServer:
    """A started server and what it must close when it stops."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    gate: Gate
    database: Database
    replica: Database | None
    party_management: PartyManagementClient

    def stop(self, grace: float) -> None:
        """Refuses new calls, lets in-flight ones finish within `grace` seconds, then closes."""
        self.health.enter_graceful_shutdown()
        started = time.monotonic()
        self.gate.close_and_wait(grace)
        self.server.stop(max(0.0, grace - (time.monotonic() - started))).wait()
        self.party_management.close()
        self.database.dispose()
        if self.replica is not None:
            self.replica.dispose()


def build_server(
    settings: Settings, address: str, *, share_port: bool = False, metrics: CallMetrics | None = None
) -> RunningServer:
    """Builds and starts a server on `address` (port 0 picks one); returns it with its port.

    `share_port` lets sibling worker processes bind the same port; alone, a busy port is an error.
    `metrics`, when given, records every call, PartyManagement retry and pool checkout.
    """
    credentials = tls.server_credentials(settings)
    authorizer = auth.Authorizer.from_settings(settings, METHODS)
    engine = create_database_engine(settings.require_database_url(), pool_size=settings.database_pool_size)
    if metrics is not None:
        metrics.watch_pool(engine, settings.database_pool_size)
    database = Database(engine)
    read_url = settings.read_database_url()
    # The replica's pool is as large: every thread may be reading at once.
    replica = (
        None
        if read_url is None
        else Database(create_database_engine(read_url, pool_size=settings.database_pool_size))
    )
    party_management = _party_management(settings, None if metrics is None else metrics.retried)
    payouts = PayoutService(
        SqlStorage(database, replica),
        party_management,
        max_unresolved_per_shop=settings.max_unresolved_payouts_per_shop,
    )

    # One thread per pooled connection (plus overflow): more threads would only queue on the pool.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.database_pool_size, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", int(share_port))],
    )
    observe = None if metrics is None else metrics.observe
    gate = Gate()
    server.add_generic_rpc_handlers(
        (
            service_handler(SERVICES[0], PayoutManagementServicer(payouts), authorizer.caller, observe, gate),
            service_handler(
                SERVICES[1], AccounterServicer(database, replica=replica), authorizer.caller, observe, gate
            ),
        )
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.full_name for s in SERVICES]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        auth.GuardedReflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], authorizer), server
    )
    try:
        port = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError:
        port = 0
    if port == 0:
        for opened in (database, replica):
            if opened is not None:
                opened.dispose()
        party_management.close()
        raise SettingsError(f"cannot listen on {address}: the address is in use or not this host's")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, gate, database, replica, party_management)


def _party_management(settings: Settings, on_retry: Callable[[], None] | None) -> PartyManagementClient:
    return PartyManagementClient(
        settings.party_management_address,
        call_timeout=settings.party_management_timeout,
        on_retry=on_retry,
        credentials=tls.party_management_credentials(settings),
    )


def _on_stop_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_worker(
    settings: Settings,
    address: str,
    stop: threading.Event,
    *,
    share_port: bool = False,
    metrics: CallMetrics | None = None,
) -> None:
    """One server: serves until `stop` is set or the parent process dies, then shuts down gracefully."""
    running = build_server(settings, address, share_port=share_port, metrics=metrics)
    log.info("serving on port %d", running.port)
    parent = multiprocessing.parent_process()
    # A wait with a timeout: if another thread takes the signal, Python runs the handler on the
    # main thread only when it wakes, which an untimed wait never does.
    while not stop.wait(timeout=0.5):
        if parent is not None and not parent.is_alive():
            log.warning("the serve process is gone; stopping this worker")
            break
    log.info("stopping: in-flight calls have %.0f s to finish", settings.shutdown_grace)
    running.stop(settings.shutdown_grace)


class _Job:
    """A job of the serving process (the relay, the expiry) on a thread of its own."""

    def __init__(
        self, name: str, run: Callable[[threading.Event], None], close: Callable[[], None] = lambda: None
    ) -> None:
        self._stop = threading.Event()
        self._close = close
        self._thread = threading.Thread(target=run, args=(self._stop,), name=name, daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        self._stop.set()
        self._thread.join(grace + 1)
        self._close()


def _relay(settings: Settings, on_failed: Callable[[int], None] | None) -> _Job | None:
    """The event relay, when Kafka is set."""
    if settings.kafka_bootstrap_servers is None:
        log.warning("PM_KAFKA_BOOTSTRAP_SERVERS is not set: events wait in the database until it is")
        return None
    relay = Relay(
        settings.require_database_url(),
        KafkaConnection.from_settings(settings),
        settings.kafka_topic,
        drain_timeout=settings.shutdown_grace,
        on_failed=on_failed,
    )
    return _Job("relay", relay.run)


def _expiry(settings: Settings, on_expired: Callable[[], None] | None) -> _Job | None:
    """The expiry of UNPAID payouts, when PM_UNPAID_PAYOUT_TTL is set; its cancels are the service's own."""
    if settings.unpaid_payout_ttl is None:
        return None
    database_url = settings.require_database_url()
    # One expiry at a time: one connection for its changes. PartyManagement is never called by an
    # expiry; the client connects only when it is.
    database = Database(create_database_engine(database_url, pool_size=1))
    party_management = _party_management(settings, None)
    expiry = Expiry(
        database_url,
        PayoutService(SqlStorage(database), party_management),
        timedelta(seconds=settings.unpaid_payout_ttl),
        on_expired=on_expired,
    )

    def close() -> None:
        party_management.close()
        database.dispose()

    return _Job("expiry", expiry.run, close)


def _resolve_port(address: str) -> str:
    host, _, port = address.rpartition(":")
    if port != "0":
        return address
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return f"{host}:{probe.getsockname()[1]}"


def serve(settings: Settings, *, address: str, workers: int) -> None:
    """Serves in this process, or in `workers` processes sharing one port; runs the jobs here."""
    # Checked here, once, so that a bad setting stops serve with one line before any worker starts.
    tls.check_plaintext_allowed(settings, address)
    tls.server_credentials(settings)
    auth.check_policy(settings, METHODS)
    database_url = settings.require_database_url()
    if settings.auth_policy_file is None:
        log.warning("PM_AUTH_POLICY_FILE is not set: every caller is anonymous with every right")
    stop = threading.Event()
    _on_stop_signals(stop)
    metrics = None
    if settings.metrics_address is not None:
        metrics = MetricsServer(settings.metrics_address, database_url, workers=workers)
    relay = _relay(settings, None if metrics is None else metrics.relay.failed)
    expiry = _expiry(settings, None if metrics is None else metrics.expiry.expired)
    try:
        if workers == 1:
            calls = None if metrics is None else CallMetrics(metrics.registry)
            run_worker(settings, address, stop, metrics=calls)
        else:
            _run_workers(settings, _resolve_port(address), workers, stop, metrics)
    finally:
        # The expiry first, so that the relay hands over the events of its last cancels too.
        for job in (expiry, relay):
            if job is not None:
                job.stop(settings.shutdown_grace)
        if metrics is not None:
            metrics.stop()


def _run_workers(
    settings: Settings, address: str, workers: int, stop: threading.Event, metrics: MetricsServer | None
) -> None:
    # spawn, not fork: gRPC's threads must not be forked.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(settings, address), name=f"worker-{n}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    log.info("%d workers serving on %s", workers, address)
    while not stop.is_set() and all(p.is_alive() for p in processes):
        stop.wait(0.5)
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()
    for process in processes:
        process.join()
        if metrics is not None and process.pid is not None:
            metrics.worker_exited(process.pid)
    failed = [p for p in processes if p.exitcode not in (0, -signal.SIGTERM)]
    if failed and not stop.is_set():
        log.error("worker %s exited with %s; stopped the others", failed[0].name, failed[0].exitcode)
        sys.exit(1)


def _worker_main(settings: Settings, address: str) -> None:
    logs.configure(settings.log_level)
    stop = threading.Event()
    _on_stop_signals(stop)
    # Metrics on: serve set PROMETHEUS_MULTIPROC_DIR before starting this process, so these
    # values go to the files serve sums at each scrape.
    metrics = CallMetrics(None) if settings.metrics_address is not None else None
    run_worker(settings, address, stop, share_port=True, metrics=metrics)
