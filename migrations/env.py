"""Alembic environment: the schema is payout_manager.storage.tables.metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from payout_manager.storage.database import sqlalchemy_url
from payout_manager.storage.migrations import DATABASE_URL_ATTRIBUTE
from payout_manager.storage.tables import metadata

# Two `migrate` runs at once (say, two replicas starting) take turns instead of racing.
_MIGRATION_LOCK = 7_140_001


def run_migrations_online() -> None:
    url = context.config.attributes[DATABASE_URL_ATTRIBUTE]
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


run_migrations_online()
