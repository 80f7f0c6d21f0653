"""Storage: the tables, the transactions and the SQL behind the ledger and the payouts."""
