"""The service limit the benchmarks run under."""

from __future__ import annotations

# PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP for a run whose payouts all stay UNPAID: past what any run
# makes, so the limit is checked on every create (its cost is measured) and refuses none.
UNLIMITED = 1_000_000_000
