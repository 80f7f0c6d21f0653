"""`python -m benchmarks.chaos`: the mixed load for a few minutes while faults take turns.

Everything real, on this machine: a PostgreSQL primary with a synchronous standby (durable: fsync
and synchronous commit on), a three-broker Kafka cluster (replication factor 3, min.insync.replicas
2), the reference PartyManagement server, and two `serve --workers 2` on the primary's multi-host
URL. Eight client threads create, confirm, cancel, revert and read payouts and hold and settle
Accounter plans through both serves, retrying UNAVAILABLE with the same ids. In turns, it kills
(SIGKILL) a `serve` worker, a `serve` parent, the `serve` whose relay leads, the PostgreSQL primary
(the standby is promoted and a new standby rebuilt by pg_basebackup), one broker (restarted after a
while), and PartyManagement (restarted); each killed `serve` is started again, as a supervisor
would. Then it prints, per fault: calls failed by code, how long calls kept failing, how long the
component took to come back, events published again, and the delivery delay; and exits 1 on any
lost payout, lost or foreign event, out-of-order event, INTERNAL or UNKNOWN answer, failed call or
problem of the books audit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg2

from benchmarks.limits import UNLIMITED
from benchmarks.processes import workers
from benchmarks.topic import Delivery, TopicReader, stored_events
from local_stack.kafka import LocalKafkaCluster, java_available
from local_stack.postgres import ReplicatedPostgres, create_database
from payout_manager.events.relay import LEADER_LOCK_KEY
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager.storage import migrations
from payout_manager.storage.audit import audit_books
from payout_manager_testing.components import PartyManagement, start_party_management
from payout_manager_testing.load import Load
from payout_manager_testing.processes import Process, free_port, wait_until_serving
from payout_manager_testing.world import World

TOPIC = "pm-events-payout"
FUNDS = 10**15
SHOPS = 8
PLANS = 4
THREADS = 8
# How long the load runs before the first fault, and after each fault before the next.
WARM_UP = 5.0
FAULT_SECONDS = 25.0
# What a supervisor, or a failover manager, takes to act.
RESTART_DELAY = 1.0
BROKER_DOWN = 8.0
PARTY_MANAGEMENT_DOWN = 3.0
# Codes a call may meet while a fault lasts; the load retries them with the same ids.
RETRIED = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
NEVER = {"INTERNAL", "UNKNOWN"}
DRAIN_TIMEOUT = 180.0
EXAMPLES = 5


@dataclass
class Window:
    """One fault: when it was injected (monotonic and wall clock), and what was seen until the next."""

    fault: str
    started: float
    wall: float
    ended: float = 0.0
    wall_ended: float = 0.0
    # Seconds from the injection until the component was back (serving, leading, replicated).
    recovered: float | None = None


class Serve:
    """A `serve --workers 2` on a fixed address, started again after it dies, as a supervisor would."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.address = f"127.0.0.1:{free_port()}"
        self._env = env
        self._directory = directory
        self._starts = 0
        self.process = self._start()

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def workers(self) -> list[int]:
        return workers(self.pid)

    def kill_parent(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.popen.wait()

    def kill_worker(self) -> None:
        """SIGKILLs one worker; the parent then stops the other and exits (crash-only)."""
        os.kill(self.workers()[0], signal.SIGKILL)
        self.process.popen.wait(timeout=60)

    def restart(self) -> None:
        """Starts it again on its address once every process of the last start is gone."""
        deadline = time.monotonic() + 60
        while _port_in_use(self.address) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process.stop(timeout=5)
        self.process = self._start()

    def stop(self) -> None:
        self.process.stop(timeout=60)

    def _start(self) -> Process:
        self._starts += 1
        log = self._directory / f"{self.name}-{self._starts}.log"
        process = Process(["serve", "--workers", "2", "--address", self.address], self._env, log)
        wait_until_serving(self.address, process, timeout=60)
        return process


@dataclass
class Chaos:
    """The stack under test and the record of the run."""

    directory: Path
    pair: ReplicatedPostgres
    database_url: str
    kafka: LocalKafkaCluster
    party_management: PartyManagement
    serves: list[Serve]
    fault_seconds: float = FAULT_SECONDS
    windows: list[Window] = field(default_factory=list)

    def inject(self, fault: str, action: Callable[[], float | None]) -> None:
        """Runs `action` (the fault and its repair) as the window `fault`; it returns the seconds the
        component took to come back, and the window lasts `fault_seconds` from the injection."""
        if self.windows:
            self.windows[-1].ended, self.windows[-1].wall_ended = time.monotonic(), time.time()
        window = Window(fault, time.monotonic(), time.time())
        self.windows.append(window)
        print(f"{time.strftime('%H:%M:%S')} {fault}", flush=True)
        window.recovered = action()
        remaining = self.fault_seconds - (time.monotonic() - window.started)
        time.sleep(max(0.0, remaining))

    def close_windows(self) -> None:
        if self.windows:
            self.windows[-1].ended, self.windows[-1].wall_ended = time.monotonic(), time.time()

    # --- the faults -------------------------------------------------------------------------

    def kill_a_worker(self) -> float:
        return self._killed_and_restarted(self.serves[0], self.serves[0].kill_worker)

    def kill_a_parent(self) -> float:
        return self._killed_and_restarted(self.serves[1], self.serves[1].kill_parent)

    @staticmethod
    def _killed_and_restarted(serve: Serve, kill: Callable[[], None]) -> float:
        """Seconds from the kill until the serve, started again after RESTART_DELAY, serves."""
        started = time.monotonic()
        kill()
        time.sleep(RESTART_DELAY)
        serve.restart()
        return time.monotonic() - started

    def kill_the_relay_leader(self) -> float:
        leader, session = self._relay_leader()
        started = time.monotonic()
        leader.kill_parent()
        # The other serve's relay takes over: once another session leads, the relay is back.
        _wait(lambda: self._relay_backend_ports() not in ([], [session]), 60, "no relay took the leadership")
        recovered = time.monotonic() - started
        time.sleep(RESTART_DELAY)
        leader.restart()
        return recovered

    def kill_the_primary(self) -> float:
        started = time.monotonic()
        self.pair.fail_over(before_promotion=RESTART_DELAY)
        recovered = time.monotonic() - started
        self.pair.rebuild_standby()
        return recovered

    def kill_a_broker(self) -> float:
        index = self.kafka.index_of(self.kafka.active_controller())
        started = time.monotonic()
        self.kafka.kill(index)
        time.sleep(BROKER_DOWN)
        self.kafka.restart(index)
        self.kafka.wait_until_replicated()
        return time.monotonic() - started

    def kill_party_management(self) -> float:
        started = time.monotonic()
        self.party_management.process.popen.kill()
        self.party_management.process.stop(timeout=10)
        time.sleep(PARTY_MANAGEMENT_DOWN)
        self.party_management = start_party_management(
            self.directory, self.party_management.config_path, self.party_management.address, restart=True
        )
        return time.monotonic() - started

    def _relay_backend_ports(self) -> list[int]:
        with closing(psycopg2.connect(self.database_url)) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
                " AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())",
                (LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF),
            )
            return [int(port) for (port,) in cursor.fetchall()]

    def _relay_leader(self) -> tuple[Serve, int]:
        """The serve whose relay leads (the owner of the client end of the leader's session), and
        that session's client port."""
        _wait(lambda: len(self._relay_backend_ports()) == 1, 60, "no relay leads")
        (port,) = self._relay_backend_ports()
        owner = _pid_of_local_port(port)
        for serve in self.serves:
            if owner == serve.pid:
                return serve, port
        raise RuntimeError(f"the relay's session (port {port}) belongs to no serve parent (pid {owner})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--fault-seconds", type=float, default=FAULT_SECONDS, help="each fault's window")
    parser.add_argument("--threads", type=int, default=THREADS, help="client threads of the mixed load")
    args = parser.parse_args()
    if not java_available():
        print("the chaos run needs java (and mvn, until the Kafka jars are cached)", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="pm-chaos-"))
    try:
        with _stack(directory) as chaos:
            chaos.fault_seconds = args.fault_seconds
            problems = _run(chaos, args.threads)
    except BaseException:
        print(f"the stack's logs and data are kept in {directory}", file=sys.stderr)
        raise
    if problems:
        print(f"\nFAILED: {len(problems)} problems; logs and data in {directory}")
        for problem in problems:
            print(f"  {problem}")
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    print("\nOK: no lost payout, no lost or out-of-order event, no INTERNAL answer, the books audit clean")
    return 0


@contextlib.contextmanager
def _stack(directory: Path) -> Iterator[Chaos]:
    with ExitStack() as stack:
        pair = ReplicatedPostgres.start(directory / "postgres", durable=True)
        stack.callback(pair.stop)
        database_url = create_database(pair.url(), "payout_manager")
        migrations.upgrade(database_url)
        kafka = LocalKafkaCluster.start(directory / "kafka")
        stack.callback(kafka.stop)
        party = stack.enter_context(_party_management(directory))
        env = {
            "PM_DATABASE_URL": database_url,
            "PM_PARTY_MANAGEMENT_ADDRESS": party.address,
            "PM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "PM_KAFKA_TOPIC": TOPIC,
            "PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP": str(UNLIMITED),
            "PM_SHUTDOWN_GRACE": "5",
        }
        serves = []
        for name in ("serve-a", "serve-b"):
            serve = Serve(name, env, directory)
            stack.callback(serve.stop)
            serves.append(serve)
        chaos = Chaos(directory, pair, database_url, kafka, party, serves)
        stack.callback(lambda: chaos.party_management.process.stop(timeout=20))
        yield chaos


@contextlib.contextmanager
def _party_management(directory: Path) -> Iterator[PartyManagement]:
    config = directory / "party-management.json"
    config.write_text('{"system_accounts": {}, "parties": []}')
    yield start_party_management(directory, config, f"127.0.0.1:{free_port()}")


def _run(chaos: Chaos, threads: int) -> list[str]:
    first = chaos.serves[0]
    channel = grpc.insecure_channel(first.address)
    world = World(accounter_pb2_grpc.AccounterStub(channel), chaos.party_management.config_path)
    shops = [world.add_shop(funds=FUNDS) for _ in range(SHOPS)]
    plans = [(world.account(), world.account()) for _ in range(PLANS)]
    reader = TopicReader(chaos.kafka.bootstrap_servers, TOPIC, quiet=True)
    load = Load([serve.address for serve in chaos.serves], shops, threads=threads, reads=True, plans=plans)
    started = time.monotonic()
    load.start()
    try:
        time.sleep(WARM_UP)
        chaos.inject("serve worker", chaos.kill_a_worker)
        chaos.inject("serve parent", chaos.kill_a_parent)
        chaos.inject("relay leader", chaos.kill_the_relay_leader)
        chaos.inject("PostgreSQL primary", chaos.kill_the_primary)
        chaos.inject("Kafka broker", chaos.kill_a_broker)
        chaos.inject("PartyManagement", chaos.kill_party_management)
    finally:
        load.stop()
        chaos.close_windows()
    print(
        f"\n{time.monotonic() - started:.0f} s of load: {dict(load.codes)}; "
        f"{len(load.expected)} payouts, {len(load.planned)} plans\n"
    )
    problems = _answers_held(load, channel)
    problems += [f"books audit: {problem}" for problem in audit_books(chaos.database_url)]
    deliveries = _all_delivered(chaos.database_url, reader)
    reader.close()
    channel.close()
    problems += _topic_problems(chaos.database_url, deliveries)
    _report(chaos.windows, load, deliveries)
    return problems


def _answers_held(load: Load, channel: grpc.Channel) -> list[str]:
    """Every failed call, INTERNAL answer, and answered change or plan that the database lacks."""
    problems = [f"call failed: {failure}" for failure in load.failures[:EXAMPLES]]
    if len(load.failures) > EXAMPLES:
        problems.append(f"... {len(load.failures)} failed calls in all")
    problems += [f"{load.codes[code]} answers {code}" for code in sorted(NEVER & set(load.codes))]
    payouts = payout_manager_pb2_grpc.PayoutManagementStub(channel)
    accounter = accounter_pb2_grpc.AccounterStub(channel)
    lost = []
    for payout_id, answered in load.answered.items():
        stored = payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id), timeout=30)
        if (stored.status, stored.revision) != (answered.status, answered.revision):
            lost.append(f"{payout_id}: answered revision {answered.revision}, stored {stored.revision}")
    for plan_id, status in load.planned.items():
        plan = accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=plan_id), timeout=30)
        if plan.status != status:
            lost.append(f"plan {plan_id}: answered {status}, stored {plan.status}")
    if lost:
        problems.append(f"{len(lost)} answered changes lost, e.g. {lost[:EXAMPLES]}")
    return problems


def _all_delivered(database_url: str, reader: TopicReader) -> list[Delivery]:
    """The deliveries once every stored event has arrived (or the drain timed out)."""
    wanted = {(payout_id, sequence_id) for payout_id, sequence_id, _ in stored_events(database_url)}
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        deliveries = reader.deliveries()
        if wanted <= {(d.payout_id, d.sequence_id) for d in deliveries} or time.monotonic() > deadline:
            return deliveries
        time.sleep(0.2)


def _topic_problems(database_url: str, deliveries: list[Delivery]) -> list[str]:
    return delivery_problems(stored_events(database_url), deliveries)


def delivery_problems(events: Iterable[tuple[str, int, str]], deliveries: list[Delivery]) -> list[str]:
    """Lost events, events never stored, and events a consumer keeping the highest sequence id would
    apply out of order, of the stored `events` (payout_id, sequence_id, event_id) and the topic's
    `deliveries` in arrival order; repeats are allowed (at least once) and counted in the report."""
    stored = {(p, s): e for p, s, e in events}
    arrived = {(d.payout_id, d.sequence_id) for d in deliveries}
    lost = [key for key in stored if key not in arrived]
    foreign = [
        (d.payout_id, d.sequence_id)
        for d in deliveries
        if stored.get((d.payout_id, d.sequence_id)) != d.event_id
    ]
    applied: dict[str, int] = {}
    out_of_order = []
    for delivery in deliveries:
        last = applied.get(delivery.payout_id, 0)
        if delivery.sequence_id > last + 1:
            out_of_order.append(f"{delivery.payout_id} #{delivery.sequence_id} after #{last}")
        applied[delivery.payout_id] = max(last, delivery.sequence_id)
    problems = []
    for name, found in (
        ("lost", lost),
        ("published but not stored", foreign),
        ("out of order", out_of_order),
    ):
        if found:
            problems.append(f"{len(found)} events {name}, e.g. {found[:EXAMPLES]}")
    return problems


def _report(windows: list[Window], load: Load, deliveries: list[Delivery]) -> None:
    seen: Counter[tuple[str, int]] = Counter()
    repeats: list[Delivery] = []
    for delivery in deliveries:
        key = (delivery.payout_id, delivery.sequence_id)
        seen[key] += 1
        if seen[key] > 1:
            repeats.append(delivery)
    print(
        "| fault | calls failed by code | calls failing for s | back in s | events repeated"
        " | delivery p50 / p99 / max ms |"
    )
    print("|---|---|---:|---:|---:|---|")
    for window in windows:
        failed = Counter(
            code for at, code in load.timeline if code != "OK" and window.started <= at < window.ended
        )
        last_failure = max(
            (at for at, code in load.timeline if code != "OK" and window.started <= at < window.ended),
            default=None,
        )
        failing = 0.0 if last_failure is None else last_failure - window.started
        repeated = sum(1 for d in repeats if window.wall <= d.produced < window.wall_ended)
        delays = sorted(
            (d.arrived - d.created_at) * 1000
            for d in deliveries
            if window.wall <= d.created_at < window.wall_ended
        )
        codes = ", ".join(f"{code} {n}" for code, n in sorted(failed.items())) or "none"
        back = "" if window.recovered is None else f"{window.recovered:.1f}"
        print(f"| {window.fault} | {codes} | {failing:.1f} | {back} | {repeated} | {_percentiles(delays)} |")
    print(
        f"\n{len(deliveries)} events delivered, {len(repeats)} of them repeats; {load.retried} calls retried"
    )


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"

    def at(share: float) -> float:
        return values[min(len(values) - 1, int(share * len(values)))]

    return f"{at(0.5):.0f} / {at(0.99):.0f} / {values[-1]:.0f}"


def _wait(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.05)


def _socket_inodes(port: int) -> set[str]:
    """The inodes of the TCP sockets whose local port is `port` (Linux's /proc/net/tcp)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with contextlib.suppress(FileNotFoundError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def _pid_of_local_port(port: int) -> int | None:
    """The process holding a TCP socket whose local port is `port`."""
    inodes = _socket_inodes(port)
    for descriptor in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return int(descriptor.parts[2])
    return None


def _port_in_use(address: str) -> bool:
    """Whether some process still listens on `address`'s port (a worker not gone yet)."""
    port = int(address.rpartition(":")[2])
    return _pid_of_local_port(port) is not None


if __name__ == "__main__":
    sys.exit(main())
