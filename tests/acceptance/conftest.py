"""Fixtures for acceptance tests: a workspace on disk and the ``tact`` executable run as a process.

A :class:`Workspace` is a temporary directory holding a configuration file, a campaigns
directory, an SQLite database and one JSON-lines outbox per channel (the ``file`` adapter).
Commands run with the workspace as their working directory, a bounded timeout and an
environment cleared of any ``TACT_*`` variable the caller's shell may carry.
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
from pathlib import Path
from typing import Any, TypeVar

import pytest

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


def tact_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without ``TACT_*`` or terminal-width variables, plus ``extra``."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TACT_") and key not in ("COLUMNS", "LINES")
    }
    environment.update(extra or {})
    return environment


def config_text(root: Path, *, tick_interval: str = "1s") -> str:
    """A configuration with a SQLite database and ``file`` adapters, all inside ``root``."""
    return f"""\
campaigns_dir = "campaigns"

[database]
url = "sqlite:///{(root / "tact.db").as_posix()}"

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


@dataclass
class Workspace:
    """A directory with a config, campaigns, a database and outboxes; runs ``tact`` in it."""

    root: Path
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

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
        """The SQLite database file."""
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
        """Rows of a query against the workspace database, opened and closed around it."""
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            return connection.execute(query, parameters).fetchall()
        finally:
            connection.close()

    def copy_to(self, root: Path) -> Workspace:
        """A new workspace at ``root`` with this one's campaigns, database and outboxes."""
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.campaigns, root / "campaigns")
        if (self.root / "outbox").is_dir():
            shutil.copytree(self.root / "outbox", root / "outbox")
        for database_file in self.root.glob("tact.db*"):
            shutil.copy2(database_file, root / database_file.name)
        (root / "tact.toml").write_text(config_text(root), encoding="utf-8")
        return Workspace(root)


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


def make_workspace(root: Path, *, campaigns: Path | None = SHIPPED_CAMPAIGNS) -> Workspace:
    """A workspace at ``root``: a copy of ``campaigns`` (or an empty directory) and a config."""
    root.mkdir(parents=True, exist_ok=True)
    if campaigns is not None:
        shutil.copytree(campaigns, root / "campaigns")
    else:
        (root / "campaigns").mkdir()
    (root / "tact.toml").write_text(config_text(root), encoding="utf-8")
    return Workspace(root)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh workspace with a copy of the shipped campaigns and no database yet."""
    return make_workspace(tmp_path / "work")


@pytest.fixture
def bare_workspace(tmp_path: Path) -> Workspace:
    """A fresh workspace whose campaigns directory is empty."""
    return make_workspace(tmp_path / "work", campaigns=None)


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


@pytest.fixture(scope="session")
def walked_template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The README walkthrough, done once: example recipients and events imported, one tick.

    The example events get fixed timestamps (:func:`dated_example_events`). ``results``
    keeps each step's completed process (``recipients``, ``events``, ``tick``).
    Tests must not change it; they take a copy through the ``walked`` fixture.
    """
    template = make_workspace(tmp_path_factory.mktemp("walkthrough") / "work")
    template.results["recipients"] = template.tact("recipients", "import", EXAMPLE_RECIPIENTS)
    events = dated_example_events(template.root / "events.jsonl")
    template.results["events"] = template.tact("events", "import", events)
    template.results["tick"] = template.tact("tick", "--at", FIRST_TICK)
    for result in template.results.values():
        expect_success(result)
    return template


@pytest.fixture
def walked(walked_template: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the walkthrough's state, after the first tick."""
    return walked_template.copy_to(tmp_path / "walked")
