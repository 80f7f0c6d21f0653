"""The world the payout manager lives in, for tests: accounts, shops and PartyManagement's config.

Each test makes its own party and shop with fresh accounts (isolation by random ids, no
truncation); the reference PartyManagement server rereads its config file when it changes.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.party_management.config import EXAMPLE_TERMS
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc

# The SPEC's example terms: the whole amount to the payout account, a 1% fee to the system.
SPEC_TERMS: list[dict[str, Any]] = list(EXAMPLE_TERMS)
# No fee at all: amount in, amount out; the simplest arithmetic for balance checks.
PLAIN_TERMS: list[dict[str, Any]] = [
    {
        "source": "merchant.settlement",
        "destination": "merchant.payout",
        "volume": {"share": [1, 1]},
        "details": "payout",
    },
]


@dataclass(frozen=True)
class Shop:
    party_id: str
    shop_id: str
    currency: str
    settlement: int
    guarantee: int
    payout: int


class World:
    def __init__(self, accounter: accounter_pb2_grpc.AccounterStub, config_path: Path) -> None:
        self.accounter = accounter
        self.config_path = config_path
        self._lock = threading.Lock()
        self._config: dict[str, Any] = {"system_accounts": {}, "parties": []}
        self._funding: dict[str, int] = {}
        self._write()

    def account(self, currency: str = "RUB", description: str = "test") -> int:
        reply = self.accounter.CreateAccount(
            accounter_pb.CreateAccountRequest(currency=currency, description=description)
        )
        return reply.id

    def balance(self, account_id: int) -> accounter_pb.Account:
        return self.accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=account_id))

    def fund(self, account_id: int, amount: int, currency: str = "RUB") -> None:
        """Moves `amount` onto the account from a technical account that may go negative."""
        plan_id = f"fund_{uuid.uuid4()}"
        source = self._funding_account(currency)
        posting = accounter_pb.Posting(from_id=source, to_id=account_id, amount=amount, currency=currency)
        self.accounter.Hold(
            accounter_pb.HoldRequest(
                plan_id=plan_id, batch=accounter_pb.PostingBatch(id=1, postings=[posting])
            )
        )
        self.accounter.CommitPlan(accounter_pb.CommitPlanRequest(plan_id=plan_id))

    def system_settlement(self, currency: str = "RUB") -> int:
        self._ensure_system_accounts(currency)
        settlement: int = self._config["system_accounts"][currency]["settlement"]
        return settlement

    def add_shop(
        self,
        funds: int = 0,
        *,
        currency: str = "RUB",
        terms: list[dict[str, Any]] | None = None,
        party_blocked: bool = False,
        shop_blocked: bool = False,
        party_id: str | None = None,
        settlement: int | None = None,
    ) -> Shop:
        """A new party (`party_id`, or a random one) with one shop, its three accounts, `funds` on its
        settlement account; `settlement`: an account id to use as that account instead of a new one
        (one in another currency, or an id no account has, for the ledger's refusals)."""
        self._ensure_system_accounts(currency)
        suffix = uuid.uuid4().hex[:12]
        shop = Shop(
            party_id=party_id or f"party-{suffix}",
            shop_id=f"shop-{suffix}",
            currency=currency,
            settlement=self.account(currency, "settlement") if settlement is None else settlement,
            guarantee=self.account(currency, "guarantee"),
            payout=self.account(currency, "payout"),
        )
        if funds:
            self.fund(shop.settlement, funds, currency)
        with self._lock:
            self._config["parties"].append(
                {
                    "party_id": shop.party_id,
                    "blocked": party_blocked,
                    "payout_terms": SPEC_TERMS if terms is None else terms,
                    "shops": [
                        {
                            "shop_id": shop.shop_id,
                            "currency": currency,
                            "blocked": shop_blocked,
                            "accounts": {
                                "settlement": shop.settlement,
                                "guarantee": shop.guarantee,
                                "payout": shop.payout,
                            },
                            "payout_tool_ids": ["tool-1", "tool-2"],
                            "default_payout_tool_id": "tool-1",
                        }
                    ],
                }
            )
            self._write()
        return shop

    def _funding_account(self, currency: str) -> int:
        with self._lock:
            if currency not in self._funding:
                self._funding[currency] = self.account(currency, "funding")
            return self._funding[currency]

    def _ensure_system_accounts(self, currency: str) -> None:
        with self._lock:
            if currency in self._config["system_accounts"]:
                return
            self._config["system_accounts"][currency] = {
                "settlement": self.account(currency, "system settlement"),
                "subagent": self.account(currency, "system subagent"),
            }
            self._write()

    def _write(self) -> None:
        # Write and rename: the server never reads a half-written file.
        scratch = self.config_path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self._config))
        os.replace(scratch, self.config_path)
