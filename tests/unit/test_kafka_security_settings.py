"""Kafka's security settings (SPEC 5, outbound) and the one librdkafka configuration made of them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from local_stack.certificates import Authority
from payout_manager import settings
from payout_manager.events.consumer import Options, consumer_config
from payout_manager.events.kafka_config import KafkaConnection, client_config
from payout_manager.events.relay import producer_config
from payout_manager.settings import Secret, SettingsError

PASSWORD = "kafka-Pa55word-never-shown"
SERVERS = "127.0.0.1:9093"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-ca.crt"
    path.write_bytes(Authority().cert_pem)
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD + "\n")
    return path


def sasl_ssl(ca_file: Path, password_file: Path, **overrides: str) -> dict[str, str]:
    return {
        "PM_KAFKA_BOOTSTRAP_SERVERS": SERVERS,
        "PM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PM_KAFKA_SSL_CA_FILE": str(ca_file),
        "PM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PM_KAFKA_SASL_USERNAME": "payout-manager",
        "PM_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        **overrides,
    }


def test_plaintext_is_the_default_and_its_configuration_is_only_the_brokers() -> None:
    loaded = settings.load({"PM_KAFKA_BOOTSTRAP_SERVERS": SERVERS})

    assert loaded.kafka_security_protocol == "PLAINTEXT"
    assert client_config(KafkaConnection.from_settings(loaded)) == {"bootstrap.servers": SERVERS}


def test_sasl_ssl_reaches_every_client_configuration_with_the_password_of_the_file(
    ca_file: Path, password_file: Path
) -> None:
    connection = KafkaConnection.from_settings(settings.load(sasl_ssl(ca_file, password_file)))
    security = {
        "bootstrap.servers": SERVERS,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(ca_file),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "payout-manager",
        # One trailing newline stripped, nothing else.
        "sasl.password": PASSWORD,
    }

    assert client_config(connection) == security
    for config in (producer_config(connection), consumer_config(Options(connection, "topic"))):
        assert {name: config[name] for name in security} == security


def test_ssl_without_a_ca_file_uses_the_system_trust_store() -> None:
    loaded = settings.load({"PM_KAFKA_BOOTSTRAP_SERVERS": SERVERS, "PM_KAFKA_SECURITY_PROTOCOL": "ssl"})

    assert client_config(KafkaConnection.from_settings(loaded)) == {
        "bootstrap.servers": SERVERS,
        "security.protocol": "ssl",
    }


def test_the_password_is_in_no_repr_of_the_settings_or_the_connection(
    ca_file: Path, password_file: Path
) -> None:
    loaded = settings.load(sasl_ssl(ca_file, password_file))
    connection = KafkaConnection.from_settings(loaded)

    for shown in (repr(loaded), str(loaded), repr(connection), f"{loaded.kafka_sasl_password}"):
        assert PASSWORD not in shown
    assert "'***'" in repr(loaded)
    # serve hands its settings to worker processes by pickle: the secret survives the trip.
    assert pickle.loads(pickle.dumps(loaded)) == loaded


def test_only_one_trailing_newline_leaves_the_password(tmp_path: Path) -> None:
    for content, password in (("p\n", "p"), ("p\r\n", "p"), ("p\n\n", "p\n"), ("p", "p"), (" p ", " p ")):
        (tmp_path / "password").write_text(content, newline="")
        env = {
            "PM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "PM_KAFKA_SASL_MECHANISM": "PLAIN",
            "PM_KAFKA_SASL_USERNAME": "u",
            "PM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        }
        assert settings.load(env).kafka_sasl_password == Secret(password), repr(content)


def test_mechanism_and_protocol_are_taken_in_any_case(ca_file: Path, password_file: Path) -> None:
    loaded = settings.load(
        sasl_ssl(
            ca_file,
            password_file,
            PM_KAFKA_SECURITY_PROTOCOL="sasl_ssl",
            PM_KAFKA_SASL_MECHANISM="scram-sha-256",
        )
    )

    assert (loaded.kafka_security_protocol, loaded.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


@pytest.mark.parametrize(
    ("overrides", "named", "says"),
    [
        ({"PM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PM_KAFKA_SECURITY_PROTOCOL", "not one of"),
        ({"PM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "PM_KAFKA_SASL_MECHANISM", "not one of"),
        ({"PM_KAFKA_SASL_MECHANISM": ""}, "PM_KAFKA_SASL_MECHANISM", "is not set"),
        ({"PM_KAFKA_SASL_USERNAME": " "}, "PM_KAFKA_SASL_USERNAME", "is not set"),
        ({"PM_KAFKA_SASL_PASSWORD_FILE": ""}, "PM_KAFKA_SASL_PASSWORD_FILE", "is not set"),
        (
            {"PM_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"},
            "PM_KAFKA_SASL_PASSWORD_FILE",
            "cannot read",
        ),
        ({"PM_KAFKA_SSL_CA_FILE": "/nonexistent/ca.crt"}, "PM_KAFKA_SSL_CA_FILE", "cannot read"),
        ({"PM_KAFKA_SSL_CA_FILE": __file__}, "PM_KAFKA_SSL_CA_FILE", "no PEM certificate"),
        # SASL settings with a protocol that has no SASL, a CA file with one that has no TLS.
        ({"PM_KAFKA_SECURITY_PROTOCOL": "SSL"}, "PM_KAFKA_SASL_MECHANISM", "needs SASL"),
        ({"PM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "PM_KAFKA_SSL_CA_FILE", "needs TLS"),
    ],
)
def test_a_bad_kafka_security_setting_stops_with_one_line_naming_it(
    ca_file: Path, password_file: Path, overrides: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings.load(sasl_ssl(ca_file, password_file, **overrides))

    message = str(refused.value)
    assert named in message and says in message, message
    assert "\n" not in message
    assert PASSWORD not in message


def test_sasl_settings_with_plaintext_are_refused_each_naming_itself(password_file: Path) -> None:
    for name, value in (
        ("PM_KAFKA_SASL_MECHANISM", "PLAIN"),
        ("PM_KAFKA_SASL_USERNAME", "u"),
        ("PM_KAFKA_SASL_PASSWORD_FILE", str(password_file)),
    ):
        with pytest.raises(
            SettingsError, match=f"^{name} needs SASL, but PM_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"
        ):
            settings.load({name: value})


def test_an_empty_password_file_is_refused_without_showing_anything(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("\n")
    env = {
        "PM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PM_KAFKA_SASL_MECHANISM": "PLAIN",
        "PM_KAFKA_SASL_USERNAME": "u",
        "PM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
    }

    with pytest.raises(SettingsError, match=r"^PM_KAFKA_SASL_PASSWORD_FILE is malformed: .* is empty$"):
        settings.load(env)


def test_a_connection_needs_the_brokers() -> None:
    with pytest.raises(SettingsError, match=r"^PM_KAFKA_BOOTSTRAP_SERVERS is not set"):
        KafkaConnection.from_settings(settings.load({}))
