"""Registers servicers so that every call passes through the same guard.

The guard asks the authorizer who calls and whether it may, before the handler runs, and hands
the handler that caller. It decodes requests itself, so bytes that are no valid message get
INVALID_ARGUMENT instead of grpc's INTERNAL, and turns every Refusal into its status through
`api.errors`. A bug still surfaces as INTERNAL, with its traceback in the log and nothing of it in the answer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from payout_manager.access.caller import Caller
from payout_manager.api.errors import to_status
from payout_manager.errors import FieldViolation, Reason, Refusal

log = logging.getLogger(__name__)

Behaviour = Callable[[Any, Caller, grpc.ServicerContext], Message]
# Who calls, if it may call this method: the caller, or a Refusal.
Authorize = Callable[[grpc.ServicerContext], Caller]

# The metadata key a caller may send to tie its request to the server's log lines.
REQUEST_ID = "x-request-id"


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


class Gate:
    """Counts the calls in flight, and once closed refuses new ones: a stopping server's drain.

    gRPC's own stop cancels a call that arrives on an open connection while it stops (CANCELLED,
    grpc/grpc#41785), which a client does not know to retry. So the server closes this gate first:
    every call that arrives then is UNAVAILABLE / SERVER_STOPPING, which it does; the server stops
    gRPC once the calls in flight are done.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._in_flight = 0
        self._closed = False

    def enter(self) -> None:
        with self._lock:
            if self._closed:
                raise Refusal(Reason.SERVER_STOPPING, "the server is stopping: call another, or again")
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def close_and_wait(self, timeout: float) -> bool:
        """Refuses every call from now on; True once none is in flight, False after `timeout` seconds."""
        with self._lock:
            self._closed = True
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)


def _request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id (printable, at most 128 characters), or a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and isinstance(value, str) and value.isprintable():
            return value[:128]
    return uuid.uuid4().hex


def _payout_id(message: object) -> str:
    if isinstance(message, Message) and "payout_id" in message.DESCRIPTOR.fields_by_name:
        return str(getattr(message, "payout_id"))  # noqa: B009 (a proto field, checked above)
    return ""


def _guarded(
    method: str, behaviour: Behaviour, observe: Observer, authorize: Authorize, gate: Gate | None
) -> Callable[[Message | _Malformed, grpc.ServicerContext], Message]:
    def handle(request: Message | _Malformed, context: grpc.ServicerContext) -> Message:
        started = time.monotonic()
        call = {
            "method": method,
            "request_id": _request_id(context),
            "payout_id": _payout_id(request),
            "caller": "",
        }
        code, outcome = grpc.StatusCode.OK, ""
        entered = False
        try:
            if gate is not None:
                gate.enter()
                entered = True
            caller = authorize(context)
            call["caller"] = caller.identity
            if isinstance(request, _Malformed):
                raise Refusal(
                    Reason.MALFORMED_REQUEST,
                    f"the request is not a valid {method} message",
                    (FieldViolation("", "the bytes do not decode as the request message"),),
                )
            response = behaviour(request, caller, context)
            call["payout_id"] = call["payout_id"] or _payout_id(response)
            return response
        except Refusal as refusal:
            status = to_status(refusal)
            code, outcome = status.code, f": {refusal}"
            context.abort_with_status(status)
            raise  # abort_with_status raises; this line only satisfies the type checker
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method, extra=call)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise
        finally:
            if entered:
                assert gate is not None
                gate.leave()
            seconds = time.monotonic() - started
            observe(method, code.name, seconds)
            log.info(
                "%s %s%s",
                method,
                code.name,
                outcome,
                extra={**call, "code": code.name, "duration_ms": round(seconds * 1000, 3)},
            )

    return handle


def method_names(service: ServiceDescriptor) -> list[str]:
    """The service's methods as a policy names them: 'package.Service/Method'."""
    return [f"{service.full_name}/{method.name}" for method in service.methods]


def service_handler(
    service: ServiceDescriptor,
    servicer: object,
    authorize: Callable[[str, grpc.ServicerContext], Caller],
    observe: Observer | None = None,
    gate: Gate | None = None,
) -> grpc.GenericRpcHandler:
    """A handler serving every method of `service` from the same-named methods of `servicer`.

    `authorize(method, context)`, with the policy's name of the method, decides each call first;
    a closed `gate` refuses it before that.
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method, name in zip(service.methods, method_names(service), strict=True):
        request_class = message_factory.GetMessageClass(method.input_type)

        def decide(context: grpc.ServicerContext, name: str = name) -> Caller:
            return authorize(name, context)

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(method.full_name, getattr(servicer, method.name), observe or _ignore, decide, gate),
            request_deserializer=_decoder(request_class),
            response_serializer=lambda response: response.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
