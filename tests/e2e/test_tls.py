"""`serve` over TLS and mutual TLS (SPEC 5), with certificates replaced while it runs; `serve`
calling the reference PartyManagement over TLS and mutual TLS.

Real `serve --workers 2` and `party-management` processes; what a client is shown is read off the
TLS handshake itself.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import payouts
from support.serving import PartyManagementServer, Served, StartServe, run_serve, run_to_exit, serve

from local_stack.certificates import Authority, Issued
from payout_manager.api import health
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.processes import Process, free_port, wait_until_listening
from payout_manager_testing.world import PLAIN_TERMS, World

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


@pytest.mark.parametrize("program", ["serve", "party-management"])
def test_plaintext_on_an_address_other_than_loopback_stops_the_server_with_one_line(
    database_url: str, party_management: PartyManagementServer, program: str
) -> None:
    arguments = ["--config", str(party_management.config_path)] if program == "party-management" else []

    run = run_to_exit(
        [program, *arguments, "--address", f"0.0.0.0:{free_port()}"], {"PM_DATABASE_URL": database_url}
    )

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "PM_ALLOW_INSECURE" in run.stderr, run.stderr


@pytest.mark.parametrize("side", ["its own", "its client's to PartyManagement"])
def test_a_key_that_is_not_the_certificates_stops_serve_with_one_line(
    database_url: str, tmp_path: Path, side: str
) -> None:
    ca = Authority()
    cert, _ = ca.server().write(tmp_path, "server")
    _, other_key = ca.server().write(tmp_path, "other")
    if side == "its own":
        env = {"PM_TLS_CERT_FILE": str(cert), "PM_TLS_KEY_FILE": str(other_key)}
    else:
        env = {
            "PM_PARTY_MANAGEMENT_TLS_CA_FILE": ca_file(tmp_path, ca),
            "PM_PARTY_MANAGEMENT_TLS_CERT_FILE": str(cert),
            "PM_PARTY_MANAGEMENT_TLS_KEY_FILE": str(other_key),
        }

    run = run_serve({"PM_DATABASE_URL": database_url, **env}, f"127.0.0.1:{free_port()}")

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


# --- serve calling the reference PartyManagement over TLS ---------------------------------------


@pytest.fixture
def party_management_tls(
    party_management: PartyManagementServer, tmp_path: Path
) -> Iterator[Callable[[dict[str, str], grpc.ChannelCredentials], str]]:
    """Starts reference PartyManagement processes with PM_TLS_* `env` on the session's config (World
    writes it); returns the address once `credentials` can connect."""
    started: list[Process] = []

    def start(env: dict[str, str], channel_credentials: grpc.ChannelCredentials) -> str:
        address = f"127.0.0.1:{free_port()}"
        process = Process(
            ["party-management", "--config", str(party_management.config_path), "--address", address],
            env,
            tmp_path / f"party-management-{len(started)}.log",
        )
        started.append(process)
        wait_until_listening(address, process, credentials=channel_credentials)
        return address

    yield start
    for process in started:
        process.stop()


def ca_file(tmp_path: Path, ca: Authority, name: str = "party-management-ca.crt") -> str:
    path = tmp_path / name
    path.write_bytes(ca.cert_pem)
    return str(path)


def client_tls_env(tmp_path: Path, ca: Authority, client: Issued | None = None) -> dict[str, str]:
    """serve's PM_PARTY_MANAGEMENT_TLS_* settings: trust `ca`, show `client` if given."""
    env = {"PM_PARTY_MANAGEMENT_TLS_CA_FILE": ca_file(tmp_path, ca, f"trusted-{uuid.uuid4().hex[:8]}.crt")}
    if client is not None:
        cert, key = client.write(tmp_path, f"serve-client-{uuid.uuid4().hex[:8]}")
        env |= {"PM_PARTY_MANAGEMENT_TLS_CERT_FILE": str(cert), "PM_PARTY_MANAGEMENT_TLS_KEY_FILE": str(key)}
    return env


def test_serve_with_two_workers_creates_a_payout_through_party_management_over_tls(
    start_serve: StartServe, party_management_tls: Callable[..., str], world: World, tmp_path: Path
) -> None:
    ca = Authority()
    env, _, _ = tls_files(tmp_path, ca)
    address = party_management_tls(env, credentials(ca))
    served = start_serve(2, party_management_address=address, env=client_tls_env(tmp_path, ca))
    shop = world.add_shop(funds=100_000, terms=PLAIN_TERMS)

    with grpc.insecure_channel(served.address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        # Several calls: the kernel spreads the connections between the two workers.
        created = [payouts.create(stub, shop.party_id, shop.shop_id, 1_000) for _ in range(4)]

    assert {payout.status for payout in created} == {pb.PAYOUT_STATUS_UNPAID}
    assert world.balance(shop.settlement).min_available_amount == 100_000 - 4 * 1_000


@pytest.fixture
def mutual_tls_party_management(
    party_management_tls: Callable[..., str], tmp_path: Path
) -> tuple[Authority, str]:
    """A reference PartyManagement that requires a client certificate of its CA; (the CA, its address)."""
    ca = Authority()
    env, _, _ = tls_files(tmp_path, ca, client_ca=True)
    return ca, party_management_tls(env, credentials(ca, ca.issue("probe")))


def test_serve_with_a_client_certificate_creates_a_payout_through_mutual_tls(
    start_serve: StartServe,
    mutual_tls_party_management: tuple[Authority, str],
    world: World,
    tmp_path: Path,
) -> None:
    ca, address = mutual_tls_party_management
    client = ca.issue("payout-manager", uris=("spiffe://bank/payout-manager",))
    served = start_serve(1, party_management_address=address, env=client_tls_env(tmp_path, ca, client))
    shop = world.add_shop(funds=100_000, terms=PLAIN_TERMS)

    with grpc.insecure_channel(served.address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        created = payouts.create(stub, shop.party_id, shop.shop_id, 1_000)

    assert created.status == pb.PAYOUT_STATUS_UNPAID


@pytest.mark.parametrize("failing", ["no client certificate", "a CA that did not sign the server's"])
def test_a_failed_handshake_with_party_management_is_unavailable_and_changes_nothing(
    start_serve: StartServe,
    mutual_tls_party_management: tuple[Authority, str],
    world: World,
    tmp_path: Path,
    failing: str,
) -> None:
    ca, address = mutual_tls_party_management
    if failing == "no client certificate":
        env = client_tls_env(tmp_path, ca)
    else:
        env = client_tls_env(tmp_path, Authority("someone else"), ca.issue("payout-manager"))
    served = start_serve(1, party_management_address=address, env=env)
    shop = world.add_shop(funds=100_000, terms=PLAIN_TERMS)
    before = [world.balance(account) for account in (shop.settlement, shop.guarantee, shop.payout)]
    payout_id = f"tls-refused-{uuid.uuid4()}"

    with grpc.insecure_channel(served.address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            payouts.create(stub, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id, timeout=3)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPayout(pb.GetPayoutRequest(payout_id=payout_id), timeout=5)

    assert payouts.refusal(refused.value) == (grpc.StatusCode.UNAVAILABLE, "PARTY_MANAGEMENT_UNAVAILABLE")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert [world.balance(account) for account in (shop.settlement, shop.guarantee, shop.payout)] == before


def test_the_reference_party_management_serves_plaintext_off_loopback_when_allowed(
    party_management: PartyManagementServer, tmp_path: Path
) -> None:
    port = free_port()
    process = Process(
        ["party-management", "--config", str(party_management.config_path), "--address", f"0.0.0.0:{port}"],
        {"PM_ALLOW_INSECURE": "true"},
        tmp_path / "party-management.log",
    )
    try:
        wait_until_listening(f"127.0.0.1:{port}", process)
    finally:
        assert process.stop() == 0
