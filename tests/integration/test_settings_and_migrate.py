"""SPEC 4: settings from the environment, refused at start with one line; `migrate` is idempotent.

The command line tests run `payout-manager` as a real subprocess with an environment that holds no
PM_* variable except the ones a test sets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg2
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg2 import sql
from support.books import dsn
from support.serving import serve

from local_stack.postgres import LocalPostgres
from payout_manager import settings
from payout_manager.payouts.model import PayoutStatus
from payout_manager.proto.accounter.v1 import accounter_pb2, accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.settings import Settings, SettingsError
from payout_manager.storage import audit, migrations, tables
from payout_manager.storage.database import create_database_engine
from payout_manager.storage.ledger import Ledger
from payout_manager_testing.postgres import scratch_postgres
from payout_manager_testing.processes import free_port

PASSWORD = "s3cret-pw"
# A well-formed URL to a port where nothing listens: a setting that slips through fails fast.
UNREACHABLE_DATABASE_URL = f"postgresql://pm:{PASSWORD}@127.0.0.1:{free_port()}/pm"
# A refused start takes well under a second; one still running after this has started for real.
REFUSAL_TIMEOUT = 10.0
MIGRATE_TIMEOUT = 120.0
EXPECTED_TABLES = {
    "account",
    "payout",
    "payout_event",
    "payout_event_outbox",
    "posting",
    "posting_plan",
    "alembic_version",
}


@dataclass(frozen=True)
class Run:
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def controlled_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any PM_* variable, plus `overrides`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PM_")}
    return {**env, **overrides}


def text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def payout_manager(*args: str, env: Mapping[str, str], timeout: float = REFUSAL_TIMEOUT) -> Run:
    """Runs `payout-manager ARGS`; one still running after `timeout` seconds is killed (code None)."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "payout_manager", *args],
            env=controlled_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as running:
        stderr = f"{text(running.stderr)}(still running after {timeout:.0f} s, killed)"
        return Run(None, text(running.stdout), stderr)
    return Run(completed.returncode, completed.stdout, completed.stderr)


def assert_refused_in_one_line(run: Run, setting: str) -> None:
    assert run.returncode == 2, f"exit code {run.returncode}, output:\n{run.output}"
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{run.stderr}"
    assert setting in lines[0]
    assert run.stdout == ""
    assert PASSWORD not in run.output


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_missing_database_url_stops_the_program_with_one_line(command: str) -> None:
    run = payout_manager(command, env={})

    assert_refused_in_one_line(run, "PM_DATABASE_URL")


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://x/y",
        f"mysql://pm:{PASSWORD}@db.example/pm",
        f"postgresql://pm:{PASSWORD}@127.0.0.1:notaport/pm",
        f"postgresql://pm:{PASSWORD}@127.0.0.1:70000/pm",
    ],
)
def test_malformed_database_url_stops_the_program_with_one_line_and_no_password(
    command: str, url: str
) -> None:
    run = payout_manager(command, env={"PM_DATABASE_URL": url})

    assert_refused_in_one_line(run, "PM_DATABASE_URL")


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("PM_GRPC_ADDRESS", "nohostport"),
        ("PM_GRPC_ADDRESS", "host:notaport"),
        ("PM_GRPC_ADDRESS", "host:70000"),
        ("PM_PARTY_MANAGEMENT_ADDRESS", "host:notaport"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "-1"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "abc"),
        ("PM_UNPAID_PAYOUT_TTL", "soon"),
        ("PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP", "many"),
    ],
)
def test_malformed_setting_stops_the_program_with_one_line_naming_it(
    command: str, setting: str, value: str
) -> None:
    run = payout_manager(command, env={"PM_DATABASE_URL": UNREACHABLE_DATABASE_URL, setting: value})

    assert_refused_in_one_line(run, setting)


def test_events_without_kafka_stops_with_one_line_naming_the_setting() -> None:
    run = payout_manager("events", env={})

    assert_refused_in_one_line(run, "PM_KAFKA_BOOTSTRAP_SERVERS")


def test_serve_with_zero_workers_stops_with_one_line_naming_the_flag() -> None:
    run = payout_manager("serve", "--workers", "0", env={"PM_DATABASE_URL": UNREACHABLE_DATABASE_URL})

    assert_refused_in_one_line(run, "--workers")


def test_serve_with_a_malformed_address_flag_stops_with_one_line_naming_it() -> None:
    run = payout_manager(
        "serve", "--address", "host:70000", env={"PM_DATABASE_URL": UNREACHABLE_DATABASE_URL}
    )

    assert_refused_in_one_line(run, "--address")


# --- settings.load ------------------------------------------------------------------------------


def test_load_gives_the_spec_defaults() -> None:
    loaded = settings.load({})

    assert loaded.database_url is None
    assert loaded.grpc_address == "127.0.0.1:8022"
    assert loaded.party_management_address == "127.0.0.1:8023"
    assert loaded.kafka_bootstrap_servers is None
    assert loaded.kafka_topic == "pm-events-payout"
    assert loaded.party_management_timeout > 0
    assert loaded.shutdown_grace > 0
    assert loaded.unpaid_payout_ttl is None


def test_load_reads_every_setting_from_the_environment() -> None:
    loaded = settings.load(
        {
            "PM_DATABASE_URL": "postgresql://pm@db.example:5433/payouts",
            "PM_GRPC_ADDRESS": "0.0.0.0:9022",
            "PM_PARTY_MANAGEMENT_ADDRESS": "party-management.example:9023",
            "PM_KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092",
            "PM_KAFKA_TOPIC": "payouts-test",
            "PM_PARTY_MANAGEMENT_TIMEOUT": "0.5",
            "PM_DATABASE_POOL_SIZE": "3",
            "PM_SHUTDOWN_GRACE": "4",
            "PM_METRICS_ADDRESS": "0.0.0.0:9100",
            "PM_LOG_LEVEL": "debug",
            "PM_UNPAID_PAYOUT_TTL": "86400",
            "PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP": "25",
        }
    )

    assert loaded == Settings(
        database_url="postgresql://pm@db.example:5433/payouts",
        grpc_address="0.0.0.0:9022",
        party_management_address="party-management.example:9023",
        kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092",
        kafka_topic="payouts-test",
        party_management_timeout=0.5,
        database_pool_size=3,
        shutdown_grace=4.0,
        metrics_address="0.0.0.0:9100",
        log_level="DEBUG",
        unpaid_payout_ttl=86_400,
        max_unresolved_payouts_per_shop=25,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {
            "PM_TLS_CERT_FILE": "tls_cert_file",
            "PM_TLS_KEY_FILE": "tls_key_file",
            "PM_TLS_CLIENT_CA_FILE": "tls_client_ca_file",
        },
        {
            "PM_PARTY_MANAGEMENT_TLS_CA_FILE": "party_management_tls_ca_file",
            "PM_PARTY_MANAGEMENT_TLS_CERT_FILE": "party_management_tls_cert_file",
            "PM_PARTY_MANAGEMENT_TLS_KEY_FILE": "party_management_tls_key_file",
        },
        # TLS to PartyManagement without a client certificate.
        {"PM_PARTY_MANAGEMENT_TLS_CA_FILE": "party_management_tls_ca_file"},
    ],
)
def test_load_reads_the_tls_files(tmp_path: Path, fields: dict[str, str]) -> None:
    files = {variable: tmp_path / f"{variable}.pem" for variable in fields}
    for path in files.values():
        path.write_text("PEM")

    loaded = settings.load({variable: str(path) for variable, path in files.items()})

    assert {variable: getattr(loaded, field) for variable, field in fields.items()} == files
    assert loaded.party_management_tls_cert_file == files.get("PM_PARTY_MANAGEMENT_TLS_CERT_FILE")


def test_load_reads_the_insecure_switch() -> None:
    assert settings.load({"PM_ALLOW_INSECURE": "TRUE"}).allow_insecure
    assert not settings.load({}).allow_insecure


def test_a_party_management_client_certificate_without_its_ca_is_refused_in_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        settings.load(
            {"PM_PARTY_MANAGEMENT_TLS_CERT_FILE": __file__, "PM_PARTY_MANAGEMENT_TLS_KEY_FILE": __file__}
        )

    assert "PM_PARTY_MANAGEMENT_TLS_CA_FILE" in str(refused.value)
    assert "\n" not in str(refused.value)


def password_file(directory: Path, content: str) -> Path:
    path = directory / "database-password"
    path.write_text(content)
    return path


def test_the_password_file_gives_the_database_url_its_password_and_shows_it_nowhere(tmp_path: Path) -> None:
    loaded = settings.load(
        {
            "PM_DATABASE_URL": "postgresql://pm@db.example/pm",
            # One trailing newline is the file's, the one before it the password's.
            "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, f"{PASSWORD}\n\n")),
        }
    )

    url = loaded.require_database_url()

    assert (url.username, url.password, url.host, url.database) == ("pm", f"{PASSWORD}\n", "db.example", "pm")
    for shown in (repr(loaded), str(url), repr(url)):
        assert PASSWORD not in shown
    config = migrations.alembic_config(url)
    options = [
        value for section in config.file_config.sections() for _, value in config.file_config.items(section)
    ]
    assert options and not any(PASSWORD in value for value in options)


@pytest.mark.parametrize("variable", ["PM_DATABASE_URL", "PM_DATABASE_READ_URL"])
def test_a_password_in_both_the_url_and_the_file_is_refused_in_one_line(
    tmp_path: Path, variable: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings.load(
            {
                "PM_DATABASE_URL": "postgresql://pm@db.example/pm",
                variable: f"postgresql://pm:{PASSWORD}@db.example/pm",
                "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, "another")),
            }
        )

    message = str(refused.value)
    assert "PM_DATABASE_PASSWORD_FILE" in message and variable in message
    assert "\n" not in message and PASSWORD not in message and "another" not in message


def test_the_password_file_serves_the_read_replica_too(tmp_path: Path) -> None:
    loaded = settings.load(
        {
            "PM_DATABASE_URL": "postgresql://pm@primary.example/pm",
            "PM_DATABASE_READ_URL": "postgresql://pm@replica.example/pm",
            "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, PASSWORD)),
        }
    )

    replica = loaded.read_database_url()
    assert replica is not None and (replica.host, replica.password) == ("replica.example", PASSWORD)
    assert PASSWORD not in repr(loaded) and PASSWORD not in repr(replica)
    assert (
        settings.load({"PM_DATABASE_URL": "postgresql://pm@primary.example/pm"}).read_database_url() is None
    )


def test_an_empty_password_file_is_refused_in_one_line(tmp_path: Path) -> None:
    loaded = settings.load(
        {
            "PM_DATABASE_URL": "postgresql://pm@db.example/pm",
            "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, "\n")),
        }
    )

    with pytest.raises(SettingsError, match=r"PM_DATABASE_PASSWORD_FILE is malformed: .* is empty$"):
        loaded.require_database_url()


def test_load_takes_a_list_of_kafka_brokers_with_or_without_a_scheme() -> None:
    servers = "kafka-1:9092, kafka-2:9092,SSL://kafka-3:9093"

    assert settings.load({"PM_KAFKA_BOOTSTRAP_SERVERS": servers}).kafka_bootstrap_servers == servers


def test_load_treats_blank_values_as_unset() -> None:
    loaded = settings.load(
        {"PM_DATABASE_URL": "  ", "PM_GRPC_ADDRESS": "", "PM_KAFKA_BOOTSTRAP_SERVERS": " "}
    )

    assert loaded == settings.load({})


def test_require_database_url_names_the_missing_setting() -> None:
    with pytest.raises(SettingsError, match="PM_DATABASE_URL"):
        settings.load({}).require_database_url()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("PM_DATABASE_URL", "not a url"),
        ("PM_DATABASE_URL", "mysql://x/y"),
        ("PM_DATABASE_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:notaport/pm"),
        ("PM_DATABASE_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:5432,127.0.0.1:notaport/pm"),
        ("PM_DATABASE_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:5432,127.0.0.1:70000/pm"),
        ("PM_DATABASE_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:5432,[::1]:5432/pm"),
        ("PM_DATABASE_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:5432,:5432/pm"),
        ("PM_DATABASE_READ_URL", "mysql://x/y"),
        ("PM_DATABASE_READ_URL", f"postgresql://pm:{PASSWORD}@127.0.0.1:notaport/pm"),
        ("PM_GRPC_ADDRESS", "nohostport"),
        ("PM_GRPC_ADDRESS", "host:notaport"),
        ("PM_GRPC_ADDRESS", "host:70000"),
        ("PM_GRPC_ADDRESS", ":8022"),
        ("PM_PARTY_MANAGEMENT_ADDRESS", "nohostport"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "-1"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "0"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "abc"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "nan"),
        ("PM_PARTY_MANAGEMENT_TIMEOUT", "inf"),
        ("PM_DATABASE_POOL_SIZE", "0"),
        ("PM_DATABASE_POOL_SIZE", "ten"),
        ("PM_SHUTDOWN_GRACE", "-5"),
        ("PM_KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("PM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,broker"),
        ("PM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,"),
        ("PM_KAFKA_TOPIC", "pm events"),
        ("PM_KAFKA_TOPIC", ".."),
        ("PM_KAFKA_TOPIC", "t" * 250),
        ("PM_METRICS_ADDRESS", "9100"),
        ("PM_METRICS_ADDRESS", "0.0.0.0:port"),
        ("PM_LOG_LEVEL", "loud"),
        ("PM_ALLOW_INSECURE", "yes"),
        ("PM_TLS_CERT_FILE", "/nonexistent/server.crt"),
        ("PM_TLS_CERT_FILE", __file__),  # readable, but without its key
        ("PM_TLS_KEY_FILE", __file__),  # readable, but without its certificate
        ("PM_TLS_CLIENT_CA_FILE", __file__),  # client certificates, but no TLS to ask for them
        ("PM_PARTY_MANAGEMENT_TLS_CA_FILE", "/nonexistent/ca.crt"),
        ("PM_PARTY_MANAGEMENT_TLS_CERT_FILE", __file__),  # readable, but without its key
        ("PM_PARTY_MANAGEMENT_TLS_KEY_FILE", __file__),  # readable, but without its certificate
        ("PM_DATABASE_PASSWORD_FILE", "/nonexistent/password"),
        ("PM_UNPAID_PAYOUT_TTL", "0"),
        ("PM_UNPAID_PAYOUT_TTL", "-60"),
        ("PM_UNPAID_PAYOUT_TTL", "1.5"),
        ("PM_UNPAID_PAYOUT_TTL", "1h"),
        ("PM_UNPAID_PAYOUT_TTL", "\u00b2"),  # a digit to str.isdigit, not to int()
        ("PM_UNPAID_PAYOUT_TTL", "9" * 30),  # past any date
        ("PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP", "0"),
        ("PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP", "-5"),
        ("PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP", "9" * 20),  # past the procedure's bigint
    ],
)
def test_load_refuses_a_malformed_setting_naming_it(setting: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        settings.load({setting: value})

    message = str(refused.value)
    assert setting in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_load_never_shows_the_password_of_a_refused_url() -> None:
    with pytest.raises(SettingsError) as refused:
        settings.load({"PM_DATABASE_URL": f"mysql://pm:{PASSWORD}@db.example/pm"})

    assert PASSWORD not in str(refused.value)


# --- migrate ------------------------------------------------------------------------------------


def schema(database_url: str) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """Every column of the public schema (table, column, type, nullable) and the alembic versions."""
    with closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, column_name"
        )
        columns: list[tuple[str, str, str, str]] = cursor.fetchall()
        tables = {table for table, *_ in columns}
        versions: list[str] = []
        if "alembic_version" in tables:
            cursor.execute("SELECT version_num FROM alembic_version ORDER BY version_num")
            versions = [version for (version,) in cursor.fetchall()]
    return columns, versions


def head_revision() -> str:
    config = migrations.alembic_config("postgresql://unused/unused")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_migrate_brings_a_fresh_database_to_the_newest_schema(fresh_database_url: str) -> None:
    assert schema(fresh_database_url) == ([], [])

    run = payout_manager("migrate", env={"PM_DATABASE_URL": fresh_database_url}, timeout=MIGRATE_TIMEOUT)

    assert run.returncode == 0, run.output
    columns, versions = schema(fresh_database_url)
    assert {table for table, *_ in columns} >= EXPECTED_TABLES
    assert versions == [head_revision()]


def test_migrate_twice_changes_nothing_the_second_time(fresh_database_url: str) -> None:
    first = payout_manager("migrate", env={"PM_DATABASE_URL": fresh_database_url}, timeout=MIGRATE_TIMEOUT)
    assert first.returncode == 0, first.output
    after_first = schema(fresh_database_url)

    second = payout_manager("migrate", env={"PM_DATABASE_URL": fresh_database_url}, timeout=MIGRATE_TIMEOUT)

    assert second.returncode == 0, second.output
    assert schema(fresh_database_url) == after_first
    assert after_first[1] == [head_revision()]


def test_two_migrates_at_once_on_a_fresh_database_both_succeed(
    fresh_database_url: str, tmp_path: Path
) -> None:
    env = controlled_env({"PM_DATABASE_URL": fresh_database_url})
    logs = [tmp_path / f"migrate-{n}.log" for n in range(2)]
    processes = []
    for log in logs:
        with log.open("wb") as output:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "payout_manager", "migrate"],
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )

    codes = [process.wait(timeout=MIGRATE_TIMEOUT) for process in processes]

    assert codes == [0, 0], "\n".join(log.read_text(errors="replace") for log in logs)
    columns, versions = schema(fresh_database_url)
    assert {table for table, *_ in columns} >= EXPECTED_TABLES
    assert versions == [head_revision()]


def test_the_newest_migration_builds_exactly_the_tables_the_code_declares(fresh_database_url: str) -> None:
    migrations.upgrade(fresh_database_url)
    engine = create_database_engine(fresh_database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), tables.metadata)
    finally:
        engine.dispose()

    assert differences == []


def test_migrating_from_the_first_revision_queues_every_stored_event_for_kafka(
    fresh_database_url: str,
) -> None:
    command.upgrade(migrations.alembic_config(fresh_database_url), "0001")
    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO payout (payout_id, party_id, shop_id, status, created_at, updated_at,"
            " requested_amount, requested_payout_tool_id, payout_tool_id, amount, fee, currency, cash_flow,"
            " metadata, cancel_details, revision)"
            " VALUES ('p-1', 'party', 'shop', 'UNPAID', now(), now(),"
            " 10, '', 't', 10, 0, 'RUB', '[]', '{}', '', 2)"
        )
        cursor.execute(
            "INSERT INTO payout_event (event_id, payout_id, sequence_id, created_at, payload)"
            " SELECT gen_random_uuid(), 'p-1', n, now(), '' FROM generate_series(1, 2) AS n RETURNING id"
        )
        stored = sorted(row_id for (row_id,) in cursor.fetchall())
        connection.commit()

    migrations.upgrade(fresh_database_url)

    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT event_row_id FROM payout_event_outbox ORDER BY event_row_id")
        assert [row_id for (row_id,) in cursor.fetchall()] == stored


def _ledger_at_0002(database_url: str) -> None:
    """At revision 0002: two accounts, one committed plan of 70 and one plan of 30 on hold between them."""
    command.upgrade(migrations.alembic_config(database_url), "0002")
    with closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO account (id, currency, description, created_at, own_amount, held_debit, held_credit)"
            " VALUES (1, 'RUB', 'from', '2026-01-01', -70, 30, 0), (2, 'RUB', 'to', '2026-01-01', 70, 0, 30)"
        )
        cursor.execute(
            "INSERT INTO account_balance (account_id, at, own_amount, min_available_amount,"
            " max_available_amount) VALUES (1, '2026-01-01', 0, 0, 0), (2, '2026-01-01', 0, 0, 0),"
            " (1, '2026-01-02', -70, -70, -70), (2, '2026-01-02', 70, 70, 70),"
            " (1, '2026-01-03', -70, -100, -70), (2, '2026-01-03', 70, 70, 100)"
        )
        cursor.execute(
            "INSERT INTO posting_plan (id, status, created_at, updated_at) VALUES"
            " ('done', 'COMMITTED', '2026-01-02', '2026-01-02'), ('held', 'HOLD', '2026-01-03', '2026-01-03')"
        )
        cursor.execute(
            "INSERT INTO posting_plan_account (plan_id, account_id, net) VALUES"
            " ('done', 1, -70), ('done', 2, 70), ('held', 1, -30), ('held', 2, 30)"
        )
        connection.commit()


def test_migrating_to_account_slots_keeps_every_balance_and_past_balance(fresh_database_url: str) -> None:
    _ledger_at_0002(fresh_database_url)

    migrations.upgrade(fresh_database_url)

    engine = create_database_engine(fresh_database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            ledger = Ledger(connection)
            now = {i: ledger.get_account(i) for i in (1, 2)}
            at_2 = {i: ledger.get_account(i, datetime(2026, 1, 2, 12, tzinfo=UTC)) for i in (1, 2)}
            problems = audit.problems(connection)
    finally:
        engine.dispose()
    amounts = {i: (a.own_amount, a.min_available_amount, a.max_available_amount) for i, a in now.items()}
    assert amounts == {1: (-70, -100, -70), 2: (70, 70, 100)}
    past = {i: (a.own_amount, a.min_available_amount, a.max_available_amount) for i, a in at_2.items()}
    assert past == {1: (-70, -70, -70), 2: (70, 70, 70)}
    assert problems == []


def test_downgrading_from_account_slots_restores_the_balances_while_each_account_has_one_slot(
    fresh_database_url: str,
) -> None:
    _ledger_at_0002(fresh_database_url)
    migrations.upgrade(fresh_database_url)

    command.downgrade(migrations.alembic_config(fresh_database_url), "0002")

    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id, own_amount, held_debit, held_credit FROM account ORDER BY id")
        assert cursor.fetchall() == [(1, -70, 30, 0), (2, 70, 0, 30)]


def test_downgrading_refuses_while_an_account_has_several_slots(fresh_database_url: str) -> None:
    _ledger_at_0002(fresh_database_url)
    migrations.upgrade(fresh_database_url)
    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO account_slot (account_id, slot, own_amount, held_debit, held_credit)"
            " VALUES (2, 7, 0, 0, 0)"
        )
        connection.commit()

    with pytest.raises(RuntimeError, match="1 account slots beyond slot 0"):
        command.downgrade(migrations.alembic_config(fresh_database_url), "0002")

    assert schema(fresh_database_url)[1] == [head_revision()]


def test_the_migrated_status_constraint_allows_exactly_the_payout_statuses(fresh_database_url: str) -> None:
    migrations.upgrade(fresh_database_url)
    with psycopg2.connect(dsn(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'payout'::regclass AND conname = 'ck_payout_status'"
        )
        row = cursor.fetchone()

    assert row is not None, "the payout table has no status constraint"
    # A status added to the enum without a migration (or the reverse) fails here.
    assert set(re.findall(r"'(\w+)'", row[0])) == {status.value for status in PayoutStatus}


def _events_before_initiators() -> list[pb.Event]:
    """A created and a confirmed event, as they were stored before events carried an initiator."""
    payout = pb.Payout(payout_id="p-1", party_id="party", shop_id="shop", amount=10, currency="RUB")
    payout.metadata["k"] = "v"
    created = pb.Event(event_id="e-1", payout_id="p-1", sequence_id=1, payout=payout)
    created.payout_change.created.payout.CopyFrom(payout)
    confirmed = pb.Event(event_id="e-2", payout_id="p-1", sequence_id=2, payout=payout)
    confirmed.payout.status = pb.PAYOUT_STATUS_CONFIRMED
    confirmed.payout_change.status_changed.status = pb.PAYOUT_STATUS_CONFIRMED
    return [created, confirmed]


def test_migrating_to_initiators_makes_every_stored_change_anonymous(fresh_database_url: str) -> None:
    command.upgrade(migrations.alembic_config(fresh_database_url), "0003")
    before = _events_before_initiators()
    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO payout (payout_id, party_id, shop_id, status, created_at, updated_at,"
            " requested_amount, requested_payout_tool_id, payout_tool_id, amount, fee, currency, cash_flow,"
            " metadata, cancel_details, revision)"
            " VALUES ('p-1', 'party', 'shop', 'CONFIRMED', now(), now(), 10, '', 't', 10, 0, 'RUB', '[]',"
            " '{}', '', 2)"
        )
        for event in before:
            cursor.execute(
                "INSERT INTO payout_event (event_id, payout_id, sequence_id, created_at, payload)"
                " VALUES (gen_random_uuid(), 'p-1', %s, now(), %s)",
                (event.sequence_id, event.SerializeToString()),
            )
        connection.commit()

    migrations.upgrade(fresh_database_url)

    with closing(psycopg2.connect(fresh_database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT created_by FROM payout")
        assert cursor.fetchall() == [("anonymous",)]
        cursor.execute("SELECT payload FROM payout_event ORDER BY sequence_id")
        after = [pb.Event.FromString(bytes(payload)) for (payload,) in cursor.fetchall()]
    assert [(e.initiator, e.payout.created_by) for e in after] == [("anonymous", "anonymous")] * 2
    assert after[0].payout_change.created.payout.created_by == "anonymous"
    assert after[1].payout_change.WhichOneof("change") == "status_changed"
    # Nothing else of them changed.
    expected = [pb.Event() for _ in before]
    for amended, original in zip(expected, before, strict=True):
        amended.CopyFrom(original)
        amended.initiator = "anonymous"
        amended.payout.created_by = "anonymous"
    expected[0].payout_change.created.payout.created_by = "anonymous"
    assert after == expected


# --- PM_DATABASE_PASSWORD_FILE against a server that checks passwords ----------------------------


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[LocalPostgres]:
    with scratch_postgres("pm-test-passwords-", passwords=True) as server:
        yield server


@dataclass(frozen=True)
class PasswordDatabase:
    url: str  # without the password
    password: str


@pytest.fixture
def password_database(password_postgres: LocalPostgres) -> PasswordDatabase:
    """A role with a password and an empty database it owns; the password has what URLs and Alembic mangle."""
    suffix = uuid.uuid4().hex[:12]
    role, password = f"pm_app_{suffix}", f"p%w@d:{suffix} 50%"
    with closing(psycopg2.connect(password_postgres.url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(role), sql.Identifier(role))
            )
    return PasswordDatabase(f"postgresql://{role}@127.0.0.1:{password_postgres.port}/{role}", password)


def test_migrate_and_serve_connect_with_the_password_from_the_file(
    password_database: PasswordDatabase, tmp_path: Path
) -> None:
    env = {
        "PM_DATABASE_URL": password_database.url,
        "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, f"{password_database.password}\n")),
    }

    migrated = payout_manager("migrate", env=env, timeout=MIGRATE_TIMEOUT)
    metrics = f"127.0.0.1:{free_port()}"
    served = serve(
        2,
        {
            **env,
            "PM_METRICS_ADDRESS": metrics,
            # The relay connects to the database before it looks for the broker.
            "PM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "PM_SHUTDOWN_GRACE": "1",
        },
        tmp_path / "serve.log",
    )
    try:
        with grpc.insecure_channel(served.address) as channel:
            account = accounter_pb2_grpc.AccounterStub(channel).CreateAccount(
                accounter_pb2.CreateAccountRequest(currency="RUB", description="password file"), timeout=10
            )
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        served.wait_for_log("relay: leading")
    finally:
        served.stop(timeout=20)

    assert migrated.returncode == 0, migrated.output
    assert account.id > 0
    assert "pm_outbox_events " in scraped  # the metrics collector read the database
    for output in (migrated.output, served.process.output()):
        assert password_database.password not in output


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_wrong_password_in_the_file_stops_the_program_with_one_line_without_it(
    password_database: PasswordDatabase, tmp_path: Path, command: str
) -> None:
    wrong = f"{password_database.password}-not"
    env = {
        "PM_DATABASE_URL": password_database.url,
        "PM_DATABASE_PASSWORD_FILE": str(password_file(tmp_path, wrong)),
    }

    run = (
        payout_manager(command, "--address", f"127.0.0.1:{free_port()}", env=env)
        if command == "serve"
        else payout_manager(command, env=env)
    )

    assert_refused_in_one_line(run, "password authentication failed")
    assert wrong not in run.output and password_database.password not in run.output
