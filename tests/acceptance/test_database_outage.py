"""The daemon rides out a PostgreSQL outage: it backs off instead of crashing, /readyz says
503 while the database is gone, and once it is back the daemon reconnects and sends again."""

from __future__ import annotations

import os

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.conftest import Daemon, Workspace, expect_success
from tests.acceptance.test_api_daemon import free_port

RECEIPT = """
id = "receipt"
kind = "transactional"
[trigger]
event = "order_placed"
[[steps]]
id = "confirm"
channel = "email"
subject = "Your order"
text = "Thanks."
"""


def readiness(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return None


def allow_connections(database: str, allowed: bool) -> None:
    """Open or close ``database`` to new connections; closing also ends the open ones."""
    with psycopg.connect(os.environ["TACT_TEST_POSTGRES_DSN"], autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_daemon_survives_a_database_outage(bare_workspace: Workspace, postgres_url: str) -> None:
    """Connections refused and dropped: no crash, /readyz 503 and backoff; then it resumes."""
    workspace = bare_workspace
    (workspace.campaigns / "receipt.toml").write_text(RECEIPT)
    port = free_port()
    config = workspace.config.read_text()
    config = config.replace(f'url = "sqlite:///{(workspace.root / "tact.db").as_posix()}"', f'url = "{postgres_url}"')
    config = config.replace("[api]\nenabled = false\n", f'[api]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n')
    workspace.config.write_text(config)
    (workspace.root / "people.csv").write_text("id,email\na1,a1@example.com\na2,a2@example.com\n")
    expect_success(workspace.tact("recipients", "import", workspace.root / "people.csv"))
    database = make_url(postgres_url).database
    assert database is not None
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(workspace)
    try:
        daemon.wait_for(lambda: readiness(base) == 200, what="the daemon to be ready")
        allow_connections(database, False)
        try:
            daemon.wait_for(lambda: readiness(base) == 503, what="/readyz to report the outage")
            daemon.wait_for(lambda: len(daemon.logged("database_unavailable")) >= 2, what="backing off")
            assert daemon.process.poll() is None
            waits = [entry["retry_in"] for entry in daemon.logged("database_unavailable")]
            assert waits == sorted(waits) and waits[0] < waits[-1]
        finally:
            allow_connections(database, True)
        daemon.wait_for(lambda: readiness(base) == 200, what="/readyz to recover", timeout=60)
        expect_success(workspace.tact("enroll", "receipt", "a1"))
        daemon.wait_for(
            lambda: [m for m in workspace.outbox("email") if m["recipient_id"] == "a1"], what="a send after the outage"
        )
        daemon.wait_for(lambda: daemon.logged("ticks_resumed"), what="the resumed ticks to be logged")
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()


def postgres_workspace(workspace: Workspace, postgres_url: str) -> str:
    """Point the workspace at ``postgres_url`` with the receipt campaign and API off; return
    the database's name."""
    (workspace.campaigns / "receipt.toml").write_text(RECEIPT)
    config = workspace.config.read_text()
    config = config.replace(f'url = "sqlite:///{(workspace.root / "tact.db").as_posix()}"', f'url = "{postgres_url}"')
    workspace.config.write_text(config)
    database = make_url(postgres_url).database
    assert database is not None
    return database


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_daemon_started_while_the_database_refuses_connections_waits_for_it(
    bare_workspace: Workspace, postgres_url: str
) -> None:
    """Started while the database refuses connections, the daemon backs off, then starts and sends."""
    workspace = bare_workspace
    database = postgres_workspace(workspace, postgres_url)
    allow_connections(database, False)
    daemon = Daemon(workspace)
    try:
        try:
            daemon.wait_for(lambda: len(daemon.logged("database_unavailable")) >= 3, what="waiting for the database")
            assert daemon.process.poll() is None
            waits = [entry["retry_in"] for entry in daemon.logged("database_unavailable")]
            assert waits == sorted(waits) and waits[0] < waits[-1]
            assert not daemon.logged("daemon_started")
        finally:
            allow_connections(database, True)
        daemon.wait_for(lambda: daemon.logged("daemon_started"), what="the start once the database answers", timeout=60)
        (workspace.root / "people.csv").write_text("id,email\na1,a1@example.com\n")
        expect_success(workspace.tact("recipients", "import", workspace.root / "people.csv"))
        expect_success(workspace.tact("enroll", "receipt", "a1"))
        daemon.wait_for(lambda: workspace.outbox("email"), what="a send")
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.stderr()
    finally:
        daemon.kill_if_running()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_while_waiting_for_the_database_exits_0(bare_workspace: Workspace, postgres_url: str) -> None:
    """SIGTERM to a daemon still waiting for its database ends it at once with status 0."""
    workspace = bare_workspace
    database = postgres_workspace(workspace, postgres_url)
    allow_connections(database, False)
    daemon = Daemon(workspace)
    try:
        daemon.wait_for(lambda: daemon.logged("database_unavailable"), what="waiting for the database")
        assert daemon.stop() == 0
        assert daemon.logged("stopped_waiting_for_database")
    finally:
        allow_connections(database, True)
        daemon.kill_if_running()


def test_a_command_run_while_the_database_refuses_connections_says_so(
    bare_workspace: Workspace, postgres_url: str
) -> None:
    """A one-off command against a closed database exits 2 with one error line, no traceback."""
    workspace = bare_workspace
    database = postgres_workspace(workspace, postgres_url)
    allow_connections(database, False)
    try:
        result = workspace.tact("tick")
    finally:
        allow_connections(database, True)
    assert result.returncode == 2, result.stderr
    assert "error: cannot use the database" in result.stderr
    assert database in result.stderr and "Traceback" not in result.stderr
