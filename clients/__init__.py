"""Clients of the systems the payout manager calls, and reference servers to run them against."""
