"""payout_manager.v1.PayoutManagement (SPEC 1.1): protobuf in, the payout service, protobuf out."""

from __future__ import annotations

import time

import grpc

from payout_manager.access.caller import Caller
from payout_manager.api import convert
from payout_manager.errors import FieldViolation, invalid
from payout_manager.events.codec import payout_to_proto, posting_to_proto, snapshot
from payout_manager.payouts import validation
from payout_manager.payouts.service import PayoutService
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb

# Of the caller's deadline, this much is kept back from PartyManagement's retries for the
# transaction that follows them, so a slow PartyManagement fails the call cleanly instead of
# leaving the caller with DEADLINE_EXCEEDED while the payout may still commit.
TRANSACTION_RESERVE = 0.2


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining - min(TRANSACTION_RESERVE, remaining / 5)


class PayoutManagementServicer:
    def __init__(self, payouts: PayoutService) -> None:
        self._payouts = payouts

    def CreatePayout(
        self, request: pb.CreatePayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        payout = self._payouts.create(convert.create_request(request), caller, deadline=_deadline(context))
        return payout_to_proto(payout)

    def GetPayout(
        self, request: pb.GetPayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        if request.revision < 0:
            raise invalid([FieldViolation("revision", "must be 0 (the latest) or a positive revision")])
        if request.revision == 0:
            return payout_to_proto(self._payouts.get(request.payout_id, caller))
        return snapshot(self._payouts.event(request.payout_id, request.revision, caller))

    def ConfirmPayout(
        self, request: pb.ConfirmPayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        return payout_to_proto(self._payouts.confirm(request.payout_id, caller))

    def CancelPayout(
        self, request: pb.CancelPayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        return payout_to_proto(self._payouts.cancel(request.payout_id, request.details, caller))

    def MarkPayoutPaid(
        self, request: pb.MarkPayoutPaidRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        return payout_to_proto(self._payouts.mark_paid(request.payout_id, caller))

    def FailPayout(
        self, request: pb.FailPayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.Payout:
        return payout_to_proto(self._payouts.fail(request.payout_id, convert.failure(request), caller))

    def QuotePayout(
        self, request: pb.QuotePayoutRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.PayoutQuote:
        quote = self._payouts.quote(convert.quote_request(request), caller, deadline=_deadline(context))
        return pb.PayoutQuote(
            amount=quote.amount,
            fee=quote.fee,
            cash_flow=[posting_to_proto(p) for p in quote.cash_flow],
            payout_tool_id=quote.payout_tool_id,
            available_amount=quote.available_amount,
            sufficient=quote.sufficient,
        )

    def ListPayouts(
        self, request: pb.ListPayoutsRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.ListPayoutsResponse:
        where = convert.payout_filter(request)
        size = validation.page_size("page_size", request.page_size)
        page = self._payouts.list(where, request.page_token, size, caller)
        # Each payout is its latest event's snapshot, parsed by protobuf's C code: no row is turned
        # into a model and the model into protobuf, field by field in Python.
        return pb.ListPayoutsResponse(
            payouts=[snapshot(p.latest_event) for p in page.payouts],
            next_page_token=page.next_page_token,
        )

    def GetPayoutEvents(
        self, request: pb.GetPayoutEventsRequest, caller: Caller, context: grpc.ServicerContext
    ) -> pb.GetPayoutEventsResponse:
        if request.after_sequence_id < 0:
            raise invalid([FieldViolation("after_sequence_id", "must not be negative")])
        limit = validation.page_size("limit", request.limit)
        payloads = self._payouts.events(request.payout_id, request.after_sequence_id, limit, caller)
        return pb.GetPayoutEventsResponse(events=[pb.Event.FromString(p) for p in payloads])
