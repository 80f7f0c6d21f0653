"""Reads that may be a little stale, on a replica (PM_DATABASE_READ_URL), and when they are not.

The rule (SPEC 4, README "Read replicas"): `GetPayout`, `GetPayoutEvents`, `ListPayouts` and
`GetAccount` with `at` read from the replica. A replica lags its primary, so an answer that may be
missing what the caller asked for is asked again of the primary:

- nothing found (a payout, a revision, an account, no events after the caller's sequence id): what
  the caller looks for may have been committed on the primary and not yet replayed here;
- `GetAccount(at)` with `at` later than the last commit the replica replayed;
- the replica unavailable.

So a caller that names what it has seen (`GetPayout` with the revision a change answered,
`GetPayoutEvents` after the last sequence id it applied, a balance at a moment it has passed)
reads its own writes; a latest-state read (`GetPayout` of revision 0, `ListPayouts`) may be as old
as the replica's lag. Every write, and the reads inside writes (the create's idempotent replay, a
change's read of the current revision), use the primary alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from payout_manager.errors import Reason, Refusal
from payout_manager.storage.database import Database

T = TypeVar("T")

# What a replica may answer only because it lags, or because it is away: the primary is asked.
_ASK_THE_PRIMARY = frozenset(
    {
        Reason.PAYOUT_NOT_FOUND,
        Reason.REVISION_NOT_FOUND,
        Reason.ACCOUNT_NOT_FOUND,
        Reason.DATABASE_UNAVAILABLE,
    }
)


def _settled(_: object) -> bool:
    return True


class Reads:
    """Runs read-only work on the replica where there is one, on the primary where it must."""

    def __init__(self, primary: Database, replica: Database | None = None) -> None:
        self.primary = primary
        self.replica = replica

    def stale(self, run: Callable[[Database], T], *, settled: Callable[[T], bool] = _settled) -> T:
        """`run(replica)` if `settled` accepts its answer, else `run(primary)`.

        A refusal the replica may give only for lagging (something not found) or for being away
        sends the work to the primary too; any other refusal is the answer.
        """
        if self.replica is not None:
            try:
                answer = run(self.replica)
            except Refusal as refusal:
                if refusal.reason not in _ASK_THE_PRIMARY:
                    raise
            else:
                if settled(answer):
                    return answer
        return run(self.primary)
