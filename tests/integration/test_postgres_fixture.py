"""The database fixtures hand each test a working database of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine, make_url

from tests.pg import PostgresTestDatabases, postgres_dsn_or_skip, sqlalchemy_url


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the test's PostgreSQL database, disposed afterwards."""
    engine = sqlalchemy.create_engine(postgres_url)
    yield engine
    engine.dispose()


def test_missing_dsn_skips_outside_ci() -> None:
    """Without a DSN, PostgreSQL tests skip when not under CI."""
    with pytest.raises(pytest.skip.Exception, match="TACT_TEST_POSTGRES_DSN"):
        postgres_dsn_or_skip({"CI": "false"})


def test_missing_dsn_fails_under_ci() -> None:
    """Without a DSN, PostgreSQL tests fail under CI=true."""
    with pytest.raises(pytest.fail.Exception, match="TACT_TEST_POSTGRES_DSN"):
        postgres_dsn_or_skip({"CI": "true", "TACT_TEST_POSTGRES_DSN": "  "})


def test_dsn_from_the_environment_is_used() -> None:
    """A DSN in the environment is returned as it is."""
    dsn = "postgresql://tact@127.0.0.1:54329/tact"
    assert postgres_dsn_or_skip({"TACT_TEST_POSTGRES_DSN": dsn, "CI": "true"}) == dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://tact@127.0.0.1:54329/tact",
            "postgresql+psycopg://tact@127.0.0.1:54329/copy",
        ),
        (
            "host=db.internal port=5433 user=app password=s3cret dbname=app sslmode=require",
            "postgresql+psycopg://app:s3cret@db.internal:5433/copy?sslmode=require",
        ),
        (
            "postgresql:///tact?host=/run/postgresql&user=tact",
            "postgresql+psycopg://tact@/copy?host=%2Frun%2Fpostgresql",
        ),
    ],
    ids=["uri", "key-value", "unix-socket"],
)
def test_sqlalchemy_url_points_psycopg_at_the_named_database(dsn: str, expected: str) -> None:
    """The SQLAlchemy URL keeps the server and credentials and swaps in the database name."""
    assert sqlalchemy_url(dsn, "copy") == expected


@pytest.mark.postgres
def test_server_is_postgresql_15_or_newer(postgres_engine: Engine) -> None:
    """The test server runs PostgreSQL 15 or newer."""
    with postgres_engine.connect() as connection:
        version = connection.execute(sqlalchemy.text("SHOW server_version_num")).scalar_one()
    assert int(version) >= 150000


@pytest.mark.postgres
def test_each_test_gets_its_own_database(postgres_url: str, postgres_engine: Engine) -> None:
    """The URL names a per-test copy, not the server's own database."""
    with postgres_engine.connect() as connection:
        name = connection.execute(sqlalchemy.text("SELECT current_database()")).scalar_one()
    assert name == make_url(postgres_url).database
    assert name.startswith("tact_test_")


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", ["first", "second"])
def test_tables_from_another_test_are_absent(postgres_engine: Engine, attempt: str) -> None:
    """A table created by one test is absent from the next test's database."""
    assert not sqlalchemy.inspect(postgres_engine).has_table("fixture_probe")
    with postgres_engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE fixture_probe (attempt text)"))
        connection.execute(sqlalchemy.text("INSERT INTO fixture_probe VALUES (:attempt)"), {"attempt": attempt})
    assert sqlalchemy.inspect(postgres_engine).has_table("fixture_probe")


@pytest.mark.postgres
def test_a_database_is_dropped_after_use(postgres_databases: PostgresTestDatabases) -> None:
    """A copy of the template exists while in use and is gone afterwards."""
    with postgres_databases.database() as url:
        name = make_url(url).database
        assert name is not None
        assert postgres_databases.database_exists(name)
    assert not postgres_databases.database_exists(name)


def test_database_url_holds_rows(database_url: str) -> None:
    """Each store's URL reaches a database that keeps what is written to it."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE fixture_probe (value integer)"))
            connection.execute(sqlalchemy.text("INSERT INTO fixture_probe VALUES (42)"))
        with engine.connect() as connection:
            stored = connection.execute(sqlalchemy.text("SELECT value FROM fixture_probe")).scalar_one()
    finally:
        engine.dispose()
    assert stored == 42
