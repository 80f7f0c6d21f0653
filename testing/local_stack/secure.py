"""The secured demo's files (`python -m local_stack --secure`): a CA, certificates and a policy.

Made once in DIRECTORY and kept, so grpcurl commands keep working across restarts:

    ca.crt                       the demo CA: what clients trust, and what serve verifies callers by
    server.crt, server.key       serve's certificate, for 127.0.0.1 and localhost
    back-office.crt, .key        spiffe://demo/back-office: payouts of party-1 only
    treasury.crt, .key           spiffe://demo/treasury: payouts of every party, and the Accounter
    gateway.crt, .key            spiffe://demo/gateway, which the policy does not list: the
                                 connection of callers who name themselves by a token
    reader.token                 a bearer token of the reader, who may only read
    policy.json                  the policy naming them (the token by its SHA-256)

The keys are unencrypted PEM, readable by the current user only: a demo's, not for production.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from local_stack.certificates import Authority

BACK_OFFICE = "spiffe://demo/back-office"
TREASURY = "spiffe://demo/treasury"
READER = "reader"
GATEWAY = "spiffe://demo/gateway"

_PM = "payout_manager.v1.PayoutManagement"


def demo_policy(reader_token: str) -> dict[str, Any]:
    return {
        "roles": {
            "payouts": [f"{_PM}/*"],
            "reader": [
                f"{_PM}/GetPayout",
                f"{_PM}/ListPayouts",
                f"{_PM}/GetPayoutEvents",
                "accounter.v1.Accounter/GetAccount",
            ],
            "treasury": ["accounter.v1.Accounter/*"],
        },
        "principals": [
            {"id": BACK_OFFICE, "roles": ["payouts"], "parties": ["party-1"]},
            {"id": TREASURY, "roles": ["payouts", "treasury"]},
            {
                "id": READER,
                "token_sha256": hashlib.sha256(reader_token.encode()).hexdigest(),
                "roles": ["reader"],
            },
        ],
    }


@dataclass(frozen=True)
class SecureFiles:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def policy(self) -> Path:
        return self.directory / "policy.json"

    @property
    def reader_token(self) -> Path:
        return self.directory / "reader.token"

    def client(self, name: str) -> tuple[Path, Path]:
        """The certificate and key of the client `name` (back-office, treasury, gateway)."""
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def credentials(self, name: str) -> grpc.ChannelCredentials:
        """gRPC credentials trusting the demo CA and showing the client `name`'s certificate."""
        cert, key = self.client(name)
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key.read_bytes(), cert.read_bytes())

    def serve_env(self) -> dict[str, str]:
        """The PM_* settings that make serve speak mutual TLS with the demo's policy."""
        return {
            "PM_TLS_CERT_FILE": str(self.server_cert),
            "PM_TLS_KEY_FILE": str(self.server_key),
            "PM_TLS_CLIENT_CA_FILE": str(self.ca),
            "PM_AUTH_POLICY_FILE": str(self.policy),
        }


def _write_private(path: Path, data: bytes) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(data)


def secure_files(directory: Path) -> SecureFiles:
    """The demo's files in `directory`, made on the first call (the policy last: it marks them done)."""
    files = SecureFiles(directory)
    if files.policy.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority("payout-manager demo CA", days=3650)
    files.ca.write_bytes(ca.cert_pem)
    issued = {
        "server": ca.server(),
        "back-office": ca.issue("back-office", uris=(BACK_OFFICE,)),
        "treasury": ca.issue("treasury", uris=(TREASURY,)),
        "gateway": ca.issue("gateway", uris=(GATEWAY,)),
    }
    for name, pair in issued.items():
        (directory / f"{name}.crt").write_bytes(pair.cert_pem)
        _write_private(directory / f"{name}.key", pair.key_pem)
    token = secrets.token_urlsafe(32)
    _write_private(files.reader_token, token.encode())
    files.policy.write_text(json.dumps(demo_policy(token), indent=2) + "\n")
    return files
