"""Accounting: the shumway-like double-entry ledger with hold / commit / rollback."""
