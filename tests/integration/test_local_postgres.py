"""The embedded PostgreSQL launcher and the choice of PostgreSQL for the tests, on real servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from local_stack.postgres import LocalPostgres, LocalPostgresError
from payout_manager_testing.postgres import docker_engine_answers


def server_version(url: str) -> str:
    with closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        row = cursor.fetchone()
    assert row is not None
    version: str = row[0]
    return version


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_session_server_is_postgresql_18(postgres_server_url: str) -> None:
    assert server_version(postgres_server_url).startswith("PostgreSQL 18")


def test_start_on_a_running_data_dir_reuses_the_server(local_postgres: LocalPostgres) -> None:
    again = LocalPostgres.start(local_postgres.data_dir, durable=False)

    assert again == local_postgres
    assert server_version(again.url).startswith("PostgreSQL 18")


def test_start_on_a_running_data_dir_refuses_another_port(local_postgres: LocalPostgres) -> None:
    with pytest.raises(LocalPostgresError, match="already running"):
        LocalPostgres.start(local_postgres.data_dir, port=closed_port())


def test_create_database_returns_a_url_to_it_and_tolerates_repeats(local_postgres: LocalPostgres) -> None:
    url = local_postgres.create_database("pm_created_twice")

    assert local_postgres.create_database("pm_created_twice") == url
    with closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone() == ("pm_created_twice",)


def test_bin_dir_holds_the_client_programs(local_postgres: LocalPostgres) -> None:
    assert (local_postgres.bin_dir / "psql").is_file()
    assert (local_postgres.bin_dir / "pgbench").is_file()


def test_stop_closes_the_port_and_start_brings_the_same_data_back(tmp_path: Path) -> None:
    server = LocalPostgres.start(tmp_path / "data", durable=False)
    try:
        server.create_database("pm_kept")
    finally:
        server.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()

    restarted = LocalPostgres.start(tmp_path / "data", port=server.port, durable=False)
    try:
        assert server_version(restarted.create_database("pm_kept")).startswith("PostgreSQL 18")
    finally:
        restarted.stop()


def test_start_on_a_taken_port_raises_with_the_log_tail(
    tmp_path: Path, listening_socket: socket.socket
) -> None:
    port = listening_socket.getsockname()[1]

    with pytest.raises(LocalPostgresError) as raised:
        LocalPostgres.start(tmp_path / "data", port=port, durable=False)

    message = str(raised.value)
    assert "postgresql.log" in message
    assert "could not bind IPv4 address" in message


def test_docker_ping_on_this_machine_answers_within_3_seconds() -> None:
    started = time.monotonic()
    docker_engine_answers()
    assert time.monotonic() - started < 3


def test_docker_ping_is_false_when_no_engine_listens_on_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    started = time.monotonic()

    assert docker_engine_answers() is False
    assert time.monotonic() - started < 3


def test_docker_ping_is_false_for_a_closed_tcp_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed_port()}")

    assert docker_engine_answers() is False


def test_docker_ping_gives_up_on_an_engine_that_never_answers(
    listening_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = listening_socket.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    started = time.monotonic()

    assert docker_engine_answers(timeout=0.5) is False
    assert time.monotonic() - started < 3


def test_docker_ping_is_true_for_an_engine_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)
        engine = threading.Thread(target=answer_one_ping, args=(listener,))
        engine.start()
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{listener.getsockname()[1]}")
        try:
            assert docker_engine_answers() is True
        finally:
            engine.join(timeout=5)


def answer_one_ping(listener: socket.socket) -> None:
    """What dockerd says to GET /_ping."""
    connection, _ = listener.accept()
    with connection:
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK")
