"""The headless-Chromium harness (``tests/browser.py``) reports what real pages do."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import open_page, require_chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLEAN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>clean</title>
<style>body { font-family: sans-serif; background: #fafafa; } rect { fill: teal; }</style>
</head><body>
<h1>Two inline drawings</h1>
<svg width="200" height="100"><rect x="10" y="10" width="180" height="80"></rect></svg>
<svg width="100" height="100"><circle cx="50" cy="50" r="40" fill="orange"></circle></svg>
<img alt="dot" src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='4' height='4'%3E%3C/svg%3E">
</body></html>
"""


def write_page(directory: Path, body: str) -> Path:
    """Write ``body`` as ``page.html`` in ``directory`` and return its path."""
    page = directory / "page.html"
    page.write_text(body, encoding="utf-8")
    return page


def png_width(image: bytes) -> int:
    """The width recorded in a PNG's IHDR chunk."""
    width: int = struct.unpack(">I", image[16:20])[0]
    return width


class QuietNotFound(BaseHTTPRequestHandler):
    """Answers every GET with 404 and logs nothing."""

    def do_GET(self) -> None:
        """Answer 404 with an empty body."""
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture
def local_http_port() -> Iterator[int]:
    """The port of an HTTP server listening on 127.0.0.1 for the test's duration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuietNotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_clean_page_reports_no_errors_no_requests_and_a_screenshot(tmp_path: Path) -> None:
    """A self-contained page loads without errors or requests, evaluates, and screenshots as PNG."""
    require_chromium()
    page = write_page(tmp_path, CLEAN_PAGE)

    report = open_page(
        page,
        evaluate={"drawings": "document.querySelectorAll('svg').length", "title": "document.title"},
        screenshot=True,
        width=800,
        height=600,
    )

    assert report.console_errors == []
    assert report.requests == []
    assert report.values == {"drawings": 2, "title": "clean"}
    assert report.screenshot is not None
    assert report.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(report.screenshot) > 2000
    assert png_width(report.screenshot) == 800


def test_screenshot_is_left_out_unless_asked(tmp_path: Path) -> None:
    """Without ``screenshot=True`` the report carries no image."""
    require_chromium()

    report = open_page(write_page(tmp_path, CLEAN_PAGE))

    assert report.screenshot is None
    assert report.values == {}


def test_console_error_is_reported(tmp_path: Path) -> None:
    """A ``console.error`` call appears among the console errors with its message."""
    require_chromium()
    page = write_page(tmp_path, '<!doctype html><script>console.log("fine"); console.error("boom")</script>')

    report = open_page(page)

    assert report.console_errors == ["boom"]


def test_uncaught_exception_is_reported(tmp_path: Path) -> None:
    """An uncaught error thrown by a page script appears among the console errors."""
    require_chromium()
    page = write_page(tmp_path, '<!doctype html><script>throw new Error("kaput")</script>')

    report = open_page(page)

    assert len(report.console_errors) == 1
    assert "kaput" in report.console_errors[0]


def test_external_requests_are_reported(tmp_path: Path, local_http_port: int) -> None:
    """Requests to a local HTTP server and to a remote stylesheet both appear, the page itself does not."""
    require_chromium()
    image_url = f"http://127.0.0.1:{local_http_port}/x.png"
    stylesheet_url = "https://fonts.example.invalid/x.css"
    page = write_page(
        tmp_path,
        f'<!doctype html><html><head><link rel="stylesheet" href="{stylesheet_url}"></head>'
        f'<body><img alt="x" src="{image_url}"></body></html>',
    )

    report = open_page(page)

    assert image_url in report.requests
    assert stylesheet_url in report.requests
    assert page.as_uri() not in report.requests
