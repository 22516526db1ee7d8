"""Fixtures for the chaos tests: a recording SMTP server, replicas that never outlive a test,
and a way to print counts that pytest's output capture does not hide."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Launcher
from tests.contract.smtp_server import SmtpTestServer


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A plain SMTP server on 127.0.0.1 that records every message it accepts."""
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Makes replicas whose configs and logs live in the test's directory; kills them at the end."""
    directory = tmp_path / "replicas"
    directory.mkdir()
    made = Launcher(directory)
    try:
        yield made
    finally:
        made.ensure_gone()


@pytest.fixture
def show(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a line to the terminal even when pytest captures output."""

    def print_line(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}", flush=True)

    return print_line
