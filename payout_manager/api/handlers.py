"""Registers servicers so that every call passes through the same guard.

The guard decodes requests itself, so bytes that are no valid message get INVALID_ARGUMENT instead
of grpc's INTERNAL, and turns every Refusal into its status through `api.errors`. A bug still
surfaces as INTERNAL, with its traceback in the log and nothing of it in the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from payout_manager.api.errors import to_status
from payout_manager.errors import FieldViolation, Reason, Refusal

log = logging.getLogger(__name__)

Behaviour = Callable[[Any, grpc.ServicerContext], Message]


class _Malformed:
    """What the decoder hands on in place of a request that did not parse."""


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def decode(data: bytes) -> Message | _Malformed:
        try:
            return message_class.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            return _Malformed()

    return decode


# Told of every call: its method, its status code's name, and how long it took in seconds.
Observer = Callable[[str, str, float], None]


def _ignore(method: str, code: str, seconds: float) -> None:
    pass


def _guarded(
    method: str, behaviour: Behaviour, observe: Observer
) -> Callable[[Message | _Malformed, grpc.ServicerContext], Message]:
    def handle(request: Message | _Malformed, context: grpc.ServicerContext) -> Message:
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, _Malformed):
                raise Refusal(
                    Reason.MALFORMED_REQUEST,
                    f"the request is not a valid {method} message",
                    (FieldViolation("", "the bytes do not decode as the request message"),),
                )
            return behaviour(request, context)
        except Refusal as refusal:
            log.info("%s refused: %s", method, refusal)
            status = to_status(refusal)
            code = status.code
            context.abort_with_status(status)
            raise  # abort_with_status raises; this line only satisfies the type checker
        except Exception:
            log.exception("%s failed", method)
            code = grpc.StatusCode.INTERNAL
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise
        finally:
            observe(method, code.name, time.monotonic() - started)

    return handle


def service_handler(
    service: ServiceDescriptor, servicer: object, observe: Observer | None = None
) -> grpc.GenericRpcHandler:
    """A handler serving every method of `service` from the same-named methods of `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(method.full_name, getattr(servicer, method.name), observe or _ignore),
            request_deserializer=_decoder(request_class),
            response_serializer=lambda response: response.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
