"""The payout manager's PartyManagement client (SPEC 1.3).

Every call keeps to the caller's deadline: UNAVAILABLE and DEADLINE_EXCEEDED are retried with
jittered exponential backoff until it, then refused as PARTY_MANAGEMENT_UNAVAILABLE. PartyManagement's
own refusals (party not found, shop blocked, ...) are passed on as `Refusal` with their reason. No
`grpc.RpcError` leaves this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf import message, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from payout_manager.errors import FieldViolation, Reason, Refusal
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting
from payout_manager.proto.party_management.v1 import party_management_pb2, party_management_pb2_grpc

# Without a deadline from the caller, how long a call may keep retrying.
RETRY_BUDGET = 10.0
# An attempt with less time than this left cannot get an answer, so no attempt is started.
_MIN_ATTEMPT = 0.05
_BACKOFF = wait_random_exponential(multiplier=0.05, max=1.0)

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_REFUSAL_CODES = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}
)
# PartyManagement's reasons the payout manager passes on to its own caller (SPEC 1.3).
_PASSED_ON = frozenset(
    {
        Reason.PARTY_NOT_FOUND,
        Reason.SHOP_NOT_FOUND,
        Reason.PAYOUT_TOOL_NOT_FOUND,
        Reason.PARTY_BLOCKED,
        Reason.SHOP_BLOCKED,
        Reason.PAYOUTS_NOT_PERMITTED,
        Reason.CURRENCY_MISMATCH,
        Reason.AMOUNT_OUT_OF_RANGE,
        Reason.INVALID_REQUEST,
    }
)
_CHANNEL_OPTIONS = [
    # gRPC's own reconnect backoff grows to two minutes: a PartyManagement that comes back must be
    # found again within a request's deadline, so the channel keeps trying every second at most.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_Response = TypeVar("_Response")


@dataclass(frozen=True)
class ComputedCashFlow:
    """A payout's cash flow as PartyManagement computed it, and the payout tool it is for."""

    postings: tuple[CashFlowPosting, ...]
    payout_tool_id: str


class PartyManagementClient:
    """One long-lived channel to PartyManagement; safe to share between threads."""

    def __init__(
        self,
        address: str,
        *,
        call_timeout: float = 2.0,
        on_retry: Callable[[], None] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """`call_timeout` bounds each attempt; `on_retry` is called before each retry (for metrics).

        `credentials`: TLS (api.tls.party_management_credentials); None: plaintext. A failed
        handshake is UNAVAILABLE, so it is retried and then refused as PARTY_MANAGEMENT_UNAVAILABLE.
        """
        self._call_timeout = call_timeout
        self._on_retry = on_retry
        self._channel = (
            grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
            if credentials is None
            else grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        )
        self._stub = party_management_pb2_grpc.PartyManagementStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PartyManagementClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def compute_payout_cash_flow(
        self,
        party_id: str,
        shop_id: str,
        amount: int,
        currency: str,
        payout_tool_id: str,
        at: datetime,
        *,
        deadline: float | None = None,
    ) -> ComputedCashFlow:
        """The postings of a payout of `amount` `currency` at `at`; an empty tool means the shop's default.

        `deadline` is an absolute `time.monotonic()` value (None: RETRY_BUDGET from now). Raises
        Refusal: PartyManagement's own reason, or PARTY_MANAGEMENT_UNAVAILABLE.
        """
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(at)
        request = party_management_pb2.ComputePayoutCashFlowRequest(
            party_id=party_id,
            shop_id=shop_id,
            cash=party_management_pb2.Cash(amount=amount, currency=currency),
            timestamp=timestamp,
            payout_tool_id=payout_tool_id,
        )
        response: party_management_pb2.ComputePayoutCashFlowResponse = self._call(
            "ComputePayoutCashFlow", self._stub.ComputePayoutCashFlow, request, deadline
        )
        return ComputedCashFlow(
            postings=tuple(_posting(posting, currency) for posting in response.postings),
            # A service that does not echo the tool computed the flow for the one asked for.
            payout_tool_id=response.payout_tool_id or payout_tool_id,
        )

    def get_shop(
        self, party_id: str, shop_id: str, *, deadline: float | None = None
    ) -> party_management_pb2.Shop:
        """The shop as PartyManagement knows it; `deadline` and errors as in compute_payout_cash_flow."""
        request = party_management_pb2.GetShopRequest(party_id=party_id, shop_id=shop_id)
        shop: party_management_pb2.Shop = self._call("GetShop", self._stub.GetShop, request, deadline)
        return shop

    def _call(
        self,
        method: str,
        rpc: Callable[..., _Response],
        request: message.Message,
        deadline: float | None,
    ) -> _Response:
        deadline_at = time.monotonic() + RETRY_BUDGET if deadline is None else deadline
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            wait=_backoff_until(deadline_at),
            stop=_stop_near(deadline_at),
            before_sleep=self._count_retry,
            # The last gRPC error itself, not tenacity's RetryError, is what becomes the refusal.
            reraise=True,
        )

        def attempt() -> _Response:
            time_left = deadline_at - time.monotonic()
            if time_left <= 0:
                raise Refusal(
                    Reason.PARTY_MANAGEMENT_UNAVAILABLE,
                    f"PartyManagement {method}: no time left before the deadline",
                )
            return rpc(request, timeout=min(self._call_timeout, time_left))

        try:
            return retrying(attempt)
        except grpc.RpcError as error:
            raise _refusal(method, error) from None

    def _count_retry(self, _state: RetryCallState) -> None:
        if self._on_retry is not None:
            self._on_retry()


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in _TRANSIENT


def _backoff_until(deadline: float) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        # Sleep no further than leaves one last attempt before the deadline: it may be the one that works.
        return max(0.0, min(_BACKOFF(state), deadline - time.monotonic() - _MIN_ATTEMPT))

    return wait


def _stop_near(deadline: float) -> Callable[[RetryCallState], bool]:
    # The wait is already cut to leave _MIN_ATTEMPT, so only a deadline closer than that ends the retries.
    def stop(_state: RetryCallState) -> bool:
        return deadline - time.monotonic() < _MIN_ATTEMPT

    return stop


# PartyManagement's INVALID_ARGUMENT refusals concern these fields of the payout request.
_VIOLATIONS: dict[Reason, tuple[FieldViolation, ...]] = {
    Reason.CURRENCY_MISMATCH: (FieldViolation("cash.currency", "must be the shop's currency"),),
    Reason.AMOUNT_OUT_OF_RANGE: (FieldViolation("cash.amount", "makes a posting leave the int64 range"),),
    Reason.INVALID_REQUEST: (FieldViolation("", "PartyManagement refused the request"),),
}


def _refusal(method: str, error: grpc.RpcError) -> Refusal:
    code = error.code()
    details = error.details() or ""
    if code in _TRANSIENT:
        return Refusal(
            Reason.PARTY_MANAGEMENT_UNAVAILABLE,
            f"PartyManagement {method} did not answer before the deadline: {code.name}: {details}",
        )
    if code in _REFUSAL_CODES:
        reason = _error_reason(error)
        if reason is not None:
            return Refusal(reason, details or reason.value, _VIOLATIONS.get(reason, ()))
    return Refusal(
        Reason.PARTY_MANAGEMENT_UNAVAILABLE, f"PartyManagement {method} failed: {code.name}: {details}"
    )


def _error_reason(error: grpc.RpcError) -> Reason | None:
    """The reason in the status's ErrorInfo, if it is one the payout manager passes on."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the rich status contradicts the call's own code or message
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = Reason.__members__.get(info.reason)
            return reason if reason in _PASSED_ON else None
    return None


def _posting(posting: party_management_pb2.CashFlowPosting, currency: str) -> CashFlowPosting:
    if not (posting.HasField("source") and posting.HasField("destination") and posting.HasField("volume")):
        raise _malformed("a posting lacks its source, destination or volume")
    if posting.volume.currency != currency:
        raise _malformed(f"a posting in {posting.volume.currency!r} for a payout in {currency!r}")
    if posting.volume.amount < 0:
        raise _malformed(f"a posting of a negative amount {posting.volume.amount}")
    return CashFlowPosting(
        source=_account(posting.source),
        destination=_account(posting.destination),
        amount=posting.volume.amount,
        currency=currency,
        details=posting.details,
    )


def _account(account: party_management_pb2.CashFlowAccount) -> CashFlowAccount:
    try:
        name = party_management_pb2.AccountType.Name(account.type)
    except ValueError:
        raise _malformed(f"an account of unknown type {account.type}") from None
    account_type = AccountType.__members__.get(name.removeprefix("ACCOUNT_TYPE_"))
    if account_type is None:
        raise _malformed(f"an account of type {name}")
    return CashFlowAccount(type=account_type, account_id=account.account_id)


def _malformed(problem: str) -> Refusal:
    return Refusal(
        Reason.PARTY_MANAGEMENT_UNAVAILABLE, f"PartyManagement sent a malformed cash flow: {problem}"
    )
