"""Faults injected into real processes: PostgreSQL backends ended or restarted, TCP connections reset."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from contextlib import closing

import psycopg2

from payout_manager.local_postgres import LocalPostgres
from support.books import dsn


class BackendTerminator:
    """Ends a random client backend of one database every `interval` seconds, on a thread of its own.

    As `pg_terminate_backend` does for an operator: the session's server process exits at once,
    whatever it was doing (between statements, mid-query, mid-COMMIT, idle in the pool).
    """

    def __init__(self, server_url: str, database: str, *, interval: float, seed: int = 0) -> None:
        self._server_dsn = dsn(server_url)
        self._database = database
        self._interval = interval
        self._chooser = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="terminator", daemon=True)
        self.terminated = 0

    def __enter__(self) -> BackendTerminator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with closing(psycopg2.connect(self._server_dsn)) as admin:
                    admin.autocommit = True
                    while not self._stop.wait(self._interval):
                        self._terminate_one(admin)
            except psycopg2.Error:
                # The server itself went away (a restart): connect again.
                self._stop.wait(0.2)

    def _terminate_one(self, admin: psycopg2.extensions.connection) -> None:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()",
                (self._database,),
            )
            pids = [pid for (pid,) in cursor.fetchall()]
            if not pids:
                return
            cursor.execute("SELECT pg_terminate_backend(%s)", (self._chooser.choice(pids),))
            (done,) = cursor.fetchone() or (False,)
            self.terminated += bool(done)


class ConnectionResetter:
    """Resets every TCP connection to 127.0.0.1:`port` every `interval` seconds, on a thread of its own.

    `ss -K` destroys the client's socket in the kernel (which sends the peer a reset), wherever the
    call on it stands: mid-request, mid-response, or idle between calls.
    """

    def __init__(self, port: int, *, interval: float) -> None:
        self._filter = ["dst", "127.0.0.1", "dport", "=", str(port)]
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resetter", daemon=True)
        self.reset = 0

    def __enter__(self) -> ConnectionResetter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.reset += kill_connections(self._filter)


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
        "import sys; from pathlib import Path; from payout_manager.local_postgres import LocalPostgres;"
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
