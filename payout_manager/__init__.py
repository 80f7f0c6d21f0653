"""The payout manager: pays merchants' money out, keeps the books, publishes every change."""
