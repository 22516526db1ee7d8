"""Fixtures for the HTTP API tests: an engine on a real database (SQLite and PostgreSQL), the
app served by a real uvicorn server on 127.0.0.1 in a background thread, and httpx clients.

- ``campaigns_dir``: two campaigns, ``welcome`` (marketing, ``policy = "always"``: an email on
  ``signed_up``, an SMS a day later) and ``receipt`` (transactional, one email on
  ``order_placed``).
- ``make_engine(**overrides)``: an engine with memory adapters, quiet hours, caps and holdout off,
  and the API token ``crm = "secret-token"`` unless overridden.
- ``serve(engine, state=None)``: the engine's app on a free port; returns the running server.
- ``client`` / ``anonymous``: httpx clients of the default server, with and without the token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from scheduler import Engine
from scheduler.api import ApiState, create_app

TOKEN = "secret-token"
STARTUP_LIMIT_SECONDS = 10.0

WELCOME = """
id = "welcome"
name = "Welcome"
kind = "marketing"
policy = "always"
[trigger]
event = "signed_up"
[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello"
text = "Hello {{ recipient.id }}. Unsubscribe: {{ unsubscribe_url }}"
value = 0.9
[[steps]]
id = "nudge"
after = "1d"
channel = "sms"
text = "A nudge"
value = 0.5
"""

RECEIPT = """
id = "receipt"
name = "Receipt"
kind = "transactional"
[trigger]
event = "order_placed"
[[steps]]
id = "confirmation"
after = "0m"
channel = "email"
subject = "Your order"
text = "Thank you"
value = 1.0
"""


class LiveServer:
    """A uvicorn server running an app in a thread of its own, with its own event loop."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-test-server", daemon=True)
        self.base_url = ""

    def start(self) -> None:
        """Start serving and wait until the socket listens."""
        self.thread.start()
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API test server stopped before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API test server did not start within {STARTUP_LIMIT_SECONDS:g} s")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_LIMIT_SECONDS)


@pytest.fixture
def campaigns_dir(tmp_path: Path) -> Path:
    """A campaigns directory with the ``welcome`` and ``receipt`` campaigns."""
    directory = tmp_path / "campaigns"
    directory.mkdir()
    (directory / "welcome.toml").write_text(WELCOME)
    (directory / "receipt.toml").write_text(RECEIPT)
    return directory


@pytest.fixture
def make_engine(database_url: str, campaigns_dir: Path) -> Iterator[Callable[..., Engine]]:
    """Build engines on the test's database; every one is closed after the test."""
    engines: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        settings: dict[str, Any] = {
            "campaigns_dir": str(campaigns_dir),
            "api": {"tokens": {"crm": TOKEN}},
            "attention": {"holdout": 0.0},
            "quiet_hours": {"enabled": False},
            "caps": {"enabled": False},
            **overrides,
        }
        engine = Engine.from_config(
            None, database_url=database_url, channels={"email": "memory", "sms": "memory"}, **settings
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    """The default engine, with the ``crm`` token."""
    return make_engine()


@contextmanager
def served(engine: Engine) -> Iterator[httpx.Client]:
    """The engine's app served on 127.0.0.1 for the block, and a client of it (no redirects)."""
    server = LiveServer(create_app(engine))
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, follow_redirects=False) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """Serve an engine's app on 127.0.0.1; every server is stopped after the test."""
    servers: list[LiveServer] = []

    def start(engine: Engine, state: ApiState | None = None) -> LiveServer:
        server = LiveServer(create_app(engine, state=state))
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api(engine: Engine, serve: Callable[..., LiveServer]) -> LiveServer:
    """The default engine's API, running."""
    return serve(engine)


@pytest.fixture
def client(api: LiveServer) -> Iterator[httpx.Client]:
    """A client of the running API presenting the ``crm`` token."""
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


@pytest.fixture
def anonymous(api: LiveServer) -> Iterator[httpx.Client]:
    """A client of the running API without credentials."""
    with httpx.Client(base_url=api.base_url) as http:
        yield http
