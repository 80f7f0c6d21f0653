"""PostgreSQL URLs as PM_DATABASE_URL gives them, libpq's multi-host form included (SPEC 4).

libpq lists several servers in the authority, `postgresql://user@host1:5432,host2:5432/db`, and with
`target_session_attrs=read-write` connects to whichever of them is the primary now. SQLAlchemy
cannot parse that authority; it takes the same list as repeated `host` query parameters, which its
psycopg2 dialect hands back to libpq as `host=host1,host2 port=5432,5432`. Every URL the service
connects with goes through `parse`, so both forms mean the same servers everywhere.
"""

from __future__ import annotations

from urllib.parse import quote

from psycopg2.extensions import make_dsn
from sqlalchemy.engine import URL, make_url

# What the functions that connect take: PM_DATABASE_URL as text, or Settings.require_database_url().
DatabaseUrl = str | URL


def parse(value: DatabaseUrl) -> URL:
    """The URL as SQLAlchemy's object; a multi-host authority becomes `host` query parameters.

    Raises what `make_url` raises for a malformed URL (ArgumentError, ValueError).
    """
    if isinstance(value, URL):
        return value
    scheme, separator, rest = value.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if not separator or "," not in hosts:
        return make_url(value)
    path, question, query = tail.partition("?")
    listed = "&".join(f"host={quote(host, safe=':[]')}" for host in hosts.split(","))
    return make_url(
        f"{scheme}://{userinfo}{at}{path or '/'}?{listed}{'&' + query if question and query else ''}"
    )


def hosts(url: URL) -> list[tuple[str, int | None]]:
    """Every server the URL names, in order, as (host, port); port None: libpq's default.

    Raises ValueError for a port that is not a number. (SQLAlchemy's dialect cannot hand an IPv6
    address of a multi-host list to libpq; give such servers by name.)
    """
    listed = url.query.get("host")
    if listed is None:
        return [(url.host or "", url.port)]
    found: list[tuple[str, int | None]] = []
    for entry in (listed,) if isinstance(listed, str) else listed:
        host, colon, port = entry.rpartition(":")
        found.append((host, int(port)) if colon else (entry, None))
    return found


def libpq_dsn(value: DatabaseUrl) -> str:
    """The URL as a libpq connection string for psycopg2.connect, password included, every host kept."""
    url = parse(value)
    servers = hosts(url)
    given = {
        "host": ",".join(host for host, _ in servers),
        "port": ",".join("" if port is None else str(port) for _, port in servers),
        "dbname": url.database,
        "user": url.username,
        "password": url.password,
        **{name: option for name, option in url.query.items() if name != "host" and isinstance(option, str)},
    }
    return make_dsn(**{name: option for name, option in given.items() if option})
