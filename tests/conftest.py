"""Fixtures shared by every test: database URLs for SQLite and PostgreSQL.

- ``sqlite_url``: a fresh SQLite file in the test's ``tmp_path`` (the store migrates it).
- ``postgres_url``: a fresh, migrated PostgreSQL database of its own (see ``tests/pg.py``);
  skipped without ``TACT_TEST_POSTGRES_DSN``, failed instead when ``CI=true``.
- ``database_url``: runs the test once per store, ids ``sqlite`` and ``postgresql``.

Tests that use ``postgres_url`` or the ``postgresql`` case of ``database_url`` carry the
``postgres`` marker, so ``pytest -m "not postgres"`` leaves them out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pg import PostgresTestDatabases, postgres_dsn_or_skip


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that asks for ``postgres_url`` with ``postgres``."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresTestDatabases]:
    """The session's PostgreSQL template database, migrated once."""
    databases = PostgresTestDatabases(postgres_dsn_or_skip(os.environ))
    try:
        databases.create_template()
    except psycopg.OperationalError as error:
        pytest.fail(f"cannot prepare the PostgreSQL template database: {error}", pytrace=False)
    yield databases
    databases.drop_template()


@pytest.fixture
def postgres_url(postgres_databases: PostgresTestDatabases) -> Iterator[str]:
    """A SQLAlchemy URL (``postgresql+psycopg://``) of a new database copied from the template."""
    with postgres_databases.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLAlchemy URL of a SQLite file database that does not exist yet."""
    return f"sqlite:///{tmp_path / 'tact.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A SQLAlchemy URL of a fresh database of the test's own, once per store."""
    fixture_name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture_name)
    return url
