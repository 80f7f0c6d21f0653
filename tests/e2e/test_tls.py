"""`serve` over TLS and mutual TLS (SPEC 5), with certificates replaced while it runs.

Real `serve --workers 2` processes; what a client is shown is read off the TLS handshake itself.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.processes import free_port
from support.serving import PartyManagementServer, Served, run_serve, serve

from local_stack.certificates import Authority, Issued
from payout_manager.api import health

HANDSHAKE_TIMEOUT = 5.0


def credentials(ca: Authority, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=None if client is None else client.key_pem,
        certificate_chain=None if client is None else client.cert_pem,
    )


def healthy(address: str, channel_credentials: grpc.ChannelCredentials | None) -> bool:
    return health.is_serving(address, credentials=channel_credentials, timeout=3)


def certificate_shown(address: str, ca: Authority, client: Issued | None = None, *, tmp: Path) -> bytes:
    """The DER of the certificate the server presents on a new connection."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        cert, key = client.write(tmp, "probe")
        context.load_cert_chain(cert, key)
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=HANDSHAKE_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        shown = tls.getpeercert(binary_form=True)
    assert shown is not None
    return shown


@pytest.fixture
def serve_tls(
    database_url: str, party_management: PartyManagementServer, tmp_path: Path
) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(ca: Authority, env: dict[str, str], client: Issued | None = None) -> Served:
        return serve(
            2,
            {"PM_DATABASE_URL": database_url, "PM_PARTY_MANAGEMENT_ADDRESS": party_management.address, **env},
            tmp_path / f"serve-{len(started)}.log",
            started=started,
            credentials=credentials(ca, client),
        )

    yield start
    for served in started:
        served.stop(timeout=10)


def tls_files(tmp_path: Path, ca: Authority, *, client_ca: bool = False) -> tuple[dict[str, str], Path, Path]:
    cert, key = ca.server().write(tmp_path, "server")
    env = {"PM_TLS_CERT_FILE": str(cert), "PM_TLS_KEY_FILE": str(key)}
    if client_ca:
        ca_file = tmp_path / "clients-ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        env["PM_TLS_CLIENT_CA_FILE"] = str(ca_file)
    return env, cert, key


def test_serve_over_tls_answers_a_client_that_trusts_its_ca_and_no_plaintext_one(
    serve_tls: Callable[..., Served], tmp_path: Path
) -> None:
    ca = Authority()
    env, _, _ = tls_files(tmp_path, ca)

    served = serve_tls(ca, env)

    assert healthy(served.address, credentials(ca))
    assert not healthy(served.address, None)
    assert not healthy(served.address, credentials(Authority("someone else")))


def test_mutual_tls_serves_a_client_certificate_of_its_ca_and_refuses_others(
    serve_tls: Callable[..., Served], tmp_path: Path
) -> None:
    ca = Authority()
    env, _, _ = tls_files(tmp_path, ca, client_ca=True)
    client = ca.issue("back-office", uris=("spiffe://bank/back-office",))

    served = serve_tls(ca, env, client)

    assert healthy(served.address, credentials(ca, client))
    assert not healthy(served.address, credentials(ca))
    assert not healthy(served.address, credentials(ca, Authority("a stranger").issue("back-office")))


def test_a_replaced_certificate_reaches_new_connections_while_open_ones_keep_working(
    serve_tls: Callable[..., Served], tmp_path: Path
) -> None:
    ca = Authority()
    env, cert, key = tls_files(tmp_path, ca)
    served = serve_tls(ca, env)
    first = certificate_shown(served.address, ca, tmp=tmp_path)
    with grpc.secure_channel(served.address, credentials(ca)) as open_channel:
        health = health_pb2_grpc.HealthStub(open_channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=3)

        renewed = ca.server()
        # As an operator's tooling does: write beside, then rename over, key first.
        for path, content in ((key, renewed.key_pem), (cert, renewed.cert_pem)):
            path.with_suffix(".new").write_bytes(content)
            os.replace(path.with_suffix(".new"), path)

        # Both workers (the kernel spreads new connections) show the new one on new connections.
        shown = [certificate_shown(served.address, ca, tmp=tmp_path) for _ in range(12)]
        assert set(shown) == {renewed.der}
        assert first != renewed.der
        # The connection opened before the rotation still answers.
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=3).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_a_new_key_that_does_not_match_keeps_the_last_good_certificate(
    serve_tls: Callable[..., Served], tmp_path: Path
) -> None:
    ca = Authority()
    env, cert, _ = tls_files(tmp_path, ca)
    served = serve_tls(ca, env)
    first = certificate_shown(served.address, ca, tmp=tmp_path)

    cert.write_bytes(ca.server().cert_pem)  # a new certificate, but the old key
    time.sleep(0.1)

    assert {certificate_shown(served.address, ca, tmp=tmp_path) for _ in range(6)} == {first}
    assert healthy(served.address, credentials(ca))
    served.wait_for_log("do not load as a pair")


def test_plaintext_on_an_address_other_than_loopback_stops_serve_with_one_line(database_url: str) -> None:
    run = run_serve({"PM_DATABASE_URL": database_url}, f"0.0.0.0:{free_port()}")

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "PM_ALLOW_INSECURE" in run.stderr, run.stderr


def test_a_key_that_is_not_the_certificates_stops_serve_with_one_line(
    database_url: str, tmp_path: Path
) -> None:
    ca = Authority()
    cert, _ = ca.server().write(tmp_path, "server")
    _, other_key = ca.server().write(tmp_path, "other")

    run = run_serve(
        {"PM_DATABASE_URL": database_url, "PM_TLS_CERT_FILE": str(cert), "PM_TLS_KEY_FILE": str(other_key)},
        f"127.0.0.1:{free_port()}",
    )

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "matching PEM pair" in run.stderr, run.stderr


def test_plaintext_on_any_address_serves_when_allowed(
    database_url: str, party_management: PartyManagementServer, tmp_path: Path
) -> None:
    env = {
        "PM_DATABASE_URL": database_url,
        "PM_PARTY_MANAGEMENT_ADDRESS": party_management.address,
        "PM_ALLOW_INSECURE": "true",
        "PM_GRPC_ADDRESS": f"0.0.0.0:{free_port()}",
    }
    process = subprocess.Popen([sys.executable, "-m", "payout_manager", "serve"], env={**os.environ, **env})
    try:
        port = env["PM_GRPC_ADDRESS"].rpartition(":")[2]
        deadline = time.monotonic() + 30
        while not healthy(f"127.0.0.1:{port}", None):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
