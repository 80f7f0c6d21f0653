"""Faults injected into real processes: PostgreSQL backends ended or restarted, TCP connections reset."""

from __future__ import annotations

import random
import subprocess
import sys

import psycopg2
import psycopg2.extensions

from local_stack.postgres import LocalPostgres
from support.books import dsn
from support.repeated import Repeated


class _RepeatedFault(Repeated):
    """A fault struck every `interval` seconds on a thread of its own, for the `with` block."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        # How many things the fault hit (backends ended, connections reset).
        self.hits = 0

    def _tick(self) -> None:
        self.hits += self._strike()

    def _strike(self) -> int:
        raise NotImplementedError


class BackendTerminator(_RepeatedFault):
    """Ends a random client backend of one database every `interval` seconds.

    As `pg_terminate_backend` does for an operator: the session's server process exits at once,
    whatever it was doing (between statements, mid-query, mid-COMMIT, idle in the pool).
    """

    def __init__(self, server_url: str, database: str, *, interval: float, seed: int = 0) -> None:
        super().__init__(interval)
        self._server_dsn = dsn(server_url)
        self._database = database
        self._chooser = random.Random(seed)
        self._admin: psycopg2.extensions.connection | None = None

    def _strike(self) -> int:
        try:
            if self._admin is None:
                self._admin = psycopg2.connect(self._server_dsn)
                self._admin.autocommit = True
            return self._terminate_one(self._admin)
        except psycopg2.Error:
            # The server itself went away (a restart): connect again next time.
            self._close()
            return 0

    def _terminate_one(self, admin: psycopg2.extensions.connection) -> int:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()",
                (self._database,),
            )
            pids = [pid for (pid,) in cursor.fetchall()]
            if not pids:
                return 0
            cursor.execute("SELECT pg_terminate_backend(%s)", (self._chooser.choice(pids),))
            (done,) = cursor.fetchone() or (False,)
            return int(bool(done))

    def _close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


class ConnectionResetter(_RepeatedFault):
    """Resets every TCP connection to 127.0.0.1:`port` every `interval` seconds.

    `ss -K` destroys the client's socket in the kernel (which sends the peer a reset), wherever the
    call on it stands: mid-request, mid-response, or idle between calls.
    """

    def __init__(self, port: int, *, interval: float) -> None:
        super().__init__(interval)
        self._filter = ["dst", "127.0.0.1", "dport", "=", str(port)]

    def _strike(self) -> int:
        return kill_connections(self._filter)


def kill_connections(ss_filter: list[str]) -> int:
    """Destroys the TCP sockets `ss` selects with `ss_filter`; how many it destroyed."""
    done = subprocess.run(
        ["ss", "-K", "-t", "-n", "-H", *ss_filter], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ss -K failed ({done.returncode}): {done.stderr.strip()}")
    return len(done.stdout.splitlines())


def restart_postgres(server: LocalPostgres) -> None:
    """`pg_ctl restart -m fast` on the server, from a process of its own.

    Not from this one: running pg_ctl as the server's account means a fork() with a change of
    user, and a fork of a process whose gRPC threads are busy under load can die in the child
    before it runs pg_ctl (seen: a gRPC check failure and SIGBUS). A fresh interpreter has no such
    threads.
    """
    script = (
        "import sys; from pathlib import Path; from local_stack.postgres import LocalPostgres;"
        " LocalPostgres(Path(sys.argv[1]), int(sys.argv[2])).restart()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(server.data_dir), str(server.port)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not restart ({done.returncode}):\n{done.stderr}")
