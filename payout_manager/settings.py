"""The one settings object, read from the environment (SPEC 4); flags may override it.

A missing or malformed setting stops the program at start with one line naming it.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from payout_manager.payouts.model import DEFAULT_MAX_UNRESOLVED_PER_SHOP
from payout_manager.storage import urls


class SettingsError(Exception):
    """A setting is missing or malformed; the message is the one line to print."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    grpc_address: str = "127.0.0.1:8022"
    party_management_address: str = "127.0.0.1:8023"
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "pm-events-payout"
    # How long one PartyManagement call may take, and how long a request may wait for retries.
    party_management_timeout: float = 2.0
    # PEM files for the calls to PartyManagement: with a CA the client speaks TLS and verifies the
    # server against it; with a certificate and its key too, it shows them (mutual TLS).
    party_management_tls_ca_file: Path | None = None
    party_management_tls_cert_file: Path | None = None
    party_management_tls_key_file: Path | None = None
    database_pool_size: int = 10
    # The password for PM_DATABASE_URL's user, read from this file (require_database_url).
    database_password_file: Path | None = None
    shutdown_grace: float = 10.0
    # HOST:PORT of the Prometheus scrape endpoint; None: no metrics served.
    metrics_address: str | None = None
    log_level: str = "INFO"
    # PEM files: with a certificate and its key `serve` speaks TLS; with a client CA too, it
    # requires and verifies client certificates (mutual TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Plaintext on an address other than loopback, which `serve` otherwise refuses.
    allow_insecure: bool = False
    # The access policy (SPEC 5), reread when it changes; None: every caller anonymous, every right.
    auth_policy_file: Path | None = None
    # How the relay and `events` reach Kafka (SPEC 5, outbound); checked together by _kafka_security.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    # Seconds after its creation that an UNPAID payout is cancelled as expired; None: never (SPEC 1.1).
    unpaid_payout_ttl: int | None = None
    # A shop's payouts UNPAID or PAID at once; one more create is PAYOUT_LIMIT_EXCEEDED (SPEC 1.1).
    max_unresolved_payouts_per_shop: int = DEFAULT_MAX_UNRESOLVED_PER_SHOP
    # A replica for the reads that may be a little stale (SPEC 4); None: every read on the primary.
    database_read_url: str | None = None

    def require_database_url(self) -> URL:
        """PM_DATABASE_URL with the password of PM_DATABASE_PASSWORD_FILE, where set, for every connection.

        A URL object, never a string: its repr and str mask the password. The file is read at each
        call, so a process (or worker) takes a new password when it starts.
        """
        if not self.database_url:
            raise SettingsError("PM_DATABASE_URL is not set: give the PostgreSQL URL, e.g. postgresql://...")
        return self._with_password(self.database_url)

    def read_database_url(self) -> URL | None:
        """PM_DATABASE_READ_URL, with the password of PM_DATABASE_PASSWORD_FILE as above; None without it."""
        return None if self.database_read_url is None else self._with_password(self.database_read_url)

    def _with_password(self, text: str) -> URL:
        url = urls.parse(text)
        if self.database_password_file is None:
            return url
        return url.set(password=_password("PM_DATABASE_PASSWORD_FILE", self.database_password_file))


def address(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{name} is malformed: {value!r} is not HOST:PORT")
    return value


def kafka_servers(name: str, value: str) -> str:
    """A comma-separated list of HOST:PORT brokers (a `scheme://` prefix, as librdkafka allows)."""
    for server in value.split(","):
        address(name, server.strip().rpartition("://")[2])
    return value


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def kafka_topic(name: str, value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise SettingsError(
            f"{name} is malformed: {value!r} is not a Kafka topic name ([A-Za-z0-9._-], 1-249)"
        )
    return value


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} is malformed: {value!r} is not a number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise SettingsError(f"{name} is malformed: {value!r} must be a positive number of seconds")
    return number


def _positive_int(name: str, value: str, unit: str = "") -> int:
    # ASCII digits only: str.isdigit takes '²', which int() refuses.
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise SettingsError(f"{name} is malformed: {value!r} must be a positive whole number{unit}")
    return int(value)


# A century: any longer is never, and would overflow the date arithmetic.
_MAX_TTL = 100 * 365 * 24 * 3600


def _ttl(name: str, value: str) -> int:
    seconds = _positive_int(name, value, " of seconds")
    if seconds > _MAX_TTL:
        raise SettingsError(
            f"{name} is malformed: {value!r} seconds is more than a century; unset it for never"
        )
    return seconds


# More than anyone could mean, and well inside the procedure's bigint.
_MAX_LIMIT = 1_000_000_000


def _limit(name: str, value: str) -> int:
    limit = _positive_int(name, value)
    if limit > _MAX_LIMIT:
        raise SettingsError(f"{name} is malformed: {value!r} is more than {_MAX_LIMIT:_}")
    return limit


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(name: str, value: str) -> str:
    if value.upper() not in _LOG_LEVELS:
        raise SettingsError(f"{name} is malformed: {value!r} is not one of {', '.join(_LOG_LEVELS)}")
    return value.upper()


def _read(name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SettingsError(f"{name} is malformed: cannot read {str(path)!r} ({error.strerror})") from None


def _readable_file(name: str, value: str) -> Path:
    path = Path(value)
    _read(name, path)
    return path


def _password(name: str, path: Path) -> str:
    """The file's content without one trailing newline; the error names the file, never the content."""
    # As `echo secret > file` and editors leave it; a password never ends in a newline.
    content = _read(name, path).removesuffix(b"\n").removesuffix(b"\r")
    if not content:
        raise SettingsError(f"{name} is malformed: {str(path)!r} is empty")
    try:
        return content.decode()
    except UnicodeDecodeError:
        raise SettingsError(f"{name} is malformed: {str(path)!r} is not UTF-8 text") from None


def _boolean(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise SettingsError(f"{name} is malformed: {value!r} is not true or false")
    return value.lower() == "true"


class Secret:
    """A value never shown: its repr and str are '***'; `reveal()` hands it to the one that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class _KafkaSecurity(TypedDict):
    kafka_security_protocol: str
    kafka_ssl_ca_file: Path | None
    kafka_sasl_mechanism: str | None
    kafka_sasl_username: str | None
    kafka_sasl_password: Secret | None


def _kafka_security(get: Callable[[str], str | None]) -> _KafkaSecurity:
    """The kafka_* security fields of Settings, each combination checked with a line of its own.

    The password is read here, at start, so that a missing or empty file stops the program at once
    rather than leaving a relay that can never connect; from then on it is a Secret.
    """
    given = get("PM_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT"
    protocol = given.upper()
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(
            f"PM_KAFKA_SECURITY_PROTOCOL is malformed: {given!r} is not one of "
            f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    tls = protocol in ("SSL", "SASL_SSL")
    sasl = protocol.startswith("SASL_")
    ca = get("PM_KAFKA_SSL_CA_FILE")
    if ca and not tls:
        raise SettingsError(
            f"PM_KAFKA_SSL_CA_FILE needs TLS, but PM_KAFKA_SECURITY_PROTOCOL is {protocol}: "
            "use SSL or SASL_SSL"
        )
    names = ("PM_KAFKA_SASL_MECHANISM", "PM_KAFKA_SASL_USERNAME", "PM_KAFKA_SASL_PASSWORD_FILE")
    mechanism, username, password_file = (get(name) for name in names)
    for name, value in zip(names, (mechanism, username, password_file), strict=True):
        if value and not sasl:
            raise SettingsError(
                f"{name} needs SASL, but PM_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        if sasl and not value:
            raise SettingsError(f"{name} is not set: PM_KAFKA_SECURITY_PROTOCOL={protocol} needs it")
    if mechanism and mechanism.upper() not in KAFKA_SASL_MECHANISMS:
        raise SettingsError(
            f"PM_KAFKA_SASL_MECHANISM is malformed: {mechanism!r} is not one of "
            f"{', '.join(KAFKA_SASL_MECHANISMS)}"
        )
    return _KafkaSecurity(
        kafka_security_protocol=protocol,
        kafka_ssl_ca_file=_pem_certificates("PM_KAFKA_SSL_CA_FILE", ca) if ca else None,
        kafka_sasl_mechanism=mechanism.upper() if mechanism else None,
        kafka_sasl_username=username,
        kafka_sasl_password=(
            _password_file("PM_KAFKA_SASL_PASSWORD_FILE", password_file) if password_file else None
        ),
    )


def _pem_certificates(name: str, value: str) -> Path:
    path = _readable_file(name, value)
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise SettingsError(f"{name} is malformed: {value!r} holds no PEM certificate") from None
    return path


def _password_file(name: str, value: str) -> Secret:
    """The file's text less one trailing newline, kept from every repr; no error ever shows any of it."""
    return Secret(_password(name, _readable_file(name, value)))


def database_url(name: str, value: str) -> str:
    """Checks a PostgreSQL URL without connecting; the password never appears in the error."""
    try:
        url: URL = urls.parse(value)
        servers = urls.hosts(url)
    except (ArgumentError, ValueError):
        raise SettingsError(f"{name} is malformed: not a database URL (is the port a number?)") from None
    if url.drivername not in ("postgresql", "postgresql+psycopg2"):
        raise SettingsError(f"{name} is malformed: {url.drivername!r} is not a postgresql:// URL")
    for host, port in servers:
        if port is not None and not 0 < port <= 65535:
            raise SettingsError(f"{name} is malformed: port {port} is out of range")
        if len(servers) > 1 and (not host or host.startswith("[")):
            raise SettingsError(
                f"{name} is malformed: each server of a multi-host URL needs a host name or IPv4 address"
            )
    return value


def _pem_files(
    get: Callable[[str], str | None],
    variables: dict[str, str],
    *,
    pair: tuple[str, str],
    requires: tuple[str, str],
    advice: str,
) -> dict[str, Path | None]:
    """Readable PEM files by field name, from `variables` (field: variable). The `pair`, a certificate
    and its key, go together; `requires[0]` set needs `requires[1]`, as `advice` says."""
    files = {
        name: _readable_file(variable, value) if (value := get(variable)) else None
        for name, variable in variables.items()
    }
    cert, key = pair
    if (files[cert] is None) != (files[key] is None):
        raise SettingsError(f"{variables[cert]} and {variables[key]} go together: set both or neither")
    needing, needed = requires
    if files[needing] is not None and files[needed] is None:
        raise SettingsError(f"{variables[needing]} needs TLS: {advice}")
    return files


def _party_management_tls(get: Callable[[str], str | None]) -> dict[str, Path | None]:
    return _pem_files(
        get,
        {
            "party_management_tls_ca_file": "PM_PARTY_MANAGEMENT_TLS_CA_FILE",
            "party_management_tls_cert_file": "PM_PARTY_MANAGEMENT_TLS_CERT_FILE",
            "party_management_tls_key_file": "PM_PARTY_MANAGEMENT_TLS_KEY_FILE",
        },
        pair=("party_management_tls_cert_file", "party_management_tls_key_file"),
        requires=("party_management_tls_cert_file", "party_management_tls_ca_file"),
        advice="set PM_PARTY_MANAGEMENT_TLS_CA_FILE too",
    )


def _database_password_file(get: Callable[[str], str | None]) -> Path | None:
    value = get("PM_DATABASE_PASSWORD_FILE")
    if value is None:
        return None
    path = _readable_file("PM_DATABASE_PASSWORD_FILE", value)
    # The URLs are checked already (earlier arguments of Settings). With two passwords, whoever
    # reads the settings would have to guess which one is used.
    for name in ("PM_DATABASE_URL", "PM_DATABASE_READ_URL"):
        url = get(name)
        if url is not None and urls.parse(url).password is not None:
            raise SettingsError(
                f"PM_DATABASE_PASSWORD_FILE is set and {name} has a password too: give it in one place"
            )
    return path


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads every PM_* setting; raises SettingsError naming the first bad one."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value is not None and value.strip() else None

    url = get("PM_DATABASE_URL")
    read_url = get("PM_DATABASE_READ_URL")
    servers = get("PM_KAFKA_BOOTSTRAP_SERVERS")
    metrics = get("PM_METRICS_ADDRESS")
    policy = get("PM_AUTH_POLICY_FILE")
    ttl = get("PM_UNPAID_PAYOUT_TTL")
    defaults = Settings(database_url=None)
    tls = _pem_files(
        get,
        {
            "tls_cert_file": "PM_TLS_CERT_FILE",
            "tls_key_file": "PM_TLS_KEY_FILE",
            "tls_client_ca_file": "PM_TLS_CLIENT_CA_FILE",
        },
        pair=("tls_cert_file", "tls_key_file"),
        requires=("tls_client_ca_file", "tls_cert_file"),
        advice="set PM_TLS_CERT_FILE and PM_TLS_KEY_FILE too",
    )
    return Settings(
        database_url=database_url("PM_DATABASE_URL", url) if url else None,
        grpc_address=address("PM_GRPC_ADDRESS", get("PM_GRPC_ADDRESS") or defaults.grpc_address),
        party_management_address=address(
            "PM_PARTY_MANAGEMENT_ADDRESS",
            get("PM_PARTY_MANAGEMENT_ADDRESS") or defaults.party_management_address,
        ),
        kafka_bootstrap_servers=kafka_servers("PM_KAFKA_BOOTSTRAP_SERVERS", servers) if servers else None,
        kafka_topic=kafka_topic("PM_KAFKA_TOPIC", get("PM_KAFKA_TOPIC") or defaults.kafka_topic),
        party_management_timeout=_positive_float(
            "PM_PARTY_MANAGEMENT_TIMEOUT",
            get("PM_PARTY_MANAGEMENT_TIMEOUT") or str(defaults.party_management_timeout),
        ),
        **_party_management_tls(get),
        database_pool_size=_positive_int(
            "PM_DATABASE_POOL_SIZE", get("PM_DATABASE_POOL_SIZE") or str(defaults.database_pool_size)
        ),
        database_read_url=database_url("PM_DATABASE_READ_URL", read_url) if read_url else None,
        database_password_file=_database_password_file(get),
        shutdown_grace=_positive_float(
            "PM_SHUTDOWN_GRACE", get("PM_SHUTDOWN_GRACE") or str(defaults.shutdown_grace)
        ),
        metrics_address=address("PM_METRICS_ADDRESS", metrics) if metrics else None,
        log_level=_log_level("PM_LOG_LEVEL", get("PM_LOG_LEVEL") or defaults.log_level),
        **tls,
        allow_insecure=_boolean("PM_ALLOW_INSECURE", get("PM_ALLOW_INSECURE") or "false"),
        auth_policy_file=_readable_file("PM_AUTH_POLICY_FILE", policy) if policy else None,
        **_kafka_security(get),
        unpaid_payout_ttl=_ttl("PM_UNPAID_PAYOUT_TTL", ttl) if ttl else None,
        max_unresolved_payouts_per_shop=_limit(
            "PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP",
            get("PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP") or str(defaults.max_unresolved_payouts_per_shop),
        ),
    )
