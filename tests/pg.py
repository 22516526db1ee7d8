"""Throwaway PostgreSQL databases for tests.

A test session points at a server with ``TACT_TEST_POSTGRES_DSN`` (``make test`` starts one
with ``scripts/pg-test-server.sh``). The session migrates one template database,
``tact_template_<pid>``; every test then gets its own ``CREATE DATABASE ... TEMPLATE`` copy,
dropped when the test ends, so tests never see each other's rows.
"""

from __future__ import annotations

import importlib
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL, make_url

DSN_VARIABLE = "TACT_TEST_POSTGRES_DSN"
DROP_ATTEMPTS = 50  # 10 s: an autovacuum worker on the database being dropped
"""The environment variable naming the test server, as a libpq URI or key=value string."""


def postgres_dsn_or_skip(environ: Mapping[str, str]) -> str:
    """Return the test server's DSN; without one, skip the test, or fail it under CI."""
    dsn = environ.get(DSN_VARIABLE, "").strip()
    if dsn:
        return dsn
    if environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{DSN_VARIABLE} is not set and CI=true: PostgreSQL tests must run in CI",
            pytrace=False,
        )
    pytest.skip(f"no PostgreSQL server: set {DSN_VARIABLE} or run make test")


def connect(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A psycopg connection (autocommit) to the database a SQLAlchemy URL names."""
    libpq_url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(libpq_url, autocommit=True)


def sqlalchemy_url(dsn: str, database: str) -> str:
    """Return a ``postgresql+psycopg://`` URL for ``database`` on the server ``dsn`` names."""
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    params.pop("dbname", None)
    host = params.pop("host", None)
    if host is not None and host.startswith("/"):
        # A unix socket directory does not fit in a URL's host part; psycopg reads it here.
        params["host"] = host
        host = None
    port = params.pop("port", None)
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=host,
        port=int(port) if port else None,
        database=database,
        query=params,
    )
    return url.render_as_string(hide_password=False)


def _migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema, once the store offers a way to."""
    try:
        store = importlib.import_module("scheduler.store")
    except ModuleNotFoundError as error:
        # Only the store itself being absent means "not written yet"; a module missing
        # inside the store is a bug and must surface.
        if error.name not in {"scheduler", "scheduler.store"}:
            raise
        return
    migrate_database = getattr(store, "migrate_database", None)
    if migrate_database is not None:
        migrate_database(url)


class PostgresTestDatabases:
    """Creates one migrated template database per session and hands out copies of it."""

    def __init__(self, dsn: str) -> None:
        """Use the server and credentials that ``dsn`` names."""
        self.dsn = dsn
        self.template_name = f"tact_template_{os.getpid()}"
        self._copy_numbers = itertools.count(1)

    def create_template(self) -> None:
        """Create the template database afresh and migrate it."""
        self._drop(self.template_name)
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template_name)))
        _migrate(sqlalchemy_url(self.dsn, self.template_name))
        self._disconnect_everyone_from(self.template_name)

    def drop_template(self) -> None:
        """Drop the template database."""
        self._drop(self.template_name)

    def database(self) -> AbstractContextManager[str]:
        """Create a copy of the template, yield its SQLAlchemy URL, and drop it afterwards."""
        return self._temporary(self.template_name)

    def copy_of(self, source: str) -> AbstractContextManager[str]:
        """Create a copy of the database ``source``, yield its SQLAlchemy URL, and drop it afterwards.

        Connections still open on ``source`` are ended first: a copy needs its source idle.
        """
        self._disconnect_everyone_from(source)
        return self._temporary(source)

    def empty_database(self) -> AbstractContextManager[str]:
        """Create a database with no schema, yield its SQLAlchemy URL, and drop it afterwards."""
        return self._temporary(None)

    @contextmanager
    def _temporary(self, template: str | None) -> Iterator[str]:
        """A new database (a copy of ``template``, or empty), its URL, then dropped."""
        name = f"tact_test_{os.getpid()}_{next(self._copy_numbers)}"
        self._drop(name)
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
        self._execute(create)
        try:
            yield sqlalchemy_url(self.dsn, name)
        finally:
            self._drop(name)

    def database_exists(self, name: str) -> bool:
        """Tell whether the server has a database called ``name``."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def _drop(self, name: str) -> None:
        # FORCE ends the test role's own sessions; an autovacuum worker runs as the server's
        # superuser and cannot be ended by it, but finishes within moments: try again.
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for attempt in range(DROP_ATTEMPTS):
            try:
                self._execute(statement)
                return
            except psycopg.errors.InsufficientPrivilege:
                if attempt == DROP_ATTEMPTS - 1:
                    raise
                time.sleep(0.2)

    def _disconnect_everyone_from(self, name: str) -> None:
        # A pooled connection left open by the migration would block CREATE DATABASE TEMPLATE.
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    def _execute(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(statement)
