"""PM_DATABASE_URL in libpq's multi-host form means the same servers to SQLAlchemy and to libpq."""

from __future__ import annotations

import pytest

from payout_manager import settings
from payout_manager.storage.database import sqlalchemy_url
from payout_manager.storage.urls import hosts, libpq_dsn, parse

PASSWORD = "s3cr@t-pw"
MULTI_HOST = (
    "postgresql://pm:s3cr%40t-pw@db1.example:5432,db2.example:5433/payouts?target_session_attrs=read-write"
)


def test_a_multi_host_url_names_every_server_in_order_with_its_options() -> None:
    url = parse(MULTI_HOST)

    assert hosts(url) == [("db1.example", 5432), ("db2.example", 5433)]
    assert (url.username, url.password, url.database) == ("pm", PASSWORD, "payouts")
    assert url.query["target_session_attrs"] == "read-write"
    assert sqlalchemy_url(MULTI_HOST).drivername == "postgresql+psycopg2"


def test_a_multi_host_url_hides_its_password_when_printed() -> None:
    url = parse(MULTI_HOST)

    assert PASSWORD not in repr(url)
    assert PASSWORD not in str(url)


def test_libpq_gets_every_host_and_port_back() -> None:
    pairs = dict(part.split("=", 1) for part in libpq_dsn(MULTI_HOST).split())

    assert pairs["host"] == "db1.example,db2.example"
    assert pairs["port"] == "5432,5433"
    assert pairs["dbname"] == "payouts"
    assert pairs["target_session_attrs"] == "read-write"


@pytest.mark.parametrize(
    ("given", "servers"),
    [
        ("postgresql://pm@db.example/pm", [("db.example", None)]),
        ("postgresql://pm@db.example:6543/pm", [("db.example", 6543)]),
        ("postgresql://pm@a,b:7/pm", [("a", None), ("b", 7)]),
        ("postgresql+psycopg2://pm@a:1,b:2,c:3/pm", [("a", 1), ("b", 2), ("c", 3)]),
        ("postgresql://pm@a:1,b:2", [("a", 1), ("b", 2)]),
    ],
)
def test_single_and_multi_host_urls_parse_to_their_servers(
    given: str, servers: list[tuple[str, int | None]]
) -> None:
    assert hosts(parse(given)) == servers


def test_settings_accept_the_multi_host_form_and_connect_with_it_whole() -> None:
    loaded = settings.load({"PM_DATABASE_URL": MULTI_HOST})

    url = loaded.require_database_url()
    assert hosts(url) == [("db1.example", 5432), ("db2.example", 5433)]
    assert url.password == PASSWORD
