"""PartyManagement: the client the payout manager uses, and a reference server driven by a JSON file.

`client` is what the payout manager imports; `config`, `terms` and `reference_server` make up the
reference server (`payout-manager party-management --config FILE`).
"""
