"""Schema revisions at start-up: a current database is left alone, an old one is upgraded
(``auto``) or refused (``check``), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from scheduler.config import DatabaseSettings
from scheduler.errors import SchemaOutOfDate
from scheduler.store import SCHEMA_HEAD, Store, _alembic_config, create_db_engine, current_revision, head_revision


def _at_revision(url: str, revision: str) -> None:
    """Bring the database at ``url`` to ``revision``: up from nothing, down from the head."""
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        current = current_revision(engine)
        with engine.begin() as connection:
            config = _alembic_config(connection)
            if current is None:
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    finally:
        engine.dispose()


def _revision_of(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_the_schema_head_constant_names_the_newest_migration() -> None:
    """SCHEMA_HEAD, which start-up compares against, is the migration scripts' head."""
    assert head_revision() == SCHEMA_HEAD


def test_a_fresh_database_is_created_at_the_head_in_auto_mode(database_url: str) -> None:
    """Preparing a store in auto mode leaves the database at the newest revision."""
    store = Store(DatabaseSettings(url=database_url, migrate="auto"))
    try:
        store.prepare()
    finally:
        store.close()
    assert _revision_of(database_url) == SCHEMA_HEAD


def test_an_old_schema_is_upgraded_in_auto_mode(database_url: str) -> None:
    """A database at revision 0002 is brought to the head when the store prepares in auto mode."""
    _at_revision(database_url, "0002")
    assert _revision_of(database_url) == "0002"
    store = Store(DatabaseSettings(url=database_url, migrate="auto"))
    try:
        store.prepare()
    finally:
        store.close()
    assert _revision_of(database_url) == SCHEMA_HEAD


def test_an_old_schema_is_refused_in_check_mode(database_url: str) -> None:
    """In check mode, a database at revision 0002 stops the start with SchemaOutOfDate naming both revisions."""
    _at_revision(database_url, "0002")
    store = Store(DatabaseSettings(url=database_url, migrate="check"))
    try:
        with pytest.raises(SchemaOutOfDate) as raised:
            store.prepare()
    finally:
        store.close()
    assert (raised.value.current, raised.value.head) == ("0002", SCHEMA_HEAD)
    assert "tact db upgrade" in str(raised.value)


def test_a_database_without_a_schema_is_refused_in_check_mode(sqlite_url: str) -> None:
    """In check mode, a database with no tables is refused with current revision none."""
    store = Store(DatabaseSettings(url=sqlite_url, migrate="check"))
    try:
        with pytest.raises(SchemaOutOfDate) as raised:
            store.prepare()
    finally:
        store.close()
    assert raised.value.current is None
    assert "revision none" in str(raised.value)
