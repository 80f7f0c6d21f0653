"""The access policy (SPEC 5): roles of method patterns, principals with roles and optional parties.

    {"roles": {"reader": ["payout_manager.v1.PayoutManagement/GetPayout", ...],
               "treasury": ["accounter.v1.Accounter/*"]},
     "principals": [{"id": "spiffe://bank/back-office", "roles": ["payouts"], "parties": ["party-1"]},
                    {"id": "analytics", "token_sha256": "<hex>", "roles": ["reader"]}]}

A pattern is `package.Service/Method` or `package.Service/*`, and must name at least one method
this service serves: a misspelt pattern is a bad file, not a role that silently allows nothing.
Each principal's patterns are expanded once, at load, into the set of methods it may call, so a
decision is two dictionary lookups. A principal is reached by its certificate identity (its `id`)
or, when it lists one, by a bearer token whose SHA-256 is `token_sha256`. The identities the
service records for itself (`anonymous`, `payout-manager:...`) cannot be principals, so no caller
can pass for the service in the events.

`PolicyFile` rereads the file when it changes; a new file that is not a valid policy keeps the last
good one and says so once. Nothing here knows about gRPC.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payout_manager.access.caller import ANONYMOUS_ID, JOB_PREFIX, Caller
from payout_manager.errors import Reason, Refusal

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
MAX_ID_LENGTH = 256


class PolicyError(ValueError):
    """The policy is not valid; the message says where, in one line."""


@dataclass(frozen=True)
class Principal:
    id: str
    methods: frozenset[str]
    parties: frozenset[str] | None

    @property
    def caller(self) -> Caller:
        return Caller(self.id, self.parties)


def token_digest(token: str) -> str:
    """The SHA-256 of a bearer token, in lower-case hex, as the policy lists it."""
    return hashlib.sha256(token.encode()).hexdigest()


def _expand(pattern: object, where: str, methods: Collection[str]) -> set[str]:
    if not isinstance(pattern, str) or pattern.count("/") != 1:
        raise PolicyError(f"{where}: {pattern!r} is not 'package.Service/Method' or 'package.Service/*'")
    service, _, name = pattern.partition("/")
    matched = {m for m in methods if m.startswith(service + "/")} if name == "*" else {pattern} & set(methods)
    if not matched:
        raise PolicyError(f"{where}: {pattern!r} names no method this service serves")
    return matched


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where} must be a list of non-empty strings")
    return value


def _keys(value: object, where: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise PolicyError(f"{where} has an unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(value))
    if missing:
        raise PolicyError(f"{where} lacks {missing[0]!r}")
    return value


def _roles(value: object, methods: Collection[str]) -> dict[str, set[str]]:
    if not isinstance(value, dict):
        raise PolicyError("roles must be a JSON object of role name to method patterns")
    roles: dict[str, set[str]] = {}
    for name, patterns in value.items():
        where = f"roles.{name}"
        roles[name] = set().union(*(_expand(p, where, methods) for p in _strings(patterns, where)))
    return roles


def _principal(entry: object, where: str, roles: Mapping[str, set[str]]) -> tuple[Principal, str | None]:
    """The principal `entry` describes, and the SHA-256 of its token (lower case), if it has one."""
    fields = _keys(entry, where, {"id", "roles", "parties", "token_sha256"}, {"id", "roles"})
    principal_id = fields["id"]
    if not isinstance(principal_id, str) or not principal_id or len(principal_id) > MAX_ID_LENGTH:
        raise PolicyError(f"{where}.id must be a non-empty string of at most {MAX_ID_LENGTH}")
    if principal_id == ANONYMOUS_ID or principal_id.startswith(JOB_PREFIX):
        raise PolicyError(f"{where}.id {principal_id!r} is reserved for the service's own changes")
    allowed: set[str] = set()
    for role in _strings(fields["roles"], f"{where}.roles"):
        if role not in roles:
            raise PolicyError(f"{where}.roles names {role!r}, which is not a role")
        allowed |= roles[role]
    parties = frozenset(_strings(fields["parties"], f"{where}.parties")) if "parties" in fields else None
    digest = fields.get("token_sha256")
    if digest is not None and (not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest)):
        raise PolicyError(f"{where}.token_sha256 must be 64 hex digits (a SHA-256)")
    return Principal(principal_id, frozenset(allowed), parties), None if digest is None else digest.lower()


class Policy:
    """A parsed policy, and the decision for one call."""

    def __init__(self, principals: list[Principal], tokens: dict[str, Principal]) -> None:
        self._by_id = {p.id: p for p in principals}
        self._by_token = tokens

    @classmethod
    def parse(cls, text: str, methods: Collection[str]) -> Policy:
        """The policy in `text`, with patterns matched against `methods` ('Service/Method' names)."""
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PolicyError(f"not JSON: {error}") from None
        top = _keys(document, "the policy", {"roles", "principals"}, {"roles", "principals"})
        roles = _roles(top["roles"], methods)
        if not isinstance(top["principals"], list):
            raise PolicyError("principals must be a JSON list")
        principals: list[Principal] = []
        tokens: dict[str, Principal] = {}
        for index, entry in enumerate(top["principals"]):
            where = f"principals[{index}]"
            principal, digest = _principal(entry, where, roles)
            if any(p.id == principal.id for p in principals):
                raise PolicyError(f"{where}.id {principal.id!r} is listed twice")
            principals.append(principal)
            if digest is not None:
                if digest in tokens:
                    raise PolicyError(f"{where}.token_sha256 is another principal's too")
                tokens[digest] = principal
        return cls(principals, tokens)

    def identify(self, *, certificate_identity: str | None, token: str | None) -> Principal:
        """The principal calling; UNAUTHENTICATED / UNKNOWN_CALLER when the policy does not list it.

        A bearer token, when sent, decides alone: a token the policy does not list is refused even
        beside a good certificate, since a caller sending a wrong token is misconfigured.
        """
        if token is not None:
            principal = self._by_token.get(token_digest(token))
            if principal is None:
                raise Refusal(Reason.UNKNOWN_CALLER, "the bearer token is not one the policy lists")
            return principal
        if certificate_identity is None:
            raise Refusal(
                Reason.UNKNOWN_CALLER,
                "the call carries no identity: a client certificate or a bearer token is required",
            )
        principal = self._by_id.get(certificate_identity)
        if principal is None:
            raise Refusal(
                Reason.UNKNOWN_CALLER,
                f"the certificate's identity {certificate_identity[:MAX_ID_LENGTH]!r} is not in the policy",
            )
        return principal

    def decide(self, method: str, *, certificate_identity: str | None, token: str | None) -> Caller:
        """The caller, if it may call `method` ('Service/Method'); else the refusal to answer."""
        principal = self.identify(certificate_identity=certificate_identity, token=token)
        if method not in principal.methods:
            raise Refusal(Reason.METHOD_NOT_ALLOWED, f"{principal.id} may not call {method}")
        return principal.caller


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def read_policy(path: Path, methods: Collection[str]) -> Policy:
    """The policy in `path`; PolicyError (one line) when it cannot be read or is not valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"cannot read {str(path)!r}: {getattr(error, 'strerror', None) or error}") from None
    return Policy.parse(text, methods)


class PolicyFile:
    """The policy of `path`, reread when the file changes (its time, size or inode)."""

    def __init__(self, path: Path, methods: Collection[str]) -> None:
        self._path = path
        self._methods = frozenset(methods)
        self._lock = threading.Lock()
        self._stamp = _stamp(path)
        self._policy = read_policy(path, self._methods)

    def current(self) -> Policy:
        stamp = _stamp(self._path)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._reload(stamp)
        return self._policy

    def _reload(self, stamp: tuple[int, int, int] | None) -> None:
        self._stamp = stamp
        try:
            self._policy = read_policy(self._path, self._methods)
        except PolicyError as error:
            log.error(
                "PM_AUTH_POLICY_FILE changed but is not a valid policy, kept the last good one: %s", error
            )
            return
        log.info("PM_AUTH_POLICY_FILE reread: the new policy applies to every call from now on")
