"""The relay and `payout-manager events` over TLS and SASL/SCRAM (SPEC 5, outbound), on a real broker.

The broker is this module's own: Apache Kafka with a PLAINTEXT listener (where the test looks behind
the payout manager's back), an SSL one, and a SASL_SSL one with a SCRAM user. Real `serve` processes
relay; the `events` command reads back what they published.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from support.events import (
    Stack,
    by_payout,
    events_command,
    outbox_size,
    records_on_topic,
    stored_events,
    wait_for_empty_outbox,
)
from support.payouts import confirm, create

from local_stack.certificates import Authority, Issued
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.kafka import SecuredKafka, secured_local_kafka
from payout_manager_testing.processes import free_port

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    with secured_local_kafka(tmp_path_factory.mktemp("secured-kafka")) as kafka:
        yield kafka


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    """Stacks of one test (each its own database, PartyManagement and topic), closed after it."""
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.close()


def new_stack(
    stacks: list[Stack], postgres_server_url: str, directory: Path, kafka_security: dict[str, str]
) -> Stack:
    stack = Stack(
        postgres_server_url,
        kafka_security["PM_KAFKA_BOOTSTRAP_SERVERS"],
        directory,
        kafka_security={k: v for k, v in kafka_security.items() if k != "PM_KAFKA_BOOTSTRAP_SERVERS"},
    )
    stacks.append(stack)
    return stack


def read_all(stack: Stack, expected_events: int) -> dict[str, list[dict[str, object]]]:
    """What `payout-manager events` prints of the stack's topic, over the stack's security settings."""
    run = events_command(
        stack.events_env(), "--from-beginning", "--max-events", str(expected_events), "--idle-timeout", "30"
    )
    assert run.returncode == 0, run.stderr
    return by_payout(run.stdout)


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_serve_relays_over_the_secured_listener_and_events_reads_back_over_it(
    protocol: str, secured: SecuredKafka, stacks: list[Stack], postgres_server_url: str, tmp_path: Path
) -> None:
    settings = secured.ssl_settings() if protocol == "SSL" else secured.sasl_ssl_settings()
    stack = new_stack(stacks, postgres_server_url, tmp_path, settings)
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=1_000_000)
    payout_id = create(served.payouts, shop.party_id, shop.shop_id, 1_000).payout_id
    confirm(served.payouts, payout_id)

    wait_for_empty_outbox(stack.database_url, TIMEOUT)

    assert read_all(stack, 2) == stored_events(served.payouts, [payout_id])
    # It went through the secured listener into the same broker: the PLAINTEXT one sees it too.
    assert records_on_topic(secured.broker.bootstrap_servers, stack.topic) == 2


def test_a_wrong_password_keeps_serving_publishes_nothing_and_the_right_one_after_a_restart_publishes_all(
    secured: SecuredKafka, stacks: list[Stack], postgres_server_url: str, tmp_path: Path
) -> None:
    wrong_password = "wrong-password-of-the-test"
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text(wrong_password + "\n")
    stack = new_stack(stacks, postgres_server_url, tmp_path, secured.sasl_ssl_settings())
    wrong = stack.serve(workers=1, env=secured.sasl_ssl_settings(password_file=wrong_file))
    shop = stack.world.add_shop(funds=1_000_000)

    payout_ids = [create(wrong.payouts, shop.party_id, shop.shop_id, 1_000 + n).payout_id for n in range(2)]

    wrong.wait_for_log("Authentication failed", timeout=TIMEOUT)
    assert outbox_size(stack.database_url) == 2
    assert records_on_topic(secured.broker.bootstrap_servers, stack.topic) == 0
    refused_output = wrong.process.output()
    assert wrong.close() == 0, refused_output

    right = stack.serve(workers=1)
    wait_for_empty_outbox(stack.database_url, TIMEOUT)

    assert read_all(stack, 2) == stored_events(right.payouts, payout_ids)
    for output in (refused_output, right.process.output()):
        assert wrong_password not in output and secured.password not in output


def pem_body(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block, each of which would betray the key."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


READER_TOKEN = "reader-token-0d1e2f"
WRONG_TOKEN = "wrong-token-3a4b5c"
DATABASE_PASSWORD = "database-password-6d7e8f"


def access_policy(path: Path) -> Path:
    """The treasury (by certificate) may do anything; the reader (by token) may read payouts."""
    path.write_text(
        json.dumps(
            {
                "roles": {
                    "all": ["payout_manager.v1.PayoutManagement/*", "accounter.v1.Accounter/*"],
                    "reader": ["payout_manager.v1.PayoutManagement/GetPayout"],
                },
                "principals": [
                    {"id": "spiffe://test/treasury", "roles": ["all"]},
                    {
                        "id": "reader",
                        "token_sha256": hashlib.sha256(READER_TOKEN.encode()).hexdigest(),
                        "roles": ["reader"],
                    },
                ],
            }
        )
    )
    return path


def refusal_text(call: Callable[[], object]) -> str:
    """Everything a refused caller is told: code, message and trailing metadata (the details)."""
    with pytest.raises(grpc.RpcError) as refused:
        call()
    error = refused.value
    return f"{error.code()} {error.details()} {error.trailing_metadata()!r}"


def test_a_run_with_tls_and_sasl_shows_no_secret_in_any_log_line_metric_or_error(
    secured: SecuredKafka, stacks: list[Stack], postgres_server_url: str, tmp_path: Path
) -> None:
    """Mutual TLS and a policy with a token on serve, SASL_SSL to Kafka, a database password file:
    serve's every line, the events command's, the metrics and what refused callers hear hold no
    key, no token and no password."""
    ca = Authority()
    serving = ca.server()
    treasury = ca.issue("treasury", uris=("spiffe://test/treasury",))
    stranger = ca.issue("stranger", uris=("spiffe://test/stranger",))
    cert, key = serving.write(tmp_path, "serve")
    (tmp_path / "clients-ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "database.password").write_text(DATABASE_PASSWORD + "\n")
    metrics = f"127.0.0.1:{free_port()}"
    stack = new_stack(
        stacks, postgres_server_url, tmp_path, secured.sasl_ssl_settings(mechanism="SCRAM-SHA-256")
    )
    served = stack.serve(
        workers=2,
        env={
            "PM_TLS_CERT_FILE": str(cert),
            "PM_TLS_KEY_FILE": str(key),
            "PM_TLS_CLIENT_CA_FILE": str(tmp_path / "clients-ca.crt"),
            "PM_AUTH_POLICY_FILE": str(access_policy(tmp_path / "policy.json")),
            # The test server trusts local connections, so it never asks for this password; what is
            # checked is that nothing of the service repeats it.
            "PM_DATABASE_PASSWORD_FILE": str(tmp_path / "database.password"),
            "PM_METRICS_ADDRESS": metrics,
        },
        credentials=grpc.ssl_channel_credentials(ca.cert_pem, treasury.key_pem, treasury.cert_pem),
    )
    shop = stack.world.add_shop(funds=1_000_000)
    payout_id = create(served.payouts, shop.party_id, shop.shop_id, 1_000).payout_id

    def stub(client: Issued, token: str) -> payout_manager_pb2_grpc.PayoutManagementStub:
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem),
            grpc.access_token_call_credentials(token),
        )
        return payout_manager_pb2_grpc.PayoutManagementStub(grpc.secure_channel(served.address, credentials))

    request = pb.GetPayoutRequest(payout_id=payout_id)
    assert stub(stranger, READER_TOKEN).GetPayout(request).payout_id == payout_id
    errors = [
        refusal_text(lambda: stub(stranger, WRONG_TOKEN).GetPayout(request)),
        refusal_text(lambda: stub(stranger, READER_TOKEN).ConfirmPayout(pb.ConfirmPayoutRequest())),
    ]
    wait_for_empty_outbox(stack.database_url, TIMEOUT)
    events = events_command(
        stack.events_env(), "--from-beginning", "--max-events", "1", "--idle-timeout", "30"
    )
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    expected = stored_events(served.payouts, [payout_id])
    assert served.close() == 0

    assert events.returncode == 0, events.stderr
    assert by_payout(events.stdout) == expected
    seen = {
        "serve": served.process.output(),
        "events": events.stdout + events.stderr,
        "metrics": scraped,
        "the refusals": "\n".join(errors),
        "the topic": repr(expected),
    }
    secrets = {
        "the SASL password": [secured.password],
        "the database password": [DATABASE_PASSWORD],
        "the bearer token": [READER_TOKEN],
        "the refused token": [WRONG_TOKEN],
    } | {
        f"the {name} key": pem_body(pem)
        for name, pem in (
            ("serve", serving.key_pem),
            ("broker", secured.key_pem),
            ("treasury", treasury.key_pem),
            ("stranger", stranger.key_pem),
        )
    }
    leaks = [
        f"{secret} in {where}"
        for where, text in seen.items()
        for secret, pieces in secrets.items()
        if any(piece in text for piece in pieces)
    ]
    assert not leaks
    # The output grepped is the real thing: serve's log of a run that published, refused and read.
    assert "relay: leading" in seen["serve"]
    assert "UNKNOWN_CALLER" in seen["serve"] and "METHOD_NOT_ALLOWED" in seen["serve"]
    assert "UNAUTHENTICATED" in errors[0] and "PERMISSION_DENIED" in errors[1]
