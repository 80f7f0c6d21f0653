"""TLS of `serve` and of the reference PartyManagement (SPEC 5), and of serve's calls to PartyManagement.

Servers: a certificate, mutual TLS, and new certificates without a restart. gRPC asks for the
certificate configuration at every new connection's handshake (`dynamic_ssl_server_credentials`);
the files are read again only when one of them changed, and a new pair is taken only once it
loads as a matching certificate and key, so a rotation half written, or a wrong key, keeps the
last good certificate and says so once. Connections already open keep theirs: calls in flight finish.

The client (`party_management_credentials`) reads its CA, certificate and key once, when the
process starts: grpcio has no dynamic channel credentials, and closing a channel to open one with
new files would cancel the calls in flight on it. A renewed client certificate takes a restart.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
from pathlib import Path

import grpc

from payout_manager.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def _stamp(paths: list[Path]) -> tuple[tuple[int, int], ...]:
    stats = [path.stat() for path in paths]
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


def _matching_pair(cert: Path, key: Path) -> bool:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


class _Certificates:
    """The current configuration, read again from the files when they change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._paths = [p for p in (cert, key, client_ca) if p is not None]
        self._lock = threading.Lock()
        self._stamp = _stamp(self._paths)
        self._refused: tuple[tuple[int, int], ...] | None = None
        if not _matching_pair(cert, key):
            raise SettingsError(
                f"PM_TLS_CERT_FILE and PM_TLS_KEY_FILE are not a matching PEM pair: {cert}, {key}"
            )
        self.initial = self._configuration()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        root = self._client_ca.read_bytes() if self._client_ca is not None else None
        return grpc.ssl_server_certificate_configuration(
            [(self._key.read_bytes(), self._cert.read_bytes())], root_certificates=root
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed to a valid one; None keeps the current one."""
        with self._lock:
            try:
                stamp = _stamp(self._paths)
            except OSError:
                return None  # a file being replaced: ask again at the next handshake
            if stamp in (self._stamp, self._refused):
                return None
            if not _matching_pair(self._cert, self._key):
                self._refused = stamp
                log.warning(
                    "TLS: the new certificate and key do not load as a pair; serving the last good ones"
                )
                return None
            try:
                configuration = self._configuration()
            except OSError:
                return None
            self._stamp = stamp
            log.info("TLS: serving the new certificate from %s", self._cert)
            return configuration


def party_management_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials for the calls to PartyManagement from PM_PARTY_MANAGEMENT_TLS_*; None: plaintext."""
    ca, cert, key = (
        settings.party_management_tls_ca_file,
        settings.party_management_tls_cert_file,
        settings.party_management_tls_key_file,
    )
    if ca is None:
        return None
    try:
        ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError, ValueError):
        raise SettingsError(f"PM_PARTY_MANAGEMENT_TLS_CA_FILE holds no PEM certificate: {ca}") from None
    if cert is not None and key is not None and not _matching_pair(cert, key):
        raise SettingsError(
            "PM_PARTY_MANAGEMENT_TLS_CERT_FILE and PM_PARTY_MANAGEMENT_TLS_KEY_FILE are not a matching"
            f" PEM pair: {cert}, {key}"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=None if key is None else key.read_bytes(),
        certificate_chain=None if cert is None else cert.read_bytes(),
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PM_TLS_* settings; None without them (plaintext)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    certificates = _Certificates(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        # None keeps the current configuration, as grpc documents; its stub says otherwise.
        certificates.fetch,  # type: ignore[arg-type]
        require_client_authentication=settings.tls_client_ca_file is not None,
    )


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext_allowed(settings: Settings, address: str) -> None:
    """Refuses plaintext on an address other than loopback unless PM_ALLOW_INSECURE=true (SPEC 5)."""
    if settings.tls_cert_file is None and not settings.allow_insecure and not is_loopback(address):
        raise SettingsError(
            f"refusing to serve plaintext on {address}: set PM_TLS_CERT_FILE and PM_TLS_KEY_FILE,"
            " or PM_ALLOW_INSECURE=true"
        )
