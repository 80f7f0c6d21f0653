"""Who is calling, over gRPC, and whether the policy lets it (SPEC 5).

Every call of PayoutManagement and Accounter asks `Authorizer.caller` before its handler runs (the
guard in `api.handlers` does), and server reflection asks `Authorizer.identify`; health asks
nothing. The identity comes from the client certificate that mutual TLS verified (its first URI
SAN, else its first DNS SAN, else its subject CN, as gRPC's auth context lists them) or from an
`authorization: Bearer TOKEN` header. Without a policy every caller is `anonymous` with every right.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from payout_manager.access.caller import ANONYMOUS, Caller
from payout_manager.access.policy import PolicyError, PolicyFile, read_policy
from payout_manager.api.errors import to_status
from payout_manager.errors import Reason, Refusal
from payout_manager.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_AUTHORIZATION = "authorization"
_BEARER = "bearer "
# gRPC's auth context properties of a verified peer certificate, in the order SPEC 5 tries them.
_CERTIFICATE_NAMES = ("peer_uri", "peer_dns", "x509_common_name")


def check_policy(settings: Settings, methods: Collection[str]) -> None:
    """Stops `serve` with one line when its policy file is not a valid policy."""
    if settings.auth_policy_file is None:
        return
    try:
        read_policy(settings.auth_policy_file, methods)
    except PolicyError as error:
        raise SettingsError(f"PM_AUTH_POLICY_FILE is malformed: {error}") from None


def certificate_identity(context: grpc.ServicerContext) -> str | None:
    """The verified client certificate's identity, or None without one."""
    properties = context.auth_context()
    for name in _CERTIFICATE_NAMES:
        values = properties.get(name)
        if values:
            return bytes(values[0]).decode("utf-8", "replace")
    return None


def bearer_token(context: grpc.ServicerContext) -> str | None:
    """The bearer token the caller sent, or None; UNKNOWN_CALLER for any other authorization."""
    for key, value in context.invocation_metadata() or ():
        if key == _AUTHORIZATION:
            text = value if isinstance(value, str) else ""
            if text[: len(_BEARER)].lower() != _BEARER or not text[len(_BEARER) :].strip():
                raise Refusal(Reason.UNKNOWN_CALLER, "the authorization header must be 'Bearer TOKEN'")
            return text[len(_BEARER) :].strip()
    return None


class Authorizer:
    """The decisions of one server process, from its policy file (reread when it changes)."""

    def __init__(self, policy: PolicyFile | None, *, trust_certificates: bool) -> None:
        self._policy = policy
        # Without a client CA no client certificate is asked for, so none can name a caller.
        self._trust_certificates = trust_certificates

    @classmethod
    def from_settings(cls, settings: Settings, methods: Collection[str]) -> Authorizer:
        policy = None if settings.auth_policy_file is None else PolicyFile(settings.auth_policy_file, methods)
        return cls(policy, trust_certificates=settings.tls_client_ca_file is not None)

    def _claims(self, context: grpc.ServicerContext) -> dict[str, str | None]:
        certificate = certificate_identity(context) if self._trust_certificates else None
        return {"certificate_identity": certificate, "token": bearer_token(context)}

    def caller(self, method: str, context: grpc.ServicerContext) -> Caller:
        """The caller of `method` ('package.Service/Method'), or the Refusal that answers it."""
        if self._policy is None:
            return ANONYMOUS
        return self._policy.current().decide(method, **self._claims(context))

    def identify(self, context: grpc.ServicerContext) -> Caller:
        """The caller, if the policy lists it, whatever its roles."""
        if self._policy is None:
            return ANONYMOUS
        return self._policy.current().identify(**self._claims(context)).caller


class GuardedReflection(reflection.ReflectionServicer):  # type: ignore[misc]
    """Server reflection for callers the policy lists: the schema is no secret, but no stranger's."""

    def __init__(self, service_names: Collection[str], authorizer: Authorizer) -> None:
        super().__init__(tuple(service_names))
        self._authorizer = authorizer

    def ServerReflectionInfo(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        try:
            self._authorizer.identify(context)
        except Refusal as refusal:
            log.info("server reflection refused: %s", refusal)
            context.abort_with_status(to_status(refusal))
        yield from super().ServerReflectionInfo(request_iterator, context)
