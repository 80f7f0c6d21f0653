"""`payout-manager events republish`: stored events queued to be published again (SPEC 4).

For a consumer that lost data: the events of the payouts named (`--payout-id`, each from its
event 1), or of every payout changed since a time (`--since`, each from its first event created
then or later), go back into the outbox, and the relay publishes them again, as it publishes
every event: in outbox order, which is sequence order per payout.

The rule a consumer relies on (it keeps the highest sequence id it applied, SPEC 3): from the
moment a payout's republish commits, the topic gets that payout's events from the first one
republished through its latest, in sequence order, and its later changes after them; nothing
newer of that payout lands in between. How that holds:

- Per payout, the outbox is read in event row id order, and a payout's row ids grow with its
  sequence ids (each change locks the payout row and takes its id after the change before it
  committed). So republished events, with their original (low) ids, go out before any later
  event of the same payout still waiting, never after it.
- The republish locks each payout row as a change does (`storage.outbox.requeue`), then queues
  every one of its events from the first republished one, in the same transaction. A change of
  that payout waits until the republish commits and is queued behind; nothing of it can be
  committed, and so published, between what the republish read and its commit.
- An event still waiting in the outbox is not queued twice: its row counts the republish
  (`requeued`). If the relay leader had already read that row and is producing it while the
  republish commits, that copy may land before the republished events; the relay then finds the
  count moved on, keeps the row, and sends it once more in its place, after the events before it.
  Only what the relay had in flight can come before a payout's republished run, and the run
  still holds it.

So a consumer that rebuilds (a fresh consumer group, or a store emptied) finds each payout's
republished run whole and in order; one that skips sequence ids at or below the highest it applied
ends with every payout's latest snapshot, and one that applies only the next sequence id it lacks
ends with every event.

Payouts are queued a chunk at a time (`CHUNK` payouts per transaction), so a wide `--since` never
holds many locks or one long transaction; a change of a payout waits at most for its own chunk.
Payout ids given are all checked before anything is queued.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from payout_manager.storage import outbox
from payout_manager.storage.database import Database

# Payouts per transaction: few enough that their locks and the events queued stay small.
CHUNK = 200

# RFC 3339 date-time (section 5.6): full date, time, optional fraction, and an offset or Z.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


class UnknownPayoutsError(Exception):
    """Payout ids that name no stored payout."""

    def __init__(self, payout_ids: Sequence[str]) -> None:
        self.payout_ids = tuple(payout_ids)
        super().__init__(", ".join(self.payout_ids))


@dataclass(frozen=True)
class Republished:
    events: int
    payouts: int

    def summary(self) -> str:
        return f"queued {self.events} events of {self.payouts} payouts to be published again"


def parse_since(value: str) -> datetime:
    """An RFC 3339 date-time with its offset (`2026-12-01T10:00:00Z`, `...+03:00`); ValueError else."""
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 time with an offset, e.g. 2026-12-01T10:00:00Z")
    normalized = value.upper().replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(normalized)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid time (no such date or hour)") from None


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def republish_payouts(database: Database, payout_ids: Iterable[str], *, chunk: int = CHUNK) -> Republished:
    """Queues every event of these payouts again; UnknownPayoutsError, with nothing queued, if any
    id names no payout."""
    wanted = list(dict.fromkeys(payout_ids))
    known = database.read(lambda connection: outbox.known_payouts(connection, wanted))
    unknown = [payout_id for payout_id in wanted if payout_id not in known]
    if unknown:
        raise UnknownPayoutsError(unknown)
    events = 0
    for part in chunks(sorted(wanted), chunk):
        firsts = dict.fromkeys(part, 1)
        events += database.transaction(partial(outbox.requeue, firsts=firsts))
    return Republished(events, len(wanted))


def republish_since(database: Database, since: datetime, *, chunk: int = CHUNK) -> Republished:
    """Queues again, for every payout with an event created at `since` or later, its events from
    the first such one on."""
    events = payouts = 0
    after = ""
    while True:
        firsts = database.read(partial(outbox.first_events_since, since=since, after=after, limit=chunk))
        if not firsts:
            return Republished(events, payouts)
        events += database.transaction(partial(outbox.requeue, firsts=firsts))
        payouts += len(firsts)
        # Payout ids come in the database's order; the next chunk starts after this one's last.
        after = next(reversed(firsts))
