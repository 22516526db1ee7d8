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
the message resource and its ``sid``, the webhook 200 with ``id``).

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
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

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
EMAIL_ADDRESS = re.compile(r"^[^@\s<>(),;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
TWILIO_SENDER = re.compile(r"^(\+[1-9]\d{1,14}|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
SENDGRID_RESERVED_HEADERS = frozenset(
    {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding"}
    | {"to", "from", "subject", "reply-to", "cc", "bcc"}
)
WEBHOOK_STRING_FIELDS = (
    "touchpoint_id",
    "idempotency_key",
    "channel",
    "to",
    "recipient_id",
    "campaign_id",
    "step_id",
    "kind",
    "text",
    "sent_at",
)


@dataclass(frozen=True)
class Credentials:
    """What the server accepts as each provider's account and secrets."""

    sendgrid_api_key: str = "SG.contract-test-key"
    postmark_server_token: str = "postmark-contract-token"
    postmark_streams: frozenset[str] = frozenset({"outbound", "broadcast"})
    mailgun_api_key: str = "mailgun-contract-key"
    mailgun_domain: str = "mg.example.com"
    twilio_account_sid: str = "AC0123456789abcdef0123456789abcdef"
    twilio_auth_token: str = "twilio-contract-token"
    webhook_secret: str = "webhook-contract-secret"
    webhook_path: str = "/hooks/tact"


@dataclass(frozen=True)
class Reply:
    """An answer: a mapping or list body is sent as JSON, a string as plain text."""

    status: int
    body: Mapping[str, Any] | list[Any] | str | bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str | None]:
        """The body's bytes and its content type."""
        if isinstance(self.body, bytes):
            return self.body, None
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode("utf-8"), "application/json"


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
        self._validators: dict[str, Callable[[_Incoming, dict[str, str]], Reply]] = {
            "sendgrid": self._sendgrid,
            "postmark": self._postmark,
            "mailgun": self._mailgun,
            "twilio": self._twilio,
            "webhook": self._webhook,
        }

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
        elif provider in self._validators:
            reply = self._validators[provider](incoming, params)
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

    # -- validators: one per provider, each returning the provider's answer ----------------

    def _sendgrid(self, request: _Incoming, params: dict[str, str]) -> Reply:
        def error(status: int, message: str, field: str | None = None) -> Reply:
            return Reply(status, {"errors": [{"message": message, "field": field, "help": None}]})

        if request.method != "POST":
            return error(405, f"method {request.method} is not allowed")
        authorization = request.headers.get("authorization")
        if authorization is None:
            return error(401, "authorization required: send an API key as a bearer token")
        if authorization != f"Bearer {self.credentials.sendgrid_api_key}":
            return error(401, "the API key is not valid, or has expired or been revoked")
        if request.media_type != "application/json":
            return error(400, "the body must be JSON, sent as Content-Type: application/json")
        body = request.json
        if not isinstance(body, dict):
            return error(400, "the body is not a JSON object")
        errors = _sendgrid_errors(body)
        if errors:
            return Reply(400, {"errors": [{"message": m, "field": f, "help": None} for f, m in errors]})
        return Reply(202, b"", {"X-Message-Id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22]})

    def _postmark(self, request: _Incoming, params: dict[str, str]) -> Reply:
        def error(code: int, message: str, status: int = 422) -> Reply:
            return Reply(status, {"ErrorCode": code, "Message": message})

        if request.method != "POST":
            return error(0, f"method {request.method} is not allowed", 405)
        token = request.headers.get("x-postmark-server-token")
        if token is None:
            return error(10, "no server API token given in the X-Postmark-Server-Token header", 401)
        if token != self.credentials.postmark_server_token:
            return error(10, "the server API token is not valid", 401)
        if request.media_type != "application/json" or "application/json" not in request.headers.get("accept", ""):
            return error(409, "JSON required: set both Accept and Content-Type to application/json")
        body = request.json
        if not isinstance(body, dict):
            return error(402, "the body is not a valid JSON object")
        problem = _postmark_problem(body, self.credentials.postmark_streams)
        if problem is not None:
            return error(*problem)
        submitted = datetime.now(UTC).isoformat()
        return Reply(
            200,
            {
                "To": body["To"],
                "SubmittedAt": submitted,
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            },
        )

    def _mailgun(self, request: _Incoming, params: dict[str, str]) -> Reply:
        def error(status: int, message: str) -> Reply:
            return Reply(status, {"message": message})

        if request.method != "POST":
            return error(405, f"method {request.method} is not allowed")
        if request.basic_auth() != ("api", self.credentials.mailgun_api_key):
            return Reply(401, "Forbidden")
        if params["domain"] != self.credentials.mailgun_domain:
            return error(404, f"Domain not found: {params['domain']}")
        if request.media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return error(400, "send the message as multipart/form-data or application/x-www-form-urlencoded")
        problem = _mailgun_problem(request.form)
        if problem is not None:
            return error(400, problem)
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        message_id = f"<{stamp}.{secrets.token_hex(8)}@{params['domain']}>"
        return Reply(200, {"id": message_id, "message": "Queued. Thank you."})

    def _twilio(self, request: _Incoming, params: dict[str, str]) -> Reply:
        def error(status: int, code: int, message: str) -> Reply:
            more_info = f"https://www.twilio.com/docs/errors/{code}"
            return Reply(status, {"code": code, "message": message, "more_info": more_info, "status": status})

        credentials = (self.credentials.twilio_account_sid, self.credentials.twilio_auth_token)
        if request.basic_auth() != credentials:
            return error(401, 20003, "Authenticate")
        if params["account_sid"] != credentials[0]:
            return error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method != "POST":
            return error(405, 20004, f"method {request.method} is not allowed")
        if request.media_type != "application/x-www-form-urlencoded":
            return error(400, 20001, "parameters must be form-encoded (application/x-www-form-urlencoded)")
        problem = _twilio_problem(request.form)
        if problem is not None:
            return error(400, *problem)
        fields = {name: values[0] for name, values in request.form.items()}
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        resource = {
            "sid": sid,
            "account_sid": credentials[0],
            "to": fields["To"],
            "from": fields.get("From"),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "body": fields["Body"],
            "status": "accepted" if "MessagingServiceSid" in fields else "queued",
            "num_segments": str(max(1, -(-len(fields["Body"]) // 153))),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "error_code": None,
            "error_message": None,
            "price": None,
            "uri": f"/2010-04-01/Accounts/{credentials[0]}/Messages/{sid}.json",
        }
        return Reply(201, resource)

    def _webhook(self, request: _Incoming, params: dict[str, str]) -> Reply:
        if request.method != "POST":
            return Reply(405, {"error": f"method {request.method} is not allowed"})
        if request.media_type != "application/json":
            return Reply(415, {"error": "the body must be application/json"})
        timestamp = request.headers.get(TIMESTAMP_HEADER.lower(), "")
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        secret = self.credentials.webhook_secret.encode("utf-8")
        if not verify_signature(secret, timestamp, request.body, signature, now=time.time()):
            return Reply(401, {"error": "the signature does not verify"})
        body = request.json
        key = request.headers.get("idempotency-key")
        if not isinstance(body, dict):
            return Reply(400, {"error": "the body is not a JSON object"})
        problem = _webhook_problem(body, key)
        if problem is not None:
            return Reply(400, {"error": problem})
        return Reply(200, {"id": "wh_" + secrets.token_hex(12)})


ROUTES = (
    ("sendgrid", re.compile(r"^/v3/mail/send$")),
    ("postmark", re.compile(r"^/email$")),
    ("mailgun", re.compile(r"^/v3/(?P<domain>[^/]+)/messages$")),
    ("twilio", re.compile(r"^/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json$")),
)


def _valid_address(text: object) -> bool:
    return isinstance(text, str) and bool(EMAIL_ADDRESS.match(text))


def _address_list(text: str) -> list[str] | None:
    """The addresses in a header-style list (``"A <a@x.org>, b@y.org"``), or ``None`` if one is bad."""
    addresses = [address for _, address in getaddresses([text])]
    if not addresses or not all(_valid_address(address) for address in addresses):
        return None
    return addresses


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _sendgrid_errors(body: dict[str, Any]) -> list[tuple[str | None, str]]:
    errors: list[tuple[str | None, str]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(("personalizations", "at least one personalization is required"))
        personalizations = []
    elif len(personalizations) > 1000:
        errors.append(("personalizations", "at most 1000 personalizations per request"))
    for index, personalization in enumerate(personalizations):
        where = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            errors.append((where, "a personalization must be an object"))
            continue
        recipients = personalization.get("to")
        if not isinstance(recipients, list) or not recipients:
            errors.append((f"{where}.to", "every personalization needs at least one to address"))
            recipients = []
        for number, recipient in enumerate(recipients):
            email = recipient.get("email") if isinstance(recipient, dict) else None
            if not _valid_address(email):
                errors.append((f"{where}.to.{number}.email", "does not hold a valid email address"))
        for key in ("headers", "custom_args", "substitutions"):
            if key in personalization and not _string_map(personalization[key]):
                errors.append((f"{where}.{key}", f"{key} must map strings to strings"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not _valid_address(sender.get("email")):
        errors.append(("from.email", "the from address is missing or not a valid email address"))
    subjects = [p.get("subject") for p in personalizations if isinstance(p, dict)]
    has_subject = isinstance(body.get("subject"), str) and body["subject"] != ""
    every_subject = bool(subjects) and all(isinstance(s, str) and s for s in subjects)
    if not has_subject and not every_subject and "template_id" not in body:
        errors.append(("subject", "the subject is required and must be at least one character"))
    errors.extend(_sendgrid_content_errors(body))
    headers = body.get("headers", {})
    if not _string_map(headers):
        errors.append(("headers", "headers must map header names to string values"))
    elif any(name.lower() in SENDGRID_RESERVED_HEADERS for name in headers):
        errors.append(("headers", "headers may not set a reserved header (To, From, Subject, Content-Type, ...)"))
    custom_args = body.get("custom_args", {})
    if not _string_map(custom_args):
        errors.append(("custom_args", "custom_args must map names to string values"))
    elif len(json.dumps(custom_args).encode("utf-8")) >= 10_000:
        errors.append(("custom_args", "custom_args must total less than 10,000 bytes"))
    return errors


def _sendgrid_content_errors(body: dict[str, Any]) -> list[tuple[str | None, str]]:
    content = body.get("content")
    if content is None and "template_id" in body:
        return []
    if not isinstance(content, list) or not content:
        return [("content", "at least one content object (type and value) is required")]
    errors: list[tuple[str | None, str]] = []
    types = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            errors.append((f"content.{index}.type", "every content object needs a type"))
            continue
        types.append(part["type"])
        if not isinstance(part.get("value"), str) or not part["value"]:
            errors.append((f"content.{index}.value", "the content value must be a string of at least one character"))
    if "text/plain" in types and types[0] != "text/plain":
        errors.append(("content", "text/plain content must come first, then text/html"))
    if len(set(types)) != len(types):
        errors.append(("content", "each content type may appear only once"))
    return errors


def _postmark_problem(body: dict[str, Any], streams: frozenset[str]) -> tuple[int, str] | None:
    sender = body.get("From")
    if not isinstance(sender, str) or not _valid_address(parseaddr(sender)[1]):
        return 300, f"Invalid 'From' address: {sender!r}."
    recipients = body.get("To")
    if not isinstance(recipients, str) or not recipients.strip():
        return 300, "Zero recipients specified: give at least one address in 'To'."
    addresses = _address_list(recipients)
    if addresses is None:
        return 300, f"Error parsing 'To': illegal email address {recipients!r}."
    if len(addresses) > 50:
        return 300, "'To' may hold at most 50 recipients."
    if "Subject" in body and not isinstance(body["Subject"], str):
        return 402, "Subject must be a string."
    text, html = body.get("TextBody"), body.get("HtmlBody")
    if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
        return 300, "Provide either TextBody or HtmlBody or both."
    headers = body.get("Headers", [])
    if not isinstance(headers, list) or not all(_name_value_pair(header) for header in headers):
        return 402, "Headers must be a list of {Name, Value} objects with string values."
    metadata = body.get("Metadata", {})
    if not _string_map(metadata) or len(metadata) > 10:
        return 300, "Metadata must map at most 10 names to string values."
    if any(len(name) > 20 or len(value) > 80 for name, value in metadata.items()):
        return 300, "Metadata names are limited to 20 characters and values to 80."
    stream = body.get("MessageStream", "outbound")
    if stream not in streams:
        return 1235, f"The message stream {stream!r} was not found on this server."
    return None


def _name_value_pair(header: object) -> bool:
    return isinstance(header, dict) and set(header) == {"Name", "Value"} and _string_map(header)


def _mailgun_problem(form: dict[str, list[str]]) -> str | None:
    if not form.get("from"):
        return "from parameter is missing"
    if _address_list(form["from"][0]) is None:
        return "from parameter is not a valid address. please check documentation"
    if not form.get("to"):
        return "to parameter is missing"
    if any(_address_list(value) is None for value in form["to"]):
        return "to parameter is not a valid address. please check documentation"
    if not form.get("subject"):
        return "subject parameter is missing"
    if not form.get("text") and not form.get("html"):
        return "Need at least one of 'text' or 'html' parameters specified"
    options = [(name, value) for name, values in form.items() for value in values if name[:2] in ("o:", "h:", "v:")]
    if sum(len(name) + len(value.encode("utf-8")) for name, value in options) > 16 * 1024:
        return "Send options (parameters starting with o:, h:, or v:) are limited to 16 kB total"
    for name, _ in options:
        if name.startswith("h:") and (not name[2:].isascii() or not name[2:]):
            return f"Header name must be pure ASCII: {name[2:]}"
    return None


def _twilio_problem(form: dict[str, list[str]]) -> tuple[int, str] | None:
    fields = {name: values[0] for name, values in form.items() if values}
    if not fields.get("To"):
        return 21604, "A 'To' phone number is required."
    if not E164.match(fields["To"]):
        return 21211, f"Invalid 'To' Phone Number: {fields['To']}"
    if "MessagingServiceSid" in fields:
        if not MESSAGING_SERVICE_SID.match(fields["MessagingServiceSid"]):
            return 21705, f"The Messaging Service Sid {fields['MessagingServiceSid']} is invalid."
    elif not fields.get("From"):
        return 21603, "A 'From' phone number is required."
    if "From" in fields and not TWILIO_SENDER.match(fields["From"]):
        return 21212, f"Invalid From Number (caller ID): {fields['From']}"
    if not fields.get("Body") and "MediaUrl" not in fields and "ContentSid" not in fields:
        return 21602, "Message body is required."
    if len(fields.get("Body", "")) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    callback = fields.get("StatusCallback")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return 21609, f"Invalid StatusCallback URL: {callback}"
    return None


def _webhook_problem(body: dict[str, Any], idempotency_key: str | None) -> str | None:
    for name in WEBHOOK_STRING_FIELDS:
        if not isinstance(body.get(name), str):
            return f"{name} must be a string"
    for name in ("subject", "html", "from"):
        if name not in body or not isinstance(body[name], str | None):
            return f"{name} must be a string or null"
    for name in ("headers", "metadata"):
        if not _string_map(body.get(name)):
            return f"{name} must map strings to strings"
    if not isinstance(body.get("attempt"), int) or body["attempt"] < 1:
        return "attempt must be a positive integer"
    if not body["to"]:
        return "to must not be empty"
    if idempotency_key != body["idempotency_key"]:
        return "the Idempotency-Key header must equal the body's idempotency_key"
    return None


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
