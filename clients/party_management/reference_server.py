"""The reference PartyManagement server: answers from a JSON file, re-read whenever it changes.

Refusals are rich statuses (`google.rpc.ErrorInfo`, domain `party-management`), as the payout
manager's client expects from the real service.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from clients.party_management import config as config_file
from clients.party_management import terms
from clients.party_management.config import Config, ConfigError
from payout_manager.api import tls
from payout_manager.events.codec import posting_to_proto
from payout_manager.proto.party_management.v1 import party_management_pb2, party_management_pb2_grpc
from payout_manager.settings import Settings

DOMAIN = "party-management"
STOP_GRACE = 5.0
_WORKERS = 16

logger = logging.getLogger(__name__)

_Stamp = tuple[int, int, int]


class _ReloadingConfig:
    """The config as the file holds it now; a file that fails to load keeps the last good config."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        # The stamp is taken before reading, so a change made while reading is seen next time.
        self._stamp = _stamp(path)
        self._config = config_file.load(path)

    def current(self) -> Config:
        stamp = _stamp(self._path)
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._config = config_file.load(self._path)
                except ConfigError as error:
                    logger.error("%s; keeping the previous config", error)
                else:
                    logger.info("party-management config %s reloaded", self._path)
            return self._config


def _stamp(path: Path) -> _Stamp | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class PartyManagementServicer(party_management_pb2_grpc.PartyManagementServicer):
    """party_management.v1.PartyManagement over the reference config."""

    def __init__(self, config: _ReloadingConfig) -> None:
        self._config = config

    def GetShop(
        self, request: party_management_pb2.GetShopRequest, context: grpc.ServicerContext
    ) -> party_management_pb2.Shop:
        try:
            party, shop = terms.find_shop(self._config.current(), request.party_id, request.shop_id)
        except terms.TermsRefusal as refusal:
            _abort(context, refusal)
        return party_management_pb2.Shop(
            party_id=party.party_id,
            shop_id=shop.shop_id,
            currency=shop.currency,
            blocked=shop.blocked,
            accounts=party_management_pb2.ShopAccounts(
                settlement=shop.accounts.settlement,
                guarantee=shop.accounts.guarantee,
                payout=shop.accounts.payout,
            ),
            payout_tool_ids=shop.payout_tool_ids,
            default_payout_tool_id=shop.default_payout_tool_id,
        )

    def ComputePayoutCashFlow(
        self, request: party_management_pb2.ComputePayoutCashFlowRequest, context: grpc.ServicerContext
    ) -> party_management_pb2.ComputePayoutCashFlowResponse:
        try:
            postings, payout_tool_id = terms.compute_postings(
                self._config.current(),
                party_id=request.party_id,
                shop_id=request.shop_id,
                amount=request.cash.amount,
                currency=request.cash.currency,
                payout_tool_id=request.payout_tool_id,
            )
        except terms.TermsRefusal as refusal:
            _abort(context, refusal)
        return party_management_pb2.ComputePayoutCashFlowResponse(
            postings=[posting_to_proto(posting) for posting in postings], payout_tool_id=payout_tool_id
        )


def _abort(context: grpc.ServicerContext, refusal: terms.TermsRefusal) -> NoReturn:
    code = grpc.StatusCode[refusal.code.value]
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=refusal.reason.value, domain=DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=refusal.message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


def build_server(
    config_path: Path, address: str, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.Server, int]:
    """A server (not yet started) on `address` (port 0: any free port) and the port it is bound to.

    `credentials`: TLS (api.tls.server_credentials); None: plaintext. Raises ConfigError when the
    config file is wrong or the address cannot be bound.
    """
    config = _ReloadingConfig(config_path)
    # gRPC sets SO_REUSEPORT by default: a second server on a busy port would start and never answer.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS), options=[("grpc.so_reuseport", 0)])
    party_management_pb2_grpc.add_PartyManagementServicer_to_server(PartyManagementServicer(config), server)
    try:
        port: int = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"party-management cannot listen on {address}: in use, or not an address here")
    return server, port


def serve(config_path: Path, address: str, settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then stops with a grace period for calls in flight.

    TLS from the same PM_TLS_* settings as `serve`, and plaintext off loopback refused the same
    way. Raises ConfigError (or SettingsError) before binding anything when the config file (or
    a setting) is wrong.
    """
    tls.check_plaintext_allowed(settings, address)
    server, port = build_server(config_path, address, tls.server_credentials(settings))
    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.start()
        logger.info("party-management serving %s on port %d", config_path, port)
        stopping.wait()
        logger.info("party-management stopping")
        server.stop(grace=STOP_GRACE).wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["DOMAIN", "ConfigError", "PartyManagementServicer", "build_server", "serve"]
