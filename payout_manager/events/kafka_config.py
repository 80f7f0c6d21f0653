"""The one place a librdkafka configuration is made: the relay's producer and admin client, `events`.

Each client adds its own tuning to `client_config(connection)`; how to reach the brokers, and how
to prove who we are to them (TLS, SASL), is decided here only (SPEC 5, outbound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payout_manager.settings import Secret, Settings, SettingsError


@dataclass(frozen=True)
class KafkaConnection:
    """The brokers and the security of the connection to them; the password is a Secret."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    # PEM CA(s) the brokers' certificates are checked against; None: the system's trust store.
    ssl_ca_file: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection the settings describe (settings.load has checked the combination)."""
        if not settings.kafka_bootstrap_servers:
            raise SettingsError(
                "PM_KAFKA_BOOTSTRAP_SERVERS is not set: give the Kafka brokers, e.g. 127.0.0.1:9092"
            )
        return cls(
            settings.kafka_bootstrap_servers,
            settings.kafka_security_protocol,
            settings.kafka_ssl_ca_file,
            settings.kafka_sasl_mechanism,
            settings.kafka_sasl_username,
            settings.kafka_sasl_password,
        )


def client_config(connection: KafkaConnection) -> dict[str, Any]:
    """librdkafka's properties for reaching the brokers; PLAINTEXT adds nothing to the servers.

    TLS checks the broker's certificate and its name (librdkafka's default `https` endpoint
    identification), against `ssl_ca_file` when given.
    """
    config: dict[str, Any] = {"bootstrap.servers": connection.bootstrap_servers}
    if connection.security_protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = connection.security_protocol.lower()
    if connection.ssl_ca_file is not None:
        config["ssl.ca.location"] = str(connection.ssl_ca_file)
    if connection.sasl_mechanism is not None:
        config["sasl.mechanism"] = connection.sasl_mechanism
    if connection.sasl_username is not None:
        config["sasl.username"] = connection.sasl_username
    if connection.sasl_password is not None:
        config["sasl.password"] = connection.sasl_password.reveal()
    return config
