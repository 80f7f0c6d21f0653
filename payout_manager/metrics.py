"""Prometheus metrics, served by `serve` on PM_METRICS_ADDRESS (off unless set).

With `--workers N` every worker is its own process: workers record into prometheus_client's
multiprocess files, in a directory the serve process makes before it starts them, and the serve
process serves their sum. It adds what only it knows: the relay's failed deliveries, the payouts
its expiry cancelled (the one process that leads the expiry counts them), and, read from the
database at each scrape, payouts by status and the outbox's size and the age of its oldest event.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, Row, event, text

from payout_manager.errors import CODES, Reason, Refusal
from payout_manager.payouts.model import PayoutStatus
from payout_manager.storage.database import Database, DatabaseUrl, create_database_engine

log = logging.getLogger(__name__)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_PAYOUTS = text("SELECT status, count(*) AS n FROM payout GROUP BY status")
_OUTBOX = text(
    """
    SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(e.created_at)), 0) AS age
    FROM payout_event_outbox o JOIN payout_event e ON e.id = o.event_row_id
    """
)
PAYOUT_STATUSES = tuple(status.value for status in PayoutStatus)

# The status code of the service limit's refusal, which the error table gives no other reason.
_LIMIT_CODE = CODES[Reason.PAYOUT_LIMIT_EXCEEDED].value
assert [reason for reason, code in CODES.items() if code.value == _LIMIT_CODE] == [
    Reason.PAYOUT_LIMIT_EXCEEDED
], "a limit refusal must be told apart by its code alone"


class CallMetrics:
    """What one serving process records: calls, PartyManagement retries, its connection pool."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        # registry None: a worker in multiprocess mode, whose values go to the shared files.
        self.calls = Counter(
            "pm_grpc_calls",
            "gRPC calls served, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "pm_grpc_call_duration_seconds",
            "Time to serve a gRPC call, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.limit_refusals = Counter(
            "pm_payout_limit_refusals",
            "Creates refused because their shop was at PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP",
            registry=registry,
        )
        self.party_management_retries = Counter(
            "pm_party_management_retries",
            "PartyManagement calls retried after a transient failure",
            registry=registry,
        )
        self.connections_in_use = Gauge(
            "pm_database_connections_in_use",
            "Pooled database connections checked out",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "pm_database_pool_size",
            "Database connections the pools may hold",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        if code == _LIMIT_CODE:
            self.limit_refusals.inc()
        self.latency.labels(method).observe(seconds)

    def retried(self) -> None:
        self.party_management_retries.inc()

    def watch_pool(self, engine: Engine, size: int) -> None:
        self.pool_size.set(size)
        event.listen(engine, "checkout", lambda *_: self.connections_in_use.inc())
        event.listen(engine, "checkin", lambda *_: self.connections_in_use.dec())


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "pm_kafka_delivery_failures", "Events the broker refused or failed to take", registry=registry
        )

    def failed(self, count: int) -> None:
        self.failures.inc(count)


class ExpiryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.expirations = Counter(
            "pm_payouts_expired",
            "UNPAID payouts this process cancelled as expired (PM_UNPAID_PAYOUT_TTL)",
            registry=registry,
        )

    def expired(self) -> None:
        self.expirations.inc()


class DatabaseCollector(Collector):
    """Payouts by status and the outbox, read from the database at each scrape."""

    def __init__(self, database_url: DatabaseUrl) -> None:
        self._database = Database(create_database_engine(database_url, pool_size=1))

    def collect(self) -> Iterator[Metric]:
        def read(connection: Connection) -> tuple[dict[str, int], Row[Any]]:
            counted = {row.status: row.n for row in connection.execute(_PAYOUTS)}
            return counted, connection.execute(_OUTBOX).one()

        try:
            counted, outbox = self._database.read(read)
        except Refusal as refusal:  # a scrape must answer even while the database is away
            log.warning("metrics: the database did not answer: %s", refusal)
            return
        payouts = GaugeMetricFamily("pm_payouts", "Payouts by status", labels=["status"])
        for status in PAYOUT_STATUSES:
            payouts.add_metric([status], counted.get(status, 0))
        yield payouts
        yield GaugeMetricFamily("pm_outbox_events", "Events not yet acknowledged by Kafka", value=outbox.n)
        yield GaugeMetricFamily(
            "pm_outbox_oldest_event_age_seconds",
            "Age of the oldest event not yet acknowledged by Kafka (0 when none waits)",
            value=float(outbox.age),
        )

    def close(self) -> None:
        self._database.dispose()


class MetricsServer:
    """The scrape endpoint of one `serve`: its registry, the HTTP server, the workers' files."""

    def __init__(self, address: str, database_url: DatabaseUrl, *, workers: int) -> None:
        self.registry = CollectorRegistry()
        self._directory: str | None = None
        if workers > 1:
            # Set before the workers start: they are spawned, so they read it when they import.
            self._directory = tempfile.mkdtemp(prefix="pm-metrics-")
            os.environ[MULTIPROCESS_DIR] = self._directory
            multiprocess.MultiProcessCollector(self.registry, path=self._directory)  # type: ignore[no-untyped-call]
        self.relay = RelayMetrics(self.registry)
        self.expiry = ExpiryMetrics(self.registry)
        self._database = DatabaseCollector(database_url)
        self.registry.register(self._database)
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port = server.server_port
        log.info("metrics on %s:%d/metrics", host, self.port)

    def worker_exited(self, pid: int) -> None:
        if self._directory is not None:
            multiprocess.mark_process_dead(pid, self._directory)  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._database.close()
        if self._directory is not None:
            os.environ.pop(MULTIPROCESS_DIR, None)
            shutil.rmtree(self._directory, ignore_errors=True)
