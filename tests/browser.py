"""Open a local HTML file in headless Chromium and report what the page did.

:func:`open_page` starts a throwaway Chromium, drives it over the Chrome DevTools Protocol
(aiohttp's websocket client), loads the file, waits for the load event and a quiet moment,
and returns a :class:`PageReport`: console errors, network requests, evaluated expressions
and, on request, a PNG screenshot. :func:`require_chromium` skips a test when no browser is
installed, or fails it under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--remote-debugging-port=0",
)
SETTLE_QUIET = 0.5
SETTLE_LIMIT = 5.0
SHUTDOWN_GRACE = 5.0
NO_EXPRESSIONS: Mapping[str, str] = MappingProxyType({})


class BrowserError(RuntimeError):
    """Chromium did not start, answered a DevTools call with an error, or ran out of time."""


@dataclass(frozen=True)
class PageReport:
    """What a page did while it loaded and settled."""

    console_errors: list[str]
    requests: list[str]
    values: dict[str, Any]
    screenshot: bytes | None


def chromium_path() -> str | None:
    """The first Chromium-like browser on ``PATH``, or None."""
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return None


def require_chromium() -> str:
    """Chromium's path; without one, skip the test, or fail it when ``CI=true``."""
    path = chromium_path()
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("no chromium on PATH and CI=true: browser tests must run in CI", pytrace=False)
    pytest.skip("no chromium on PATH: install Debian's chromium package to run browser tests")


def open_page(
    path: Path,
    *,
    evaluate: Mapping[str, str] = NO_EXPRESSIONS,
    screenshot: bool = False,
    width: int = 1280,
    height: int = 2400,
    timeout: float = 60.0,
) -> PageReport:
    """Load ``path`` in a fresh headless Chromium, evaluate ``evaluate``'s expressions, report."""
    browser = require_chromium()
    with tempfile.TemporaryDirectory(prefix="tact-chromium-", ignore_cleanup_errors=True) as workdir:
        profile = Path(workdir) / "profile"
        log_path = Path(workdir) / "chromium.log"
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        try:
            session = _PageSession(process, profile, log_path, path.resolve().as_uri())
            return asyncio.run(session.run(evaluate, screenshot, timeout))
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for Chromium to exit, then end its whole process group if it has not."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(SHUTDOWN_GRACE)
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(SHUTDOWN_GRACE)
            return


class _PageSession:
    """One DevTools connection to the browser, attached (flattened) to its single page."""

    def __init__(self, process: subprocess.Popen[bytes], profile: Path, log_path: Path, page_url: str) -> None:
        self._process = process
        self._profile = profile
        self._log_path = log_path
        self._page_url = page_url
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._page_events: list[dict[str, Any]] = []
        self._loaded = asyncio.Event()
        self._session_id: str | None = None

    async def run(self, evaluate: Mapping[str, str], screenshot: bool, timeout: float) -> PageReport:
        """Drive the browser through the whole visit within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._visit(evaluate, screenshot)
        except TimeoutError:
            raise BrowserError(f"{self._page_url} did not load and settle within {timeout}s") from None

    async def _visit(self, evaluate: Mapping[str, str], screenshot: bool) -> PageReport:
        port = await self._devtools_port()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/version") as response:
                browser_socket_url = (await response.json())["webSocketDebuggerUrl"]
            async with http.ws_connect(browser_socket_url, max_msg_size=0) as socket:
                self._socket = socket
                reader = asyncio.create_task(self._read(socket))
                try:
                    return await self._inspect(evaluate, screenshot)
                finally:
                    with contextlib.suppress(BrowserError, aiohttp.ClientError, ConnectionError):
                        await asyncio.wait_for(self._call("Browser.close", session=False), SHUTDOWN_GRACE)
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader

    async def _inspect(self, evaluate: Mapping[str, str], screenshot: bool) -> PageReport:
        targets = (await self._call("Target.getTargets", session=False))["targetInfos"]
        page_id = next(target["targetId"] for target in targets if target["type"] == "page")
        attached = await self._call("Target.attachToTarget", {"targetId": page_id, "flatten": True}, session=False)
        self._session_id = attached["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            await self._call(f"{domain}.enable")
        self._loaded.clear()
        navigation = await self._call("Page.navigate", {"url": self._page_url})
        if navigation.get("errorText"):
            raise BrowserError(f"cannot open {self._page_url}: {navigation['errorText']}")
        await self._loaded.wait()
        loop = asyncio.get_running_loop()
        settle_deadline, seen = loop.time() + SETTLE_LIMIT, -1
        while len(self._page_events) != seen and loop.time() < settle_deadline:
            seen = len(self._page_events)
            await asyncio.sleep(SETTLE_QUIET)
        values = {name: await self._evaluate(expression) for name, expression in evaluate.items()}
        image = None
        if screenshot:
            shot = await self._call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            image = base64.b64decode(shot["data"])
        return PageReport(self._console_errors(), self._requests(), values, image)

    async def _evaluate(self, expression: str) -> Any:
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        outcome = await self._call("Runtime.evaluate", params)
        if "exceptionDetails" in outcome:
            details = outcome["exceptionDetails"]
            raise BrowserError(f"evaluating {expression!r} threw: {_exception_text(details)}")
        return outcome["result"].get("value")

    def _console_errors(self) -> list[str]:
        errors: list[str] = []
        for event in self._page_events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(" ".join(_remote_text(argument) for argument in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append(_exception_text(params["exceptionDetails"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                errors.append(f"{entry['text']} ({entry['url']})" if entry.get("url") else entry["text"])
        return errors

    def _requests(self) -> list[str]:
        return [
            url
            for event in self._page_events
            if event["method"] == "Network.requestWillBeSent"
            and (url := event["params"]["request"]["url"]).split("#")[0] != self._page_url
            and not url.startswith("data:")
        ]

    async def _devtools_port(self) -> int:
        """Poll Chromium's ``DevToolsActivePort`` file for the port it chose."""
        port_file = self._profile / "DevToolsActivePort"
        while True:
            if self._process.poll() is not None:
                log = self._log_path.read_text(errors="replace")[-2000:]
                raise BrowserError(f"chromium exited with {self._process.returncode} before listening:\n{log}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(port_file.read_text().splitlines()[0])
            await asyncio.sleep(0.05)

    async def _call(self, method: str, params: Mapping[str, Any] | None = None, *, session: bool = True) -> Any:
        """Send one DevTools command (to the page unless ``session=False``) and return its result."""
        assert self._socket is not None
        message_id = len(self._pending) + 1
        message: dict[str, Any] = {"id": message_id, "method": method, "params": dict(params or {})}
        if session:
            message["sessionId"] = self._session_id
        reply = self._pending[message_id] = asyncio.get_running_loop().create_future()
        await self._socket.send_json(message)
        answer = await reply
        if "error" in answer:
            raise BrowserError(f"DevTools {method} failed: {answer['error'].get('message')} ({answer['error']})")
        return answer.get("result", {})

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in socket:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            message = frame.json()
            if "id" in message:
                reply = self._pending.get(message["id"])
                if reply is not None and not reply.done():
                    reply.set_result(message)
            elif self._session_id is not None and message.get("sessionId") == self._session_id:
                self._page_events.append(message)
                if message["method"] == "Page.loadEventFired":
                    self._loaded.set()
        closed = BrowserError("the DevTools connection closed")
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(closed)


def _remote_text(value: Mapping[str, Any]) -> str:
    """A console argument (a DevTools RemoteObject) as text."""
    if "value" in value:
        return str(value["value"])
    return str(value.get("description", value.get("type", "")))


def _exception_text(details: Mapping[str, Any]) -> str:
    exception = details.get("exception", {})
    return str(exception.get("description") or details.get("text", "uncaught exception"))
