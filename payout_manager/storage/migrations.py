"""`payout-manager migrate`: Alembic, driven from code, with the migrations the package carries.

The repository keeps them in its top-level migrations/ folder; payout_manager/migrations links to
it, so a source checkout, an editable install and the wheel (which holds a copy) all find them at
the same place beside the package.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from payout_manager.settings import SettingsError
from payout_manager.storage.urls import DatabaseUrl, parse

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Where env.py finds the URL it connects with.
DATABASE_URL_ATTRIBUTE = "database_url"


def alembic_config(database_url: DatabaseUrl) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise SettingsError(f"the migrations are missing from {MIGRATIONS_DIR}: reinstall payout-manager")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The URL object itself, not sqlalchemy.url: Alembic's ConfigParser-based options would hold
    # the password as text (and read '%' in it as interpolation).
    config.attributes[DATABASE_URL_ATTRIBUTE] = parse(database_url)
    return config


def upgrade(database_url: DatabaseUrl) -> None:
    """Brings the schema to the newest revision; running it again changes nothing."""
    command.upgrade(alembic_config(database_url), "head")
