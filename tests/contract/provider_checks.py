"""How each provider checks a request and answers it, for :mod:`tests.contract.provider_server`.

One function per provider takes the request, the parameters of its route (the Mailgun
domain, the Twilio account SID) and the :class:`Credentials` the server accepts, and returns
the :class:`Reply` the provider would give: the provider's error status and body shape for a
request that breaks a rule its API reference documents, its success answer otherwise.
:data:`CHECKS` maps each provider's name to its function. A check reads the request through
the :class:`Request` protocol, so this module needs nothing from the server that calls it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit

from adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

__all__ = [
    "CHECKS",
    "Check",
    "Credentials",
    "Reply",
    "Request",
    "check_mailgun",
    "check_postmark",
    "check_sendgrid",
    "check_twilio",
    "check_webhook",
]

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


class Request(Protocol):
    """What a check reads of a request, as the server parsed it.

    ``headers`` has lower-cased names, ``media_type`` is the content type without its
    parameters, ``json`` the parsed JSON body or ``None``, ``form`` the url-encoded or
    multipart fields with every value given, and ``basic_auth()`` the user and password
    of HTTP Basic authorization or ``None``.
    """

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def media_type(self) -> str: ...
    @property
    def json(self) -> Any: ...
    @property
    def form(self) -> dict[str, list[str]]: ...
    def basic_auth(self) -> tuple[str, str] | None: ...


Check = Callable[[Request, dict[str, str], Credentials], Reply]
"""A provider's check: the request, its route's parameters and the accepted credentials."""


def check_sendgrid(request: Request, params: dict[str, str], credentials: Credentials) -> Reply:
    """SendGrid Mail Send: 202 with ``X-Message-Id``, or an error with ``{"errors": [{"message", "field"}]}``."""

    def error(status: int, message: str, field: str | None = None) -> Reply:
        return Reply(status, {"errors": [{"message": message, "field": field, "help": None}]})

    if request.method != "POST":
        return error(405, f"method {request.method} is not allowed")
    authorization = request.headers.get("authorization")
    if authorization is None:
        return error(401, "authorization required: send an API key as a bearer token")
    if authorization != f"Bearer {credentials.sendgrid_api_key}":
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


def check_postmark(request: Request, params: dict[str, str], credentials: Credentials) -> Reply:
    """Postmark single email: 200 with ``MessageID``, or an error with ``{"ErrorCode", "Message"}``."""

    def error(code: int, message: str, status: int = 422) -> Reply:
        return Reply(status, {"ErrorCode": code, "Message": message})

    if request.method != "POST":
        return error(0, f"method {request.method} is not allowed", 405)
    token = request.headers.get("x-postmark-server-token")
    if token is None:
        return error(10, "no server API token given in the X-Postmark-Server-Token header", 401)
    if token != credentials.postmark_server_token:
        return error(10, "the server API token is not valid", 401)
    if request.media_type != "application/json" or "application/json" not in request.headers.get("accept", ""):
        return error(409, "JSON required: set both Accept and Content-Type to application/json")
    body = request.json
    if not isinstance(body, dict):
        return error(402, "the body is not a valid JSON object")
    problem = _postmark_problem(body, credentials.postmark_streams)
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


def check_mailgun(request: Request, params: dict[str, str], credentials: Credentials) -> Reply:
    """Mailgun messages: 200 with ``id``, or an error with ``{"message"}`` (401 with a plain ``Forbidden``)."""

    def error(status: int, message: str) -> Reply:
        return Reply(status, {"message": message})

    if request.method != "POST":
        return error(405, f"method {request.method} is not allowed")
    if request.basic_auth() != ("api", credentials.mailgun_api_key):
        return Reply(401, "Forbidden")
    if params["domain"] != credentials.mailgun_domain:
        return error(404, f"Domain not found: {params['domain']}")
    if request.media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return error(400, "send the message as multipart/form-data or application/x-www-form-urlencoded")
    problem = _mailgun_problem(request.form)
    if problem is not None:
        return error(400, problem)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    message_id = f"<{stamp}.{secrets.token_hex(8)}@{params['domain']}>"
    return Reply(200, {"id": message_id, "message": "Queued. Thank you."})


def check_twilio(request: Request, params: dict[str, str], credentials: Credentials) -> Reply:
    """Twilio Messages: 201 with the message resource, or an error with ``{"code", "message", ...}``."""

    def error(status: int, code: int, message: str) -> Reply:
        more_info = f"https://www.twilio.com/docs/errors/{code}"
        return Reply(status, {"code": code, "message": message, "more_info": more_info, "status": status})

    account = (credentials.twilio_account_sid, credentials.twilio_auth_token)
    if request.basic_auth() != account:
        return error(401, 20003, "Authenticate")
    if params["account_sid"] != account[0]:
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
        "account_sid": account[0],
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
        "uri": f"/2010-04-01/Accounts/{account[0]}/Messages/{sid}.json",
    }
    return Reply(201, resource)


def check_webhook(request: Request, params: dict[str, str], credentials: Credentials) -> Reply:
    """A receiver of Tact's webhook adapter: 200 with ``id``, or an error with ``{"error"}``."""

    if request.method != "POST":
        return Reply(405, {"error": f"method {request.method} is not allowed"})
    if request.media_type != "application/json":
        return Reply(415, {"error": "the body must be application/json"})
    timestamp = request.headers.get(TIMESTAMP_HEADER.lower(), "")
    signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
    secret = credentials.webhook_secret.encode("utf-8")
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


CHECKS: Mapping[str, Check] = {
    "sendgrid": check_sendgrid,
    "postmark": check_postmark,
    "mailgun": check_mailgun,
    "twilio": check_twilio,
    "webhook": check_webhook,
}
"""Each provider's check, by the provider's name."""


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
