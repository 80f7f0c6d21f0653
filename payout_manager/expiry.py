"""Expiry (SPEC 1.1): with PM_UNPAID_PAYOUT_TTL set, the service cancels UNPAID payouts older than that.

Every `serve` process runs one expiry; exactly one of them leads at a time (`storage.leadership`,
as the relay does, on a key of its own). The leader loops:

1. While more than `OUTBOX_LIMIT` events wait for Kafka, wait: the expiry never runs ahead of the
   relay, so a backlog of expired payouts reaches the topic at the pace the relay drains it.
2. Read up to `BATCH_SIZE` UNPAID payouts created before now - TTL, oldest first (a partial index
   holds only the UNPAID ones).
3. Expire each through the payout service (`PayoutService.expire`): a normal cancel, one short
   transaction of its rollback and its event (initiator `payout-manager:expiry`, details
   `expired`), made only if the payout is still UNPAID at the revision it was read at, so that a
   confirm or a mark-paid landing first wins and is left alone.
4. After a full batch go on at once; else wait `POLL_INTERVAL`, well within SPEC's minute.

Creates never wait for more than one expiry's transaction. Exactly once, however many processes:
one leader, and should a second ever overlap it (a leader whose session the database dropped
while its batch ran), its next read finds the payout CANCELLED and it leaves it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from payout_manager.errors import Refusal
from payout_manager.payouts.service import PayoutService
from payout_manager.storage.database import DatabaseUrl
from payout_manager.storage.leadership import BACKOFF_MAX, BACKOFF_MIN, Leadership, lock_key
from payout_manager.storage.outbox import Outbox
from payout_manager.storage.payouts import Payouts

log = logging.getLogger(__name__)

# The advisory lock key of the expiry's leadership, one leader per database.
LEADER_LOCK_KEY = lock_key("pmexpiry")
BATCH_SIZE = 100
# Expiry pauses while more events than this wait in the outbox (the relay drains thousands a second).
OUTBOX_LIMIT = 1_000
# How often an idle leader looks for newly expired payouts, and a paused one at the outbox.
POLL_INTERVAL = 2.0
BACKLOG_INTERVAL = 0.5
# How often the leader says what it cancelled, and that it waits for the relay.
LOG_INTERVAL = 60.0


class Expiry:
    """The expiry of one process; `run` loops until `stop` is set."""

    def __init__(
        self,
        database_url: DatabaseUrl,
        payouts: PayoutService,
        ttl: timedelta,
        *,
        on_expired: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`on_expired` is told of each payout cancelled as expired."""
        self._leadership = Leadership(database_url, key=LEADER_LOCK_KEY, job="expiry")
        self._payouts = payouts
        self._ttl = ttl
        self._on_expired = on_expired
        self._clock = clock

    def run(self, stop: threading.Event) -> None:
        self._leadership.run(stop, self._lead)

    def _lead(self, connection: Connection, stop: threading.Event) -> None:
        log.info("expiry: cancelling UNPAID payouts older than %d s", self._ttl.total_seconds())
        outbox, candidates = Outbox(connection), Payouts(connection)
        report = _Report()
        backoff = BACKOFF_MIN
        while not stop.is_set():
            if outbox.holds_more_than(OUTBOX_LIMIT):
                report.waiting()
                stop.wait(BACKLOG_INTERVAL)
                continue
            batch = candidates.unpaid_created_before(self._clock() - self._ttl, BATCH_SIZE)
            try:
                for payout_id in batch:
                    if stop.is_set():
                        return
                    if self._payouts.expire(payout_id, self._ttl) is not None:
                        report.expired()
                        if self._on_expired is not None:
                            self._on_expired()
                backoff = BACKOFF_MIN
            except Refusal as refusal:
                # The database the changes go through is away (or a payout's books refuse): the
                # payouts left are read again after the backoff.
                log.warning("expiry: %s; retrying in %.1f s", refusal, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            report.say()
            if len(batch) < BATCH_SIZE:
                stop.wait(POLL_INTERVAL)


class _Report:
    """What the leader says in the log: each at most once per LOG_INTERVAL."""

    def __init__(self) -> None:
        self._count = 0
        self._since = self._waiting_said = time.monotonic() - LOG_INTERVAL

    def expired(self) -> None:
        self._count += 1

    def waiting(self) -> None:
        now = time.monotonic()
        if now - self._waiting_said >= LOG_INTERVAL:
            self._waiting_said = now
            log.info("expiry: more than %d events wait for Kafka; waiting for the relay", OUTBOX_LIMIT)

    def say(self) -> None:
        now = time.monotonic()
        if self._count and now - self._since >= LOG_INTERVAL:
            log.info("expiry: cancelled %d expired payouts", self._count)
            self._count, self._since = 0, now
