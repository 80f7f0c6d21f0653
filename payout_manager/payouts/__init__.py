"""Payouts: the payout aggregate, its rules and the service that runs them."""
