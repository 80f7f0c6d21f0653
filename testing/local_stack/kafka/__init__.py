"""A real single-node Apache Kafka broker in KRaft mode, for the quick start and the tests: no Docker.

    broker = LocalKafka.start(Path(".demo/kafka"))
    servers = broker.bootstrap_servers  # "127.0.0.1:PORT"
    ...
    broker.stop()

Besides PLAINTEXT it can open an SSL listener, and a SASL_SSL one with SCRAM-SHA-256 and -512 users,
for clients that must prove the broker's identity and their own (SPEC 5, outbound):

    tls = BrokerCertificate(chain_pem, key_pem)
    broker = LocalKafka.start(data_dir, tls=tls, scram_users={"alice": "..."})
    broker.ssl_bootstrap_servers, broker.sasl_ssl_bootstrap_servers

The broker reads the PEM certificate and key from its config (Kafka's PEM key store); its own
controller and inter-broker traffic stays PLAINTEXT on loopback.

A cluster of three (or `size`) brokers, one process each, every one its own KRaft controller too,
voting in one quorum; internal topics and, by default, every topic keep three replicas with
`min.insync.replicas=2`, so that it serves with one broker down:

    cluster = LocalKafkaCluster.start(Path(".demo/kafka-cluster"))
    cluster.bootstrap_servers  # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
    cluster.kill(0)            # SIGKILL of the broker with node id 1
    cluster.restart(0)         # back on its ports and data
    cluster.stop()

The broker is the official `org.apache.kafka:kafka_2.13` from Maven Central, run on the machine's
JDK (17 or newer). `mvn` downloads the jars named by the pom.xml beside this file once, into a cache
directory shared by every checkout (see `jars_dir`); after that only `java` is needed.

The broker runs as the current user, root included: unlike PostgreSQL, Kafka does not mind.
It runs in a session of its own, so a Ctrl-C in the terminal reaches only Python, which stops it.
It stops with Python: at interpreter exit every broker still running is stopped, and on Linux,
started from the main thread, it also gets SIGTERM when Python dies without running its exit code
(SIGKILL, a crash) - `setpriv --pdeathsig`, when util-linux provides it. Elsewhere such a broker
outlives Python until it is stopped by hand.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import IO, BinaryIO, ClassVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from local_stack.ports import free_port

KAFKA_VERSION = "4.3.1"
POM = Path(__file__).with_name("pom.xml")
LOG_FILE = "kafka.log"
CONFIG_FILE = "server.properties"
# Held while a broker runs on the data dir, by this process and by the broker, which inherits it.
LOCK_FILE = "broker.lock"
# The broker's own data (log.dirs), beside its config and log file in the data dir.
STORAGE_DIR = "kraft"
LOG_TAIL_LINES = 20
START_TIMEOUT = 60.0
# Three JVMs starting at once on two cores, each waiting for the quorum of the others.
CLUSTER_START_TIMEOUT = 120.0
CLUSTER_SIZE = 3
STOP_TIMEOUT = 30.0
MVN_TIMEOUT = 600.0
# Small and simple: the broker shares a 2-core machine with PostgreSQL, the server and the tests.
MAX_HEAP_MB = 512
# Each of a cluster's brokers holds a test's topics only: three of them must fit beside the rest.
CLUSTER_MAX_HEAP_MB = 256
JVM_OPTIONS = (
    "-Xms128m",
    "-XX:+UseSerialGC",
    # C1 only: starts faster, and a test broker never runs long enough to gain from C2.
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    # slf4j-simple, to stderr and so to the log file.
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
    # Every config object logs all its values at INFO: hundreds of lines per start.
    "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn",
)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# A log record below ERROR, as slf4j-simple writes it with the date format of JVM_OPTIONS.
_ROUTINE_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[[^]]*\] (TRACE|DEBUG|INFO|WARN) ")


# The SCRAM mechanisms of the SASL_SSL listener; each user gets credentials for both.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# What the storage tool's --add-scram syntax (name=...,password=...) carries without quoting.
_SCRAM_TEXT = re.compile(r"[A-Za-z0-9._~@+-]+")


class LocalKafkaError(RuntimeError):
    """The jars could not be resolved, or the broker could not be formatted, started or stopped."""


@dataclass(frozen=True)
class Membership:
    """Where a broker stands in its cluster: its node id, the controller port of every voter of the
    quorum (by node id), and how many replicas the cluster keeps of its internal topics and, by
    default, of every topic."""

    node_id: int
    voters: Mapping[int, int]
    replicas: int = 1
    # The cluster's id, for formatting a new data dir; None: a new one of its own.
    cluster_id: str | None = None

    @property
    def min_insync_replicas(self) -> int:
        """2 of 3 or more replicas: a write acknowledged by `acks=all` survives the loss of any one
        broker, and the partition still takes writes with one broker down."""
        return 2 if self.replicas >= 3 else 1


@dataclass(frozen=True)
class BrokerCertificate:
    """The broker's TLS identity: a PEM certificate chain (for 127.0.0.1 and localhost, so that
    clients checking the name accept it) and its unencrypted PKCS#8 PEM key."""

    chain_pem: bytes
    key_pem: bytes = dataclass_field(repr=False)


class LocalKafka:
    """A Kafka broker (and its own KRaft controller) on `data_dir`, listening on 127.0.0.1:`port`."""

    _running: ClassVar[set[LocalKafka]] = set()

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        tls: BrokerCertificate | None = None,
        ssl_port: int | None = None,
        scram_users: Mapping[str, str] | None = None,
        sasl_ssl_port: int | None = None,
        membership: Membership | None = None,
        max_heap_mb: int = MAX_HEAP_MB,
    ) -> None:
        """Describes a broker without starting it: use `LocalKafka.start` (or `LocalKafkaCluster`).

        Without `membership`, node 1 and the one voter of its own quorum.
        """
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.membership = membership or Membership(node_id=1, voters={1: controller_port})
        self.max_heap_mb = max_heap_mb
        self.tls = tls
        self.ssl_port = ssl_port
        self._scram_users = dict(scram_users or {})
        self.sasl_ssl_port = sasl_ssl_port
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._log_start = 0  # where the current launch's lines begin in the log file

    @classmethod
    def start(
        cls,
        data_dir: Path,
        port: int | None = None,
        *,
        tls: BrokerCertificate | None = None,
        scram_users: Mapping[str, str] | None = None,
    ) -> LocalKafka:
        """Formats `data_dir` if it is new and starts a broker on it; returns once the broker answers.

        `port` defaults to a free one, as does the controller's port. A data dir keeps its topics
        and messages from one start to the next, whatever the ports. Raises LocalKafkaError with
        the end of the broker's log if it exits or does not answer within a minute.

        With `tls`, an SSL listener opens on a free port too; with `scram_users` (name: password,
        which needs `tls`), a SASL_SSL listener whose users are these. Users are created when the
        data dir is formatted, on its first start: a data dir keeps the users it was formatted with.
        """
        if scram_users and tls is None:
            raise LocalKafkaError("SCRAM users need the SASL_SSL listener, and so a broker certificate (tls)")
        for name, password in (scram_users or {}).items():
            if not (_SCRAM_TEXT.fullmatch(name) and _SCRAM_TEXT.fullmatch(password)):
                raise LocalKafkaError(
                    f"SCRAM user {name!r}: names and passwords may hold only {_SCRAM_TEXT.pattern}"
                )
        data_dir = data_dir.resolve()
        broker = cls(
            data_dir,
            port if port is not None else free_port(),
            free_port(),
            tls=tls,
            ssl_port=free_port() if tls is not None else None,
            scram_users=scram_users,
            sasl_ssl_port=free_port() if scram_users else None,
        )
        broker._launch()
        return broker

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        """The SSL listener's address; LocalKafkaError when the broker was started without `tls`."""
        if self.ssl_port is None:
            raise LocalKafkaError("this broker has no SSL listener: start it with tls=")
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """The SASL_SSL (SCRAM) listener's address; LocalKafkaError without `scram_users`."""
        if self.sasl_ssl_port is None:
            raise LocalKafkaError("this broker has no SASL_SSL listener: start it with scram_users=")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def log_file(self) -> Path:
        """The broker's stdout and stderr, its log included, across restarts."""
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shuts the broker down cleanly (SIGTERM), or kills it after `timeout` seconds; idempotent."""
        self._terminate()
        self._await_exit(timeout)

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def _await_exit(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for the broker to exit, then kills it."""
        process = self._process
        if process is None:
            return
        try:
            process.wait(max(timeout, 0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._forget()

    def kill(self) -> None:
        """Kills the broker at once (SIGKILL), as a crash would; the next start recovers the data."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._forget()

    def restart(self) -> None:
        """Starts the broker again on the same ports and data, stopping it first if it is running."""
        self.stop()
        self._launch()

    @property
    def node_id(self) -> int:
        return self.membership.node_id

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalKafka({str(self.data_dir)!r}, node {self.node_id}, port={self.port}, {state})"

    def _launch(self) -> None:
        self._spawn_process()
        try:
            _wait_until_answering([self], START_TIMEOUT)
        except BaseException:
            self.kill()
            raise

    def _spawn_process(self) -> None:
        """Starts the broker's process without waiting for it to answer."""
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError("java is not on the PATH: the local Kafka broker needs a JDK 17 or newer")
        jars = ensure_jars()
        storage = self.data_dir / STORAGE_DIR
        storage.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._spawn(java, jars, storage)
        except BaseException:
            self._forget()
            raise
        LocalKafka._running.add(self)

    def _lock_data_dir(self) -> None:
        """Refuses a data dir another broker runs on: Kafka would only notice after damaging it.

        Its KRaft controller writes to the metadata log before the broker locks the directory.
        """
        lock = (self.data_dir / LOCK_FILE).open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise LocalKafkaError(f"another Kafka broker is running on {self.data_dir}") from None
        self._lock = lock

    def _spawn(self, java: str, jars: Path, storage: Path) -> None:
        assert self._lock is not None
        config = self.data_dir / CONFIG_FILE
        # Only ours to read: it may hold the broker's private key.
        config.touch()
        config.chmod(0o600)
        config.write_text(self._server_properties(storage))
        classpath = ["-cp", f"{jars}/*"]
        with self.log_file.open("ab") as log:
            self._log_start = log.tell()
            if not (storage / "meta.properties").exists():
                self._format(java, classpath, config, log)
                self._log_start = self.log_file.stat().st_size  # the storage tool's chatter is no error
            self._process = subprocess.Popen(
                [*_parent_death_signal(), java, *self._jvm_options(), *classpath, "kafka.Kafka", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                # The broker holds the lock too, for as long as it outlives this process.
                pass_fds=(self._lock.fileno(),),
            )

    def _jvm_options(self) -> list[str]:
        return [f"-Xmx{self.max_heap_mb}m", *JVM_OPTIONS]

    def _format(self, java: str, classpath: list[str], config: Path, log: BinaryIO) -> None:
        """Formats the storage of a new data dir, for its cluster (a new one of its own by default)."""
        command = [java, *self._jvm_options(), *classpath, "kafka.tools.StorageTool", "format"]
        # The passwords are on the storage tool's command line for the second it runs: fine for a
        # local broker's users, which is all this is for.
        cluster_id = self.membership.cluster_id or new_cluster_id()
        scram = [
            argument
            for name, password in self._scram_users.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]
        result = subprocess.run(
            [*command, "--cluster-id", cluster_id, "--config", str(config), *scram],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            check=False,
        )
        if result.returncode != 0:
            storage = self.data_dir / STORAGE_DIR
            raise LocalKafkaError(f"formatting {storage} failed with {result.returncode}\n{self._log_tail()}")

    def _answers(self, timeout: float) -> bool:
        """Whether the broker answers a metadata request; LocalKafkaError with its log if it exited."""
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise LocalKafkaError(
                f"Kafka on {self.data_dir} at port {self.port} exited with {code}\n{self._log_tail()}"
            )
        # A metadata request only once the port accepts: until then the client would log
        # a refused connection every few milliseconds.
        return _accepts_connections(self.port) and broker_answers(self.bootstrap_servers, timeout)

    def _server_properties(self, storage: Path) -> str:
        secured = {
            name: port
            for name, port in (("SSL", self.ssl_port), ("SASL_SSL", self.sasl_ssl_port))
            if port is not None
        }
        return _server_properties(
            storage, self.port, self.controller_port, secured, self.tls, self.membership
        )

    def _forget(self) -> None:
        self._process = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        LocalKafka._running.discard(self)

    def _log_tail(self) -> str:
        """The errors this launch logged, then the last lines of the log."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_start)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        # Not INFO and WARN records, nor stack frames: ERROR records, exception messages, "Caused by".
        errors = [
            line
            for line in lines
            if line.strip() and not line[0].isspace() and not _ROUTINE_RECORD.match(line)
        ]
        excerpt = ""
        if errors:
            unique = list(dict.fromkeys(errors))[-LOG_TAIL_LINES:]
            excerpt = f"errors in {self.log_file}:\n" + "\n".join(unique) + "\n"
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        return f"{excerpt}last {LOG_TAIL_LINES} lines of {self.log_file}:\n{tail}"


class LocalKafkaCluster:
    """Brokers on `data_dir/broker-N`, one process each and each a KRaft controller too, in one
    quorum of them all: node ids 1 to N, so the broker at index i is node i + 1."""

    def __init__(self, brokers: Iterable[LocalKafka]) -> None:
        """Describes a cluster without starting it: use `LocalKafkaCluster.start`."""
        self.brokers = list(brokers)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        size: int = CLUSTER_SIZE,
        *,
        timeout: float = CLUSTER_START_TIMEOUT,
        max_heap_mb: int = CLUSTER_MAX_HEAP_MB,
    ) -> LocalKafkaCluster:
        """Formats and starts `size` brokers on free ports, all at once; returns once each answers.

        Internal topics, and topics created without a replication factor, get `size` replicas (at
        most 3) with min.insync.replicas 2 when that is 3. Raises LocalKafkaError with the end of
        a broker's log, every broker stopped, if one exits or they do not all answer in `timeout`.
        """
        data_dir = data_dir.resolve()
        ports = [(free_port(), free_port()) for _ in range(size)]
        voters = {n + 1: controller_port for n, (_, controller_port) in enumerate(ports)}
        cluster_id = new_cluster_id()
        cluster = cls(
            LocalKafka(
                data_dir / f"broker-{node_id}",
                port,
                controller_port,
                membership=Membership(node_id, voters, min(size, 3), cluster_id),
                max_heap_mb=max_heap_mb,
            )
            for node_id, (port, controller_port) in zip(voters, ports, strict=True)
        )
        try:
            # Together: each broker waits for a quorum of the others before it answers.
            for broker in cluster.brokers:
                broker._spawn_process()
            _wait_until_answering(cluster.brokers, timeout)
        except BaseException:
            for broker in cluster.brokers:
                broker.kill()
            raise
        return cluster

    @property
    def bootstrap_servers(self) -> str:
        """Every broker's PLAINTEXT address, comma-separated."""
        return ",".join(broker.bootstrap_servers for broker in self.brokers)

    def index_of(self, node_id: int) -> int:
        """The index in `brokers` of the broker with this node id."""
        for index, broker in enumerate(self.brokers):
            if broker.node_id == node_id:
                return index
        raise LocalKafkaError(f"no broker has node id {node_id} in {self}")

    def active_controller(self) -> int:
        """The node id of the quorum's leader, the active controller, as the running brokers last
        recorded it (KRaft's quorum-state file); LocalKafkaError when none did."""
        states = []
        for broker in self.brokers:
            path = broker.data_dir / STORAGE_DIR / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(FileNotFoundError, ValueError):
                if broker.running:
                    states.append(json.loads(path.read_text()))
        known = [state for state in states if state.get("leaderId", -1) >= 0]
        if not known:
            raise LocalKafkaError(f"no running broker of {self} knows the quorum's leader")
        leader: int = max(known, key=lambda state: state["leaderEpoch"])["leaderId"]
        return leader

    def kill(self, index: int) -> None:
        """Kills one broker at once (SIGKILL), as a crash would."""
        self.brokers[index].kill()

    def restart(self, index: int) -> None:
        """Starts one broker again on its ports and data (stopping it first if it runs); returns
        once it answers, which needs a quorum of the controllers."""
        self.brokers[index].restart()

    def stop(self, index: int | None = None, timeout: float = STOP_TIMEOUT) -> None:
        """Shuts one broker down cleanly, or with no index every one of them; idempotent.

        All at once: one by one, the last would wait out its timeout for a quorum that is gone.
        """
        brokers = self.brokers if index is None else [self.brokers[index]]
        for broker in brokers:
            broker._terminate()
        deadline = time.monotonic() + timeout
        for broker in brokers:
            broker._await_exit(deadline - time.monotonic())

    def wait_until_replicated(self, timeout: float = START_TIMEOUT) -> None:
        """Waits until every partition of every topic has all its replicas in sync, as after a
        restarted broker caught up; TimeoutError naming the partitions that lag, if not in time."""
        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        while True:
            try:
                topics = admin.list_topics(timeout=5).topics
            except KafkaException:
                lagging = ["(no metadata)"]
            else:
                lagging = [
                    f"{name}[{number}] in sync {sorted(partition.isrs)} of {sorted(partition.replicas)}"
                    for name, topic in topics.items()
                    for number, partition in topic.partitions.items()
                    if set(partition.isrs) != set(partition.replicas)
                ]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every replica is in sync within {timeout:.0f} s: {lagging[:5]}")
            time.sleep(0.2)

    def __repr__(self) -> str:
        running = [broker.node_id for broker in self.brokers if broker.running]
        return f"LocalKafkaCluster({self.bootstrap_servers!r}, running nodes {running})"


def java_available() -> bool:
    """Whether a local broker can start here: java on the PATH, and mvn too unless the jars are cached."""
    if shutil.which("java") is None:
        return False
    return shutil.which("mvn") is not None or _jars_complete(jars_dir())


def jars_dir() -> Path:
    """Where `ensure_jars` puts the jars: kafka-<version> in $PM_CACHE_DIR, else in the user's cache.

    The user's cache is $XDG_CACHE_HOME/payout-manager, else ~/.cache/payout-manager.
    """
    if root := os.environ.get("PM_CACHE_DIR"):
        cache = Path(root)
    elif xdg := os.environ.get("XDG_CACHE_HOME"):
        cache = Path(xdg) / "payout-manager"
    else:
        cache = Path.home() / ".cache" / "payout-manager"
    return cache / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """The directory of the broker's jars, resolved from Maven Central by mvn on the first call.

    Safe when several processes call it at once: one resolves into a scratch directory beside the
    cache and renames it into place while the others wait on a lock. The cache is named after
    KAFKA_VERSION only; other changes to the pom need the directory removed by hand.
    """
    target = jars_dir()
    if _jars_complete(target):
        return target
    if shutil.which("mvn") is None:
        raise LocalKafkaError(
            f"the Kafka {KAFKA_VERSION} jars are not in {target}, and mvn, which would fetch them, "
            "is not on the PATH"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _jars_complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _resolve_jars(staging)
            if target.exists():  # left incomplete by hand: nothing of ours renames one into place
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def broker_answers(bootstrap_servers: str, timeout: float = 5.0) -> bool:
    """Whether a broker at `bootstrap_servers` answers a metadata request within `timeout` seconds."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _resolve_jars(directory: Path) -> None:
    command = [
        "mvn",
        "--batch-mode",
        "--quiet",
        "-Dstyle.color=never",
        "--file",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={directory}",
        "-DincludeScope=runtime",
    ]
    failure = f"mvn could not fetch the Kafka {KAFKA_VERSION} jars named by {POM}"
    try:
        subprocess.run(
            command, check=True, capture_output=True, text=True, cwd=directory, timeout=MVN_TIMEOUT
        )
    except subprocess.CalledProcessError as error:
        raise LocalKafkaError(f"{failure}:\n{_output_tail(error.stdout, error.stderr)}") from None
    except subprocess.TimeoutExpired as error:
        raise LocalKafkaError(
            f"{failure} within {MVN_TIMEOUT:.0f} s:\n{_output_tail(error.stdout, error.stderr)}"
        ) from None
    if not _jars_complete(directory):
        raise LocalKafkaError(f"{failure}: no kafka_2.13-{KAFKA_VERSION}.jar among them; does the pom agree?")


def _jars_complete(directory: Path) -> bool:
    return (directory / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _output_tail(*parts: str | bytes | None) -> str:
    texts = (part.decode(errors="replace") if isinstance(part, bytes) else part for part in parts if part)
    text = "\n".join(texts)
    lines = _ANSI_ESCAPE.sub("", text).strip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no output)"


def _wait_until_answering(brokers: Sequence[LocalKafka], timeout: float) -> None:
    """Waits until every one of `brokers` answers; LocalKafkaError with the log of one that exited,
    or of each that did not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    waiting = list(brokers)
    while True:
        remaining = deadline - time.monotonic()
        waiting = [broker for broker in waiting if not broker._answers(max(0.5, min(2, remaining)))]
        if not waiting:
            return
        if remaining <= 0:
            raise LocalKafkaError(
                "\n".join(
                    f"Kafka on {broker.data_dir} did not answer at {broker.bootstrap_servers} "
                    f"within {timeout:.0f} s\n{broker._log_tail()}"
                    for broker in waiting
                )
            )
        time.sleep(0.1)


def _server_properties(
    storage: Path,
    port: int,
    controller_port: int,
    secured: Mapping[str, int],
    tls: BrokerCertificate | None,
    membership: Membership,
) -> str:
    """The broker's config; `secured` maps SSL and SASL_SSL to their ports (either, both or none)."""
    replicas, min_insync = str(membership.replicas), str(membership.min_insync_replicas)
    advertised = [
        f"PLAINTEXT://127.0.0.1:{port}",
        *(f"{name}://127.0.0.1:{p}" for name, p in secured.items()),
    ]
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(membership.node_id),
        "controller.quorum.voters": ",".join(
            f"{node_id}@127.0.0.1:{voter_port}" for node_id, voter_port in membership.voters.items()
        ),
        "listeners": ",".join([*advertised, f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", *(f"{name}:{name}" for name in secured)]
        ),
        **(_tls_properties(tls) if tls is not None and secured else {}),
        **(_scram_properties() if "SASL_SSL" in secured else {}),
        "log.dirs": str(storage),
        "num.partitions": "12",
        "auto.create.topics.enable": "true",
        # Every internal topic, and by default every topic, as many replicas as the cluster keeps
        # (one for a lone broker); one partition of each internal topic is plenty.
        "default.replication.factor": replicas,
        "min.insync.replicas": min_insync,
        # Kafka's default, said here: an out-of-sync replica never becomes leader, losing writes.
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_insync,
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_insync,
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A broker that died without a clean shutdown holds its registration, its partitions'
        # leadership and its place in their in-sync replicas until its session times out: its
        # next start waits for that, and in a cluster every acks=all write does. 3 s rather than 9
        # (6 missed heartbeats: a busy two-core machine does not fence a live broker).
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # A dead active controller is replaced within about 1.5 s rather than 3 (Kafka's 2 s and
        # 1 s); a new controller gives each broker a full session before it fences one.
        "controller.quorum.fetch.timeout.ms": "1000",
        "controller.quorum.election.timeout.ms": "500",
    }
    return "".join(f"{name}={_escape(value)}\n" for name, value in settings.items())


def _tls_properties(tls: BrokerCertificate) -> dict[str, str]:
    """Kafka's PEM key store, given in the config itself: an unencrypted key needs no password."""
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": tls.chain_pem.decode(),
        "ssl.keystore.key": tls.key_pem.decode(),
    }


def _scram_properties() -> dict[str, str]:
    login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        **{f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": login for m in SCRAM_MECHANISMS},
    }


def _escape(value: str) -> str:
    """Properties files treat a backslash as an escape, and end a value at a line's end (PEM)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _parent_death_signal() -> list[str]:
    """A prefix making the broker get SIGTERM when this thread dies, where that is cheap to arrange.

    Linux sends it when the thread that started the child ends, not the process; only the main
    thread lasts as long as the process, so other threads get no such prefix.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def new_cluster_id() -> str:
    """A new cluster id as Kafka makes them: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own Uuid.randomUuid, never one that starts with '-': the storage tool's command
    line would read it as an option (one start in 64 failed to format before this).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@atexit.register
def _stop_all() -> None:
    for broker in list(LocalKafka._running):
        broker.stop()
