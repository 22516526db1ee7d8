"""A local HTTP server that answers like the email and SMS providers Tact's adapters call.

One :class:`ProviderServer` serves every provider at once, each on its own path, on
127.0.0.1 and a free port, from a background thread (one more thread per connection)::

    POST /v3/mail/send                                SendGrid Mail Send
    POST /email                                       Postmark single email
    POST /v3/{domain}/messages                        Mailgun messages
    POST /2010-04-01/Accounts/{sid}/Messages.json     Twilio Messages
    POST {credentials.webhook_path}                   a receiver of Tact's webhook adapter

Each request is checked the way the provider's API reference documents it: method, auth
scheme and credentials (:class:`Credentials`), content type, required fields and their
formats (email addresses, E.164 numbers, SIDs, sizes). A request that fails gets the
provider's error status and body shape (SendGrid ``{"errors": [{"message", "field"}]}``,
Postmark 422 ``{"ErrorCode", "Message"}``, Mailgun ``{"message"}`` or a plain ``Forbidden``,
Twilio ``{"code", "message", "more_info", "status"}``, the webhook ``{"error"}``). A request
that passes is recorded and gets the provider's success answer (SendGrid 202 with
``X-Message-Id``, Postmark 200 with ``MessageID``, Mailgun 200 with ``id``, Twilio 201 with
the message resource and its ``sid``, the webhook 200 with ``id``). The checks themselves
are in :mod:`tests.contract.provider_checks`.

Usage::

    with ProviderServer() as server:
        table = {"adapter": "sendgrid", "base_url": server.base_url,
                 "api_key": server.credentials.sendgrid_api_key, "from": "a@example.com"}
        server.respond_next(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": "2"})
        server.delay_next(5.0)            # answer the next request after 5 s
        server.reset_next(times=2)        # reset the next two connections unanswered
        ...
        server.accepted("sendgrid")       # recorded, validated requests, oldest first

API:

- ``ProviderServer(credentials=Credentials())``; ``start()`` / ``stop()`` or ``with``.
- ``base_url`` (``http://127.0.0.1:<port>``), ``webhook_url``, ``credentials``.
- ``script(*steps, provider=None)``: the next requests (for ``provider`` only, if given)
  get these steps in order instead of the normal answer: :class:`Reply` (any status, body
  and headers), :class:`Delay` (wait, then validate and answer normally; the request is
  recorded if it passes, as a provider may accept a message its client gave up on) or
  :class:`Reset` (read the request, then close the socket with ``SO_LINGER`` 0 so the
  client sees a connection reset). ``respond_next``, ``delay_next`` and ``reset_next``
  script ``times`` copies of one step.
- ``accepted(provider=None)``: every request that passed validation, as
  :class:`RecordedRequest` (parsed ``json`` or ``form``, lower-cased ``headers``,
  ``received_at`` from ``time.monotonic()``, ``status`` answered).
- ``received(provider=None)``: every request, accepted or not, scripted ones included
  (``status`` ``None`` for a reset or an abandoned delay).
- ``clear()``: forget recorded requests and pending scripted steps.

``stop()`` wakes delayed handlers (they close without answering) and shuts open
connections, so nothing outlives the server for long.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.contract.provider_checks import CHECKS, Credentials, Reply

__all__ = [
    "PROVIDERS",
    "Credentials",
    "Delay",
    "ProviderServer",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Step",
]

PROVIDERS = ("sendgrid", "postmark", "mailgun", "twilio", "webhook")


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds``, then validate and answer as usual."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection without answering."""


Step = Reply | Delay | Reset


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    provider: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes
    json: Any
    """The parsed JSON body, or ``None``."""
    form: dict[str, list[str]]
    """Form fields (url-encoded or multipart), each with every value given."""
    received_at: float
    """``time.monotonic()`` when the request had been read."""
    status: int | None = None
    """The status answered; ``None`` if the connection was reset or abandoned."""

    def first(self, name: str) -> str | None:
        """The first value of form field ``name``."""
        values = self.form.get(name)
        return values[0] if values else None

    def answered(self, status: int) -> RecordedRequest:
        """This request, noting the status it was answered with."""
        return dataclasses.replace(self, status=status)


class ProviderServer:
    """The providers' APIs on loopback, checking requests and scriptable (see the module docs)."""

    def __init__(self, credentials: Credentials | None = None, *, host: str = "127.0.0.1") -> None:
        self.credentials = credentials or Credentials()
        self.host = host
        self._lock = threading.Lock()
        self._script: list[tuple[str | None, Step]] = []
        self._accepted: list[RecordedRequest] = []
        self._received: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Listen on a free port and serve from a background thread."""
        self._stopping.clear()
        self._http = _HttpServer((self.host, 0), _Handler)
        self._http.owner = self
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed answers and shut every open connection."""
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._http = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._http is not None, "the server is not running"
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        """The root URL every provider adapter's ``base_url`` should point at."""
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        """The full URL of the webhook receiver."""
        return self.base_url + self.credentials.webhook_path

    def script(self, *steps: Step, provider: str | None = None) -> None:
        """Answer the next requests (for ``provider`` only, if given) with ``steps``, in order."""
        with self._lock:
            self._script.extend((provider, step) for step in steps)

    def respond_next(
        self,
        status: int,
        body: Mapping[str, Any] | list[Any] | str | bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        provider: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with this status, body and headers."""
        self.script(*[Reply(status, body, dict(headers or {}))] * times, provider=provider)

    def delay_next(self, seconds: float, *, times: int = 1, provider: str | None = None) -> None:
        """Answer the next ``times`` requests only after ``seconds``."""
        self.script(*[Delay(seconds)] * times, provider=provider)

    def reset_next(self, *, times: int = 1, provider: str | None = None) -> None:
        """Reset the connections of the next ``times`` requests without answering."""
        self.script(*[Reset()] * times, provider=provider)

    def accepted(self, provider: str | None = None) -> list[RecordedRequest]:
        """Requests that passed validation, oldest first."""
        with self._lock:
            return [r for r in self._accepted if provider is None or r.provider == provider]

    def received(self, provider: str | None = None) -> list[RecordedRequest]:
        """Every request received, oldest first, whatever it was answered."""
        with self._lock:
            return [r for r in self._received if provider is None or r.provider == provider]

    def clear(self) -> None:
        """Forget recorded requests and pending scripted steps."""
        with self._lock:
            self._script.clear()
            self._accepted.clear()
            self._received.clear()

    # -- request handling (runs on the handler threads) ------------------------------------

    def _handle(self, handler: _Handler, incoming: _Incoming) -> None:
        provider, params = self._route(incoming.path)
        step = self._next_step(provider)
        record = incoming.record(provider)
        if isinstance(step, Reset) or (isinstance(step, Delay) and self._stopping.wait(step.seconds)):
            self._remember(record, accepted=False)
            handler.reset()
            return
        if isinstance(step, Reply):
            reply = step
        elif provider in CHECKS:
            reply = CHECKS[provider](incoming, params, self.credentials)
        else:
            reply = Reply(404, {"error": f"no provider API at {incoming.path}"})
        self._remember(record.answered(reply.status), accepted=step is None or isinstance(step, Delay))
        handler.answer(reply)

    def _route(self, path: str) -> tuple[str, dict[str, str]]:
        if path == self.credentials.webhook_path:
            return "webhook", {}
        for provider, pattern in ROUTES:
            match = pattern.match(path)
            if match:
                return provider, match.groupdict()
        return "unknown", {}

    def _next_step(self, provider: str) -> Step | None:
        with self._lock:
            for index, (wanted, step) in enumerate(self._script):
                if wanted is None or wanted == provider:
                    del self._script[index]
                    return step
        return None

    def _remember(self, record: RecordedRequest, *, accepted: bool) -> None:
        with self._lock:
            self._received.append(record)
            if accepted and record.status is not None and 200 <= record.status < 300:
                self._accepted.append(record)

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


ROUTES = (
    ("sendgrid", re.compile(r"^/v3/mail/send$")),
    ("postmark", re.compile(r"^/email$")),
    ("mailgun", re.compile(r"^/v3/(?P<domain>[^/]+)/messages$")),
    ("twilio", re.compile(r"^/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json$")),
)


@dataclass(frozen=True)
class _Incoming:
    """A request as read off the wire, with its body parsed by content type."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def json(self) -> Any:
        if self.media_type != "application/json":
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def form(self) -> dict[str, list[str]]:
        if self.media_type == "application/x-www-form-urlencoded":
            return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        if self.media_type == "multipart/form-data":
            return _multipart_fields(self.headers["content-type"], self.body)
        return {}

    def basic_auth(self) -> tuple[str, str] | None:
        scheme, _, encoded = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except ValueError:
            return None
        return user, password

    def record(self, provider: str) -> RecordedRequest:
        return RecordedRequest(
            provider,
            self.method,
            self.path,
            self.query,
            self.headers,
            self.body,
            self.json,
            self.form,
            self.received_at,
        )


def _multipart_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    document = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, list[str]] = {}
    if not document.is_multipart():
        return fields
    for part in document.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            charset = part.get_content_charset() or "utf-8"
            fields.setdefault(name, []).append(payload.decode(charset, "replace"))
    return fields


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: ProviderServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal here (timeouts, resets); other errors print.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections close after this
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "0" if "Transfer-Encoding" not in self.headers else "")
        if not length.isdigit():
            self.answer(Reply(411, {"error": "Content-Length required"}))
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        url = urlsplit(self.path)
        incoming = _Incoming(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        self.server.owner._handle(self, incoming)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def answer(self, reply: Reply) -> None:
        body, content_type = reply.encoded()
        try:
            self.send_response(reply.status)
            if content_type and not any(name.lower() == "content-type" for name in reply.headers):
                self.send_header("Content-Type", content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def reset(self) -> None:
        """Close the connection with a TCP reset instead of an answer."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference to the socket; drop it so close() really closes.
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        return
