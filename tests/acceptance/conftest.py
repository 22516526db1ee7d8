"""Fixtures for acceptance tests: a workspace on disk and the ``tact`` executable run as a process.

A :class:`Workspace` is a temporary directory holding a configuration file, a campaigns
directory, one JSON-lines outbox per channel (the ``file`` adapter) and a database: a SQLite
file in the directory, or a PostgreSQL database of its own (a migrated copy, see
``tests/pg.py``). Commands run with the workspace as their working directory, a bounded
timeout and an environment cleared of any ``TACT_*`` variable the caller's shell may carry.

Every test that uses ``workspace``, ``bare_workspace``, ``walked`` or ``walked_template`` runs
once per store, ids ``sqlite`` and ``postgresql``; the ``postgresql`` case carries the
``postgres`` marker, so ``pytest -m "not postgres"`` never reaches the server. A test that
has no use for a second store (nothing it checks touches the database, or it is about SQLite
itself) takes the :data:`sqlite_only` mark. A test that asks for ``postgres_url`` itself keeps
a single, SQLite-configured workspace and points it at that database on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from psycopg.types.string import TextLoader
from sqlalchemy.engine import make_url

from tests.pg import PostgresTestDatabases, connect

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CAMPAIGNS = REPO / "campaigns"
EXAMPLE_RECIPIENTS = REPO / "examples" / "recipients.csv"
EXAMPLE_EVENTS = REPO / "examples" / "events.jsonl"
TACT = Path(sys.executable).parent / "tact"
COMMAND_TIMEOUT = 60.0

# The instant of the walkthrough's first tick: a Monday, inside every example's send window.
FIRST_TICK = "2026-11-23T15:00:00Z"
# When each example event happened, for example events that leave ``at`` out (they would
# otherwise happen at import time, and the walkthrough would depend on the wall clock).
EXAMPLE_EVENT_TIMES = {
    "evt-0001": "2026-11-23T07:42:10Z",
    "evt-0002": "2026-11-23T08:05:00Z",
    "evt-0003": "2026-11-23T08:01:30Z",
    "evt-0004": "2026-11-23T06:15:00Z",
}
DEFAULT_EXAMPLE_EVENT_TIME = "2026-11-23T08:00:00Z"

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
sqlite_only = pytest.mark.parametrize("store", [pytest.param("sqlite", id="sqlite")], indirect=True)
"""Run a workspace test on SQLite alone (write why beside it)."""

# How SQLAlchemy writes a UTC timestamp into SQLite; PostgreSQL's are read back in this form.
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def tact_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without ``TACT_*`` or terminal-width variables, plus ``extra``."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TACT_") and key not in ("COLUMNS", "LINES")
    }
    environment.update(extra or {})
    return environment


def sqlite_file_url(root: Path) -> str:
    """The SQLAlchemy URL of the SQLite file ``tact.db`` in ``root``."""
    return f"sqlite:///{(root / 'tact.db').as_posix()}"


def config_text(root: Path, *, database_url: str | None = None, tick_interval: str = "1s") -> str:
    """A configuration with ``file`` adapters inside ``root`` and ``database_url`` (by default
    the SQLite file ``root/tact.db``)."""
    return f"""\
campaigns_dir = "campaigns"

[database]
url = "{database_url or sqlite_file_url(root)}"

[engine]
tick_interval = "{tick_interval}"

[api]
enabled = false

[channels.email]
adapter = "file"
path = "{(root / "outbox" / "email.jsonl").as_posix()}"

[channels.sms]
adapter = "file"
path = "{(root / "outbox" / "sms.jsonl").as_posix()}"
"""


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (a line still being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, detail: Callable[[], str] = str) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g}s waiting for {what}\n{detail()}")
        time.sleep(0.2)


def dated_example_events(path: Path) -> Path:
    """Write the example events to ``path``, each with a fixed ``at`` before the first tick."""
    lines = []
    for line in EXAMPLE_EVENTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record.setdefault("at", EXAMPLE_EVENT_TIMES.get(record["id"], DEFAULT_EXAMPLE_EVENT_TIME))
            lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def expect_success(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Fail with the command's output unless it exited 0."""
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def _postgres_rows(database_url: str, query: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``query`` (``?`` placeholders) on PostgreSQL, JSON and timestamps as SQLite gives them."""
    with connect(database_url) as connection:
        for json_type in ("json", "jsonb"):
            connection.adapters.register_loader(json_type, TextLoader)
        if parameters:
            rows = connection.execute(query.replace("%", "%%").replace("?", "%s"), tuple(parameters)).fetchall()
        else:
            rows = connection.execute(query).fetchall()
    return [tuple(_as_sqlite_value(value) for value in row) for row in rows]


def _as_sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).strftime(SQLITE_TIMESTAMP_FORMAT)
    return value


@dataclass
class Workspace:
    """A directory with a config, campaigns, a database and outboxes; runs ``tact`` in it."""

    root: Path
    database_url: str
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @property
    def store(self) -> str:
        """``sqlite`` or ``postgresql``: the kind of database the configuration names."""
        return make_url(self.database_url).get_backend_name()

    @property
    def config(self) -> Path:
        """The configuration file."""
        return self.root / "tact.toml"

    @property
    def campaigns(self) -> Path:
        """The campaigns directory the configuration names."""
        return self.root / "campaigns"

    @property
    def database(self) -> Path:
        """The SQLite database file (a PostgreSQL workspace has none)."""
        assert self.store == "sqlite", f"a {self.store} workspace has no database file"
        return self.root / "tact.db"

    def outbox_path(self, channel: str = "email") -> Path:
        """The ``file`` adapter's outbox for ``channel``."""
        return self.root / "outbox" / f"{channel}.jsonl"

    def outbox(self, channel: str = "email") -> list[dict[str, Any]]:
        """The messages sent so far on ``channel``."""
        return read_json_lines(self.outbox_path(channel))

    def command(self, *args: str | Path) -> list[str]:
        """The argument vector of ``tact ARGS --config CONFIG``."""
        return [str(TACT), *(str(arg) for arg in args), "--config", str(self.config)]

    def tact(
        self,
        *args: str | Path,
        env: Mapping[str, str] | None = None,
        with_config: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tact ARGS`` (with ``--config`` unless told otherwise) and wait for it."""
        argv = self.command(*args) if with_config else [str(TACT), *(str(arg) for arg in args)]
        return subprocess.run(
            argv,
            cwd=self.root,
            env=tact_environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(
        self, *args: str | Path, env: Mapping[str, str] | None = None, with_config: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tact ARGS`` like :meth:`tact` and fail the test unless it exits 0."""
        return expect_success(self.tact(*args, env=env, with_config=with_config))

    def sql(self, query: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query (``?`` placeholders) against the workspace database, opened and closed
        around it. JSON and timestamps come back as SQLite gives them on either store: JSON as
        its text, timestamps as UTC text (``2026-11-23 15:00:00.000000``)."""
        if self.store == "postgresql":
            return _postgres_rows(self.database_url, query, parameters)
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            return connection.execute(query, parameters).fetchall()
        finally:
            connection.close()

    def copy_to(self, root: Path, *, database_url: str | None = None) -> Workspace:
        """A new workspace at ``root`` with this one's campaigns, outboxes and database.

        A SQLite workspace's files are copied along; a PostgreSQL one needs ``database_url``,
        a copy of its database the caller made.
        """
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.campaigns, root / "campaigns")
        if (self.root / "outbox").is_dir():
            shutil.copytree(self.root / "outbox", root / "outbox")
        if self.store == "sqlite":
            assert database_url is None, "a SQLite workspace copies its own database file"
            for database_file in self.root.glob("tact.db*"):
                shutil.copy2(database_file, root / database_file.name)
            database_url = sqlite_file_url(root)
        assert database_url is not None, "a PostgreSQL workspace needs a copy of its database"
        (root / "tact.toml").write_text(config_text(root, database_url=database_url), encoding="utf-8")
        return Workspace(root, database_url)


class Daemon:
    """A ``tact run`` process whose stdout and stderr go to files in its workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.stdout_path = workspace.root / "daemon.stdout"
        self.stderr_path = workspace.root / "daemon.stderr"
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                workspace.command("run"),
                cwd=workspace.root,
                env=tact_environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )

    def stderr(self) -> str:
        """Everything the daemon logged so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The daemon's complete log entries (JSON lines) whose ``event`` is ``event``."""
        return [e for e in read_json_lines(self.stderr_path) if e.get("event") == event]

    def describe(self) -> str:
        """The daemon's state and log, for failure messages."""
        return f"daemon exit status: {self.process.poll()}\ndaemon stderr:\n{self.stderr()}"

    def wait_for(self, probe: Callable[[], T | None], *, what: str, timeout: float = 20) -> T:
        """Poll ``probe`` (bounded); on failure show the daemon's log."""
        return wait_for(probe, timeout=timeout, what=what, detail=self.describe)

    def stop(self, timeout: float = 15) -> int:
        """Send SIGTERM and wait (bounded) for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill_if_running(self) -> None:
        """Kill the process if a failed test left it running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def make_workspace(
    root: Path, *, campaigns: Path | None = SHIPPED_CAMPAIGNS, database_url: str | None = None
) -> Workspace:
    """A workspace at ``root``: a copy of ``campaigns`` (or an empty directory) and a config
    naming ``database_url`` (by default the SQLite file ``root/tact.db``, not created yet)."""
    root.mkdir(parents=True, exist_ok=True)
    if campaigns is not None:
        shutil.copytree(campaigns, root / "campaigns")
    else:
        (root / "campaigns").mkdir()
    database_url = database_url or sqlite_file_url(root)
    (root / "tact.toml").write_text(config_text(root, database_url=database_url), encoding="utf-8")
    return Workspace(root, database_url)


def _parametrizes_store(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "store" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a store once per store, unless it chooses its own."""
    if "store" not in metafunc.fixturenames or "postgres_url" in metafunc.fixturenames:
        return
    if not _parametrizes_store(metafunc):
        metafunc.parametrize("store", STORES, indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: where the test's workspace keeps its data (see the module docstring)."""
    chosen: str = getattr(request, "param", "sqlite")
    return chosen


@pytest.fixture
def workspace_database_url(store: str, request: pytest.FixtureRequest) -> str | None:
    """A migrated PostgreSQL database of the test's own, or None for the workspace's SQLite file."""
    if store == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def workspace(tmp_path: Path, workspace_database_url: str | None) -> Workspace:
    """A fresh workspace with a copy of the shipped campaigns and no data yet."""
    return make_workspace(tmp_path / "work", database_url=workspace_database_url)


@pytest.fixture
def bare_workspace(tmp_path: Path, workspace_database_url: str | None) -> Workspace:
    """A fresh workspace whose campaigns directory is empty."""
    return make_workspace(tmp_path / "work", campaigns=None, database_url=workspace_database_url)


@pytest.fixture
def unmigrated_workspace(tmp_path: Path, store: str, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    """A workspace whose database has no schema: no SQLite file yet, or an empty PostgreSQL database."""
    if store == "sqlite":
        yield make_workspace(tmp_path / "work")
        return
    postgres_databases: PostgresTestDatabases = request.getfixturevalue("postgres_databases")
    with postgres_databases.empty_database() as url:
        yield make_workspace(tmp_path / "work", database_url=url)


@pytest.fixture
def start_daemon() -> Iterator[Callable[[Workspace], Daemon]]:
    """Start ``tact run`` in a workspace; any daemon still running at teardown is killed."""
    started: list[Daemon] = []

    def start(workspace: Workspace) -> Daemon:
        daemon = Daemon(workspace)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill_if_running()


def walk_through(template: Workspace) -> Workspace:
    """Do the README walkthrough in ``template``: import the example recipients and events, tick once.

    The example events get fixed timestamps (:func:`dated_example_events`). ``results``
    keeps each step's completed process (``recipients``, ``events``, ``tick``).
    """
    template.results["recipients"] = template.tact("recipients", "import", EXAMPLE_RECIPIENTS)
    events = dated_example_events(template.root / "events.jsonl")
    template.results["events"] = template.tact("events", "import", events)
    template.results["tick"] = template.tact("tick", "--at", FIRST_TICK)
    for result in template.results.values():
        expect_success(result)
    return template


@pytest.fixture(scope="session")
def sqlite_walked_template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The walkthrough on SQLite, done once per session (see :func:`walk_through`)."""
    return walk_through(make_workspace(tmp_path_factory.mktemp("walkthrough") / "work"))


@pytest.fixture(scope="session")
def postgresql_walked_template(
    tmp_path_factory: pytest.TempPathFactory, postgres_databases: PostgresTestDatabases
) -> Iterator[Workspace]:
    """The walkthrough on a PostgreSQL database of its own, done once per session (only when asked)."""
    with postgres_databases.database() as url:
        root = tmp_path_factory.mktemp("walkthrough-postgresql") / "work"
        yield walk_through(make_workspace(root, database_url=url))


@pytest.fixture
def walked_template(store: str, request: pytest.FixtureRequest) -> Workspace:
    """The session's walkthrough on the test's store; ``results`` holds each step's process.

    Tests must not change it; they take a copy through the ``walked`` fixture.
    """
    template: Workspace = request.getfixturevalue(f"{store}_walked_template")
    return template


@pytest.fixture
def walked(walked_template: Workspace, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    """A private copy of the walkthrough's state, after the first tick."""
    if walked_template.store == "sqlite":
        yield walked_template.copy_to(tmp_path / "walked")
        return
    postgres_databases: PostgresTestDatabases = request.getfixturevalue("postgres_databases")
    source = make_url(walked_template.database_url).database
    assert source is not None
    with postgres_databases.copy_of(source) as url:
        yield walked_template.copy_to(tmp_path / "walked", database_url=url)
