"""The HTTP provider adapters against a local server that checks requests like each provider.

Every adapter runs the shared contract (:class:`adapters.contract.AdapterContract`) against
:class:`tests.contract.provider_server.ProviderServer`; the tests after it pin down each
provider's request shape, credentials, failure mapping and settings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from adapters.base import Adapter, AdapterSettingsError, Message, SendResult, SendStatus
from adapters.contract import THROTTLE_SECONDS, AdapterContract, AdapterHarness, Delivery, FailureKind, contract_message
from adapters.registry import build_adapter
from adapters.webhook import WebhookAdapter, WebhookSettings, sign, verify_signature
from tests.contract.provider_server import PROVIDERS, ProviderServer, RecordedRequest

SENDER = "Acme <hello@example.com>"
CALLBACK_URL = "https://tact.example.com/events/twilio?channel=sms"


class ProviderHarness(AdapterHarness):
    """Builds one provider's adapter from a channel table pointed at the local server.

    ``changes`` override the table's keys; a change to ``None`` removes the key.
    """

    provider: ClassVar[str]
    secret_key: ClassVar[str]
    """The settings key holding the credential."""
    credentials_refused: ClassVar[str]
    """Part of the provider's answer to a wrong credential."""

    def __init__(self, server: ProviderServer, **changes: Any) -> None:
        self.server = server
        self.changes = changes

    def base_table(self) -> dict[str, Any]:
        """The provider's channel table with working credentials."""
        raise NotImplementedError

    def table(self) -> dict[str, Any]:
        """The channel table with ``changes`` applied."""
        table = {**self.base_table(), **self.changes}
        return {key: value for key, value in table.items() if value is not None}

    def delivery(self, request: RecordedRequest) -> Delivery:
        """What the provider received, read back from its request."""
        raise NotImplementedError

    def error_body(self, text: str) -> Any:
        """An error body in the provider's shape."""
        raise NotImplementedError

    def rejection(self) -> tuple[int, Any]:
        """The provider's typical permanent failure: status and body."""
        return 400, self.error_body("the request cannot be processed")

    async def make(self) -> Adapter:
        return build_adapter(self.table())

    def delivered(self) -> Sequence[Delivery]:
        return [self.delivery(request) for request in self.server.accepted(self.provider)]

    async def fail_next(self, kind: FailureKind) -> bool:
        if kind == "retryable":
            self.server.respond_next(503, self.error_body("service unavailable"), provider=self.provider)
        elif kind == "throttled":
            headers = {"Retry-After": str(THROTTLE_SECONDS)}
            self.server.respond_next(429, self.error_body("too many requests"), headers, provider=self.provider)
        else:
            status, body = self.rejection()
            self.server.respond_next(status, body, provider=self.provider)
        return True


class SendgridHarness(ProviderHarness):
    """SendGrid: the idempotency key travels in ``custom_args``."""

    provider = "sendgrid"
    secret_key = "api_key"
    credentials_refused = "API key is not valid"

    def base_table(self) -> dict[str, Any]:
        api_key = self.server.credentials.sendgrid_api_key
        return {"adapter": "sendgrid", "base_url": self.server.base_url, "api_key": api_key, "from": SENDER}

    def delivery(self, request: RecordedRequest) -> Delivery:
        body = request.json
        personalization = body["personalizations"][0]
        text = next(part["value"] for part in body["content"] if part["type"] == "text/plain")
        headers = {**body.get("headers", {}), **personalization.get("headers", {})}
        key = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}.get("idempotency_key")
        subject = personalization.get("subject", body.get("subject"))
        return Delivery(personalization["to"][0]["email"], subject, text, headers, key, request.received_at)

    def error_body(self, text: str) -> Any:
        return {"errors": [{"message": text, "field": None, "help": None}]}

    def rejection(self) -> tuple[int, Any]:
        return 400, {"errors": [{"message": "the from address is not a verified sender", "field": "from"}]}


class PostmarkHarness(ProviderHarness):
    """Postmark: the idempotency key travels in ``Metadata``."""

    provider = "postmark"
    secret_key = "server_token"
    credentials_refused = "server API token is not valid"

    def base_table(self) -> dict[str, Any]:
        token = self.server.credentials.postmark_server_token
        return {"adapter": "postmark", "base_url": self.server.base_url, "server_token": token, "from": SENDER}

    def delivery(self, request: RecordedRequest) -> Delivery:
        body = request.json
        headers = {header["Name"]: header["Value"] for header in body.get("Headers", [])}
        key = body.get("Metadata", {}).get("idempotency_key")
        return Delivery(body["To"], body.get("Subject"), body["TextBody"], headers, key, request.received_at)

    def error_body(self, text: str) -> Any:
        return {"ErrorCode": 100, "Message": text}

    def rejection(self) -> tuple[int, Any]:
        return 422, {"ErrorCode": 400, "Message": "sender signature not found for the From address"}


class MailgunHarness(ProviderHarness):
    """Mailgun: the idempotency key travels as the ``v:idempotency_key`` variable."""

    provider = "mailgun"
    secret_key = "api_key"
    credentials_refused = "Forbidden"

    def base_table(self) -> dict[str, Any]:
        credentials = self.server.credentials
        return {
            "adapter": "mailgun",
            "base_url": self.server.base_url,
            "api_key": credentials.mailgun_api_key,
            "domain": credentials.mailgun_domain,
            "from": SENDER,
        }

    def delivery(self, request: RecordedRequest) -> Delivery:
        headers = {name[2:]: values[0] for name, values in request.form.items() if name.startswith("h:")}
        return Delivery(
            request.first("to") or "",
            request.first("subject"),
            request.first("text") or "",
            headers,
            request.first("v:idempotency_key"),
            request.received_at,
        )

    def error_body(self, text: str) -> Any:
        return {"message": text}


class TwilioHarness(ProviderHarness):
    """Twilio SMS: no headers; the idempotency key rides on the ``StatusCallback`` URL."""

    provider = "twilio"
    secret_key = "auth_token"
    credentials_refused = "Authenticate"
    channel = "sms"
    carries_headers = False

    def base_table(self) -> dict[str, Any]:
        credentials = self.server.credentials
        return {
            "adapter": "twilio",
            "base_url": self.server.base_url,
            "account_sid": credentials.twilio_account_sid,
            "auth_token": credentials.twilio_auth_token,
            "from": "+15550100",
            "status_callback_url": CALLBACK_URL,
        }

    def delivery(self, request: RecordedRequest) -> Delivery:
        callback = request.first("StatusCallback")
        key = parse_qs(urlsplit(callback).query).get("idempotency_key", [None])[0] if callback else None
        return Delivery(request.first("To") or "", None, request.first("Body") or "", {}, key, request.received_at)

    def error_body(self, text: str) -> Any:
        return {"code": 20500, "message": text, "more_info": "https://www.twilio.com/docs/errors/20500", "status": 503}

    def rejection(self) -> tuple[int, Any]:
        return 400, {"code": 21606, "message": "the From number cannot send SMS", "status": 400}


class WebhookHarness(ProviderHarness):
    """The webhook receiver: the idempotency key is the ``Idempotency-Key`` header."""

    provider = "webhook"
    secret_key = "secret"
    credentials_refused = "signature does not verify"

    def base_table(self) -> dict[str, Any]:
        secret = self.server.credentials.webhook_secret
        return {"adapter": "webhook", "url": self.server.webhook_url, "secret": secret, "from": SENDER}

    def delivery(self, request: RecordedRequest) -> Delivery:
        body = request.json
        key = request.headers.get("idempotency-key")
        return Delivery(body["to"], body["subject"], body["text"], body["headers"], key, request.received_at)

    def error_body(self, text: str) -> Any:
        return {"error": text}


HARNESSES: dict[str, type[ProviderHarness]] = {
    "sendgrid": SendgridHarness,
    "postmark": PostmarkHarness,
    "mailgun": MailgunHarness,
    "twilio": TwilioHarness,
    "webhook": WebhookHarness,
}


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    """A provider server of the test's own."""
    with ProviderServer() as server:
        yield server


@pytest.fixture(params=PROVIDERS)
def harness(request: pytest.FixtureRequest, server: ProviderServer) -> ProviderHarness:
    """A harness for each provider adapter."""
    return HARNESSES[request.param](server)


class TestProviderContract(AdapterContract):
    """Every contract check against every HTTP provider adapter."""


def send(harness: ProviderHarness, message: Message | None = None, /, **changes: Any) -> SendResult:
    """Send one message (the contract's first by default) through a fresh adapter."""
    tuned = type(harness)(harness.server, **{**harness.changes, **changes})
    chosen = message or contract_message(tuned)

    async def run() -> SendResult:
        adapter = await tuned.make()
        try:
            return await adapter.send(chosen)
        finally:
            await adapter.aclose()

    return asyncio.run(run())


def html_message(harness: AdapterHarness) -> Message:
    """A marketing message with an HTML body and unsubscribe headers."""
    return contract_message(
        harness,
        kind="marketing",
        html="<p>Hello recipient 1.</p>",
        headers={"List-Unsubscribe": "<https://tact.example.com/u/t>"},
    )


def basic_credentials(request: RecordedRequest) -> tuple[str, str]:
    """The user and password of a request's basic auth header."""
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


# -- every provider ---------------------------------------------------------------------------


def test_wrong_credentials_are_rejected_with_the_providers_message(harness: ProviderHarness) -> None:
    """A wrong credential is rejected with the provider's own message, and nothing is accepted."""
    result = send(harness, **{harness.secret_key: "wrong-secret"})
    assert result.status is SendStatus.REJECTED
    assert result.detail is not None and harness.credentials_refused in result.detail
    assert not result.address_invalid
    assert harness.server.accepted() == []


def test_secret_is_read_from_its_file(harness: ProviderHarness, tmp_path: Path) -> None:
    """The credential may come from ``<key>_file`` instead of the table."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(harness.base_table()[harness.secret_key] + "\n", encoding="utf-8")
    result = send(harness, **{harness.secret_key: None, f"{harness.secret_key}_file": str(secret_file)})
    assert result.status is SendStatus.SENT, result


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        pytest.param("7", 7, 7, id="seconds"),
        pytest.param("date", 60, 120, id="http-date"),
    ],
)
def test_throttling_keeps_retry_after(harness: ProviderHarness, retry_after: str, low: float, high: float) -> None:
    """A 429 is retryable and keeps ``Retry-After``, given in seconds or as an HTTP date."""
    if retry_after == "date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    harness.server.respond_next(429, harness.error_body("slow down"), {"Retry-After": retry_after})
    result = send(harness)
    assert result.status is SendStatus.RETRYABLE
    assert result.retry_after is not None and low <= result.retry_after <= high, result


def test_slow_answer_is_retryable(harness: ProviderHarness) -> None:
    """An answer slower than the adapter's timeout makes the send retryable."""
    harness.server.delay_next(5.0)
    result = send(harness, timeout=0.5)
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and result.detail.startswith("timeout")


def test_reset_connection_is_retryable(harness: ProviderHarness) -> None:
    """A connection reset before any answer makes the send retryable."""
    harness.server.reset_next()
    result = send(harness)
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and result.detail.startswith("connection failed")
    assert harness.server.accepted() == []


def test_server_error_is_retryable_without_condemning_the_address(harness: ProviderHarness) -> None:
    """A 500 is retryable and carries the provider's error text."""
    harness.server.respond_next(500, harness.error_body("internal trouble"))
    result = send(harness)
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and "internal trouble" in result.detail
    assert not result.address_invalid


def test_missing_secret_is_a_settings_error(harness: ProviderHarness) -> None:
    """A table without the credential is refused, naming the key."""
    with pytest.raises(AdapterSettingsError, match=f"missing {harness.secret_key}"):
        build_adapter(type(harness)(harness.server, **{harness.secret_key: None}).table())


def test_secret_and_secret_file_together_are_a_settings_error(harness: ProviderHarness, tmp_path: Path) -> None:
    """Giving the credential inline and as a file is refused."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file", encoding="utf-8")
    table = type(harness)(harness.server, **{f"{harness.secret_key}_file": str(secret_file)}).table()
    with pytest.raises(AdapterSettingsError, match="not both"):
        build_adapter(table)


def test_bad_url_is_a_settings_error(harness: ProviderHarness) -> None:
    """A base URL (the webhook's url) that is not http(s) is refused."""
    key = "url" if harness.provider == "webhook" else "base_url"
    with pytest.raises(AdapterSettingsError, match=key):
        build_adapter(type(harness)(harness.server, **{key: "ftp://api.example.com"}).table())


def test_unknown_setting_is_a_settings_error(harness: ProviderHarness) -> None:
    """A misspelt key is refused with a suggestion."""
    table = type(harness)(harness.server, timeuot=3).table()
    with pytest.raises(AdapterSettingsError, match="did you mean 'timeout'"):
        build_adapter(table)


# -- SendGrid -----------------------------------------------------------------------------------


def test_sendgrid_request_shape(server: ProviderServer) -> None:
    """SendGrid gets a bearer token and one personalization, text/plain before text/html."""
    harness = SendgridHarness(server)
    message = html_message(harness)
    result = send(harness, message)
    assert result.status is SendStatus.SENT and result.provider_message_id
    [request] = server.accepted("sendgrid")
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == f"Bearer {server.credentials.sendgrid_api_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "personalizations": [{"to": [{"email": message.to}]}],
        "from": {"email": "hello@example.com", "name": "Acme"},
        "subject": message.subject,
        "content": [{"type": "text/plain", "value": message.text}, {"type": "text/html", "value": message.html}],
        "headers": dict(message.headers),
        "custom_args": {
            "touchpoint_id": message.touchpoint_id,
            "idempotency_key": message.idempotency_key,
            "campaign_id": message.campaign_id,
            "step_id": message.step_id,
        },
    }


def test_sendgrid_invalid_recipient_condemns_the_address(server: ProviderServer) -> None:
    """A recipient SendGrid cannot parse is rejected as an invalid address, naming the field."""
    harness = SendgridHarness(server)
    result = send(harness, contract_message(harness, to="not-an-address"))
    assert result.status is SendStatus.REJECTED and result.address_invalid
    assert result.detail is not None and "personalizations.0.to.0.email" in result.detail


def test_sendgrid_other_rejection_spares_the_address(server: ProviderServer) -> None:
    """A message without a subject is rejected without blaming the address."""
    harness = SendgridHarness(server)
    result = send(harness, contract_message(harness, subject=None))
    assert result.status is SendStatus.REJECTED and not result.address_invalid
    assert result.detail is not None and "subject" in result.detail


# -- Postmark -----------------------------------------------------------------------------------


def test_postmark_request_shape(server: ProviderServer) -> None:
    """Postmark gets its server token, JSON both ways, and PascalCase fields."""
    harness = PostmarkHarness(server)
    message = contract_message(harness, html="<p>Hi</p>", headers={"List-Unsubscribe": "<https://x.example/u>"})
    result = send(harness, message)
    assert result.status is SendStatus.SENT and result.provider_message_id
    [request] = server.accepted("postmark")
    assert (request.method, request.path) == ("POST", "/email")
    assert request.headers["x-postmark-server-token"] == server.credentials.postmark_server_token
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "From": SENDER,
        "To": message.to,
        "Subject": message.subject,
        "TextBody": message.text,
        "HtmlBody": message.html,
        "Headers": [{"Name": "List-Unsubscribe", "Value": "<https://x.example/u>"}],
        "MessageStream": "outbound",
        "Metadata": {
            "touchpoint_id": message.touchpoint_id,
            "idempotency_key": message.idempotency_key,
            "campaign_id": message.campaign_id,
            "step_id": message.step_id,
        },
    }


def test_postmark_marketing_uses_the_broadcast_stream(server: ProviderServer) -> None:
    """Marketing messages go to the broadcast stream, transactional ones to the message stream."""
    harness = PostmarkHarness(server)
    assert send(harness, html_message(harness)).status is SendStatus.SENT
    assert send(harness, contract_message(harness)).status is SendStatus.SENT
    assert [request.json["MessageStream"] for request in server.accepted()] == ["broadcast", "outbound"]


def test_postmark_unknown_stream_is_rejected(server: ProviderServer) -> None:
    """A stream the server does not have is a rejection that spares the address."""
    harness = PostmarkHarness(server, message_stream="no-such-stream")
    result = send(harness)
    assert result.status is SendStatus.REJECTED and not result.address_invalid
    assert result.detail is not None and "ErrorCode 1235" in result.detail


@pytest.mark.parametrize(
    ("code", "text", "address_invalid"),
    [
        pytest.param(406, "You tried to send to a recipient that has been marked as inactive.", True, id="inactive"),
        pytest.param(300, "Error parsing 'To': illegal email address 'x'.", True, id="invalid-to"),
        pytest.param(300, "Invalid 'From' address: 'x'.", False, id="invalid-from"),
        pytest.param(400, "Sender signature not found.", False, id="no-signature"),
    ],
)
def test_postmark_error_codes_map_to_address_invalid(
    server: ProviderServer, code: int, text: str, address_invalid: bool
) -> None:
    """Inactive recipients and unparseable To addresses condemn the address; setup errors do not."""
    server.respond_next(422, {"ErrorCode": code, "Message": text})
    result = send(PostmarkHarness(server))
    assert result.status is SendStatus.REJECTED
    assert result.address_invalid is address_invalid
    assert result.detail is not None and f"ErrorCode {code}" in result.detail


def test_postmark_invalid_recipient_from_the_validator_condemns_the_address(server: ProviderServer) -> None:
    """An address Postmark cannot parse comes back as ErrorCode 300 about 'To', an invalid address."""
    harness = PostmarkHarness(server)
    result = send(harness, contract_message(harness, to="not-an-address"))
    assert result.status is SendStatus.REJECTED and result.address_invalid


def test_postmark_success_status_with_error_code_is_rejected(server: ProviderServer) -> None:
    """A 200 whose ErrorCode is not 0 is a rejection, not a send."""
    server.respond_next(200, {"ErrorCode": 406, "Message": "inactive recipient"})
    result = send(PostmarkHarness(server))
    assert result.status is SendStatus.REJECTED and result.address_invalid


# -- Mailgun ------------------------------------------------------------------------------------


def test_mailgun_request_shape(server: ProviderServer) -> None:
    """Mailgun gets basic auth as ``api``, the domain in the path and h:/v: form fields."""
    harness = MailgunHarness(server)
    message = html_message(harness)
    result = send(harness, message)
    assert result.status is SendStatus.SENT
    [request] = server.accepted("mailgun")
    assert (request.method, request.path) == ("POST", f"/v3/{server.credentials.mailgun_domain}/messages")
    assert basic_credentials(request) == ("api", server.credentials.mailgun_api_key)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "from": [SENDER],
        "to": [message.to],
        "subject": [message.subject],
        "text": [message.text],
        "html": [message.html],
        "h:List-Unsubscribe": ["<https://tact.example.com/u/t>"],
        "v:touchpoint_id": [message.touchpoint_id],
        "v:idempotency_key": [message.idempotency_key],
        "v:campaign_id": [message.campaign_id],
        "v:step_id": [message.step_id],
    }


def test_mailgun_message_id_loses_its_angle_brackets(server: ProviderServer) -> None:
    """The provider message id is Mailgun's id as its webhooks spell it, without brackets."""
    result = send(MailgunHarness(server))
    assert result.provider_message_id is not None
    assert result.provider_message_id.endswith("@" + server.credentials.mailgun_domain)
    assert not result.provider_message_id.startswith("<")


def test_mailgun_invalid_recipient_condemns_the_address(server: ProviderServer) -> None:
    """A recipient Mailgun cannot parse is rejected as an invalid address."""
    harness = MailgunHarness(server)
    result = send(harness, contract_message(harness, to="not-an-address"))
    assert result.status is SendStatus.REJECTED and result.address_invalid
    assert result.detail is not None and "not a valid address" in result.detail


def test_mailgun_unknown_domain_is_rejected(server: ProviderServer) -> None:
    """A domain the account does not have is rejected with Mailgun's message, sparing the address."""
    result = send(MailgunHarness(server, domain="other.example.com"))
    assert result.status is SendStatus.REJECTED and not result.address_invalid
    assert result.detail is not None and "Domain not found" in result.detail


def test_mailgun_validator_accepts_multipart(server: ProviderServer) -> None:
    """The Mailgun endpoint takes multipart/form-data as well as form-encoded fields."""
    credentials = server.credentials
    fields = {"from": SENDER, "to": "ada@example.com", "subject": "Hi", "text": "Hello", "v:idempotency_key": "k"}
    response = httpx.post(
        f"{server.base_url}/v3/{credentials.mailgun_domain}/messages",
        files={name: (None, value) for name, value in fields.items()},
        auth=("api", credentials.mailgun_api_key),
    )
    assert response.status_code == 200, response.text
    [request] = server.accepted("mailgun")
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert {name: values[0] for name, values in request.form.items()} == fields


def test_mailgun_settings_need_a_domain(server: ProviderServer) -> None:
    """A Mailgun table without a domain, or with a path for one, is refused."""
    with pytest.raises(AdapterSettingsError, match="domain"):
        build_adapter(MailgunHarness(server, domain=None).table())
    with pytest.raises(AdapterSettingsError, match="domain"):
        build_adapter(MailgunHarness(server, domain="mg.example.com/evil").table())


# -- Twilio -------------------------------------------------------------------------------------


def test_twilio_request_shape(server: ProviderServer) -> None:
    """Twilio gets basic auth with the account SID, and To, From, Body and a tagged StatusCallback."""
    harness = TwilioHarness(server)
    message = contract_message(harness)
    result = send(harness, message)
    assert result.status is SendStatus.SENT
    assert result.provider_message_id is not None and result.provider_message_id.startswith("SM")
    [request] = server.accepted("twilio")
    sid = server.credentials.twilio_account_sid
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{sid}/Messages.json")
    assert basic_credentials(request) == (sid, server.credentials.twilio_auth_token)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    callback = request.first("StatusCallback")
    assert callback is not None
    assert {name: values[0] for name, values in request.form.items() if name != "StatusCallback"} == {
        "To": message.to,
        "From": "+15550100",
        "Body": message.text,
    }
    assert callback.startswith("https://tact.example.com/events/twilio?")
    assert parse_qs(urlsplit(callback).query) == {
        "channel": ["sms"],
        "touchpoint_id": [message.touchpoint_id],
        "idempotency_key": [message.idempotency_key],
    }


def test_twilio_messaging_service_replaces_from(server: ProviderServer) -> None:
    """With a messaging service, Twilio gets MessagingServiceSid and no From."""
    service = "MG" + "ab" * 16
    harness = TwilioHarness(server, messaging_service_sid=service, status_callback_url=None, **{"from": None})
    assert send(harness).status is SendStatus.SENT
    [request] = server.accepted("twilio")
    assert request.first("MessagingServiceSid") == service
    assert "From" not in request.form and "StatusCallback" not in request.form


def test_twilio_invalid_number_condemns_the_address(server: ProviderServer) -> None:
    """A number that is not E.164 is refused with code 21211, an invalid address."""
    harness = TwilioHarness(server)
    result = send(harness, contract_message(harness, to="5550100"))
    assert result.status is SendStatus.REJECTED and result.address_invalid
    assert result.detail is not None and "code 21211" in result.detail


@pytest.mark.parametrize(
    ("code", "address_invalid"),
    [
        pytest.param(21211, True, id="invalid-to"),
        pytest.param(21614, True, id="not-mobile"),
        pytest.param(21610, True, id="stopped"),
        pytest.param(21606, False, id="bad-from"),
        pytest.param(21602, False, id="no-body"),
    ],
)
def test_twilio_error_codes_map_to_address_invalid(server: ProviderServer, code: int, address_invalid: bool) -> None:
    """Codes 21211, 21614 and 21610 condemn the number; other rejections do not."""
    server.respond_next(400, {"code": code, "message": f"scripted error {code}", "status": 400})
    result = send(TwilioHarness(server))
    assert result.status is SendStatus.REJECTED
    assert result.address_invalid is address_invalid
    assert result.detail is not None and f"code {code}" in result.detail


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"from": None}, id="no-sender"),
        pytest.param({"messaging_service_sid": "MG" + "0" * 32}, id="both-senders"),
        pytest.param({"account_sid": "AC123"}, id="bad-account-sid"),
        pytest.param({"status_callback_url": "tact.example.com/cb"}, id="bad-callback"),
    ],
)
def test_twilio_settings_errors(server: ProviderServer, changes: dict[str, Any]) -> None:
    """A Twilio table needs exactly one sender, a real account SID and an http(s) callback."""
    with pytest.raises(AdapterSettingsError):
        build_adapter(TwilioHarness(server, **changes).table())


# -- webhook ------------------------------------------------------------------------------------

SECRET = b"webhook-secret"
BODY = b'{"to":"ada@example.com"}'
NOW = 1_700_000_000.0


def test_webhook_request_is_signed_and_carries_the_message(server: ProviderServer) -> None:
    """The webhook body holds every message field and ``from``, signed over timestamp and body."""
    harness = WebhookHarness(server)
    message = html_message(harness)
    result = send(harness, message)
    assert result.status is SendStatus.SENT
    assert result.provider_message_id is not None and result.provider_message_id.startswith("wh_")
    [request] = server.accepted("webhook")
    assert (request.method, request.path) == ("POST", server.credentials.webhook_path)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == message.idempotency_key
    timestamp, signature = request.headers["x-tact-timestamp"], request.headers["x-tact-signature"]
    secret = server.credentials.webhook_secret.encode()
    assert verify_signature(secret, timestamp, request.body, signature, now=time.time())
    body = json.loads(request.body)
    assert body.pop("sent_at")
    assert body == {
        "touchpoint_id": message.touchpoint_id,
        "idempotency_key": message.idempotency_key,
        "channel": message.channel,
        "to": message.to,
        "recipient_id": message.recipient_id,
        "campaign_id": message.campaign_id,
        "step_id": message.step_id,
        "kind": "marketing",
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "headers": dict(message.headers),
        "attempt": 1,
        "metadata": {},
        "from": SENDER,
    }


def test_signature_verifies() -> None:
    """A signature made with the secret verifies within the window."""
    assert verify_signature(SECRET, str(int(NOW)), BODY, sign(SECRET, str(int(NOW)), BODY), now=NOW + 299)


@pytest.mark.parametrize(
    ("timestamp", "body", "secret", "now"),
    [
        pytest.param(str(int(NOW)), BODY + b" ", SECRET, NOW, id="tampered-body"),
        pytest.param(str(int(NOW)), BODY, b"other-secret", NOW, id="wrong-secret"),
        pytest.param(str(int(NOW)), BODY, SECRET, NOW + 301, id="stale"),
        pytest.param(str(int(NOW)), BODY, SECRET, NOW - 301, id="from-the-future"),
        pytest.param(str(int(NOW) + 1), BODY, SECRET, NOW, id="other-timestamp"),
    ],
)
def test_signature_fails_when_anything_changes(timestamp: str, body: bytes, secret: bytes, now: float) -> None:
    """A changed body, secret or timestamp, or a timestamp outside the window, fails verification."""
    signature = sign(SECRET, str(int(NOW)), BODY)
    assert not verify_signature(secret, timestamp, body, signature, now=now)


@pytest.mark.parametrize("signature", ["", "sha256=", "sha256=zz", "md5=abc", "sha256=é"])
def test_malformed_signature_fails(signature: str) -> None:
    """A missing, truncated or non-hex signature fails verification without raising."""
    assert not verify_signature(SECRET, str(int(NOW)), BODY, signature, now=NOW)


@pytest.mark.parametrize("timestamp", ["", "abc", "-5", "1.5", "١٧٠٠"])
def test_malformed_timestamp_fails(timestamp: str) -> None:
    """A timestamp that is not whole Unix seconds fails verification without raising."""
    assert not verify_signature(SECRET, timestamp, BODY, sign(SECRET, str(int(NOW)), BODY), now=NOW)


def test_webhook_stale_clock_is_refused_by_the_receiver(server: ProviderServer) -> None:
    """A request signed with a clock far in the past fails the receiver's check and is rejected."""
    harness = WebhookHarness(server)
    settings = WebhookSettings.model_validate(harness.table())

    async def run() -> SendResult:
        adapter = WebhookAdapter(settings, clock=lambda: time.time() - 3600)
        try:
            return await adapter.send(contract_message(harness))
        finally:
            await adapter.aclose()

    result = asyncio.run(run())
    assert result.status is SendStatus.REJECTED
    assert result.detail is not None and "signature does not verify" in result.detail


def test_webhook_receiver_can_condemn_the_address(server: ProviderServer) -> None:
    """A 4xx with ``"address_invalid": true`` rejects and condemns the address."""
    server.respond_next(422, {"error": "no such user", "address_invalid": True})
    result = send(WebhookHarness(server))
    assert result.status is SendStatus.REJECTED and result.address_invalid
    assert result.detail is not None and "no such user" in result.detail


def test_webhook_plain_rejection_spares_the_address(server: ProviderServer) -> None:
    """A 4xx without the flag rejects without condemning the address."""
    server.respond_next(400, "bad request")
    result = send(WebhookHarness(server))
    assert result.status is SendStatus.REJECTED and not result.address_invalid
    assert result.detail is not None and "bad request" in result.detail


def test_webhook_url_sets_the_base_url(server: ProviderServer) -> None:
    """The webhook's base URL is derived from its ``url``; setting both is refused."""
    settings = WebhookSettings.model_validate({"url": "https://hooks.example.com/tact/in?x=1", "secret": "s"})
    assert settings.base_url == "https://hooks.example.com"
    with pytest.raises(AdapterSettingsError, match="base_url is derived"):
        build_adapter(WebhookHarness(server, base_url="https://hooks.example.com").table())
