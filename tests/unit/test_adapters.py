"""Unit tests of the adapter types, settings, registry and development adapters."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from adapters import registry
from adapters.base import (
    Adapter,
    AdapterError,
    AdapterSettings,
    AdapterSettingsError,
    Message,
    SendResult,
    SendStatus,
    validate_settings,
)
from adapters.console import ConsoleAdapter, ConsoleSettings
from adapters.contract import (
    AdapterHarness,
    Delivery,
    check_marketing_headers_carried,
    check_repeat_recognisable,
    check_send_delivers_once,
)
from adapters.file import FileAdapter, FileSettings
from adapters.memory import MemoryAdapter
from adapters.null import NullAdapter
from adapters.registry import UnknownAdapter, adapter_class, build_adapter, register

MESSAGE = Message(
    touchpoint_id="tp-7",
    idempotency_key="enr-3:welcome",
    channel="email",
    to="ada@example.com",
    recipient_id="r3",
    campaign_id="trial-onboarding",
    step_id="welcome",
    kind="marketing",
    subject="Welcome to Acme",
    text="Hi Ada,\nthanks for signing up.",
    html="<p>Hi Ada,</p>",
    headers={"List-Unsubscribe": "<https://tact.example.com/u/abc>"},
    metadata={"locale": "en"},
)


def send(adapter: Adapter, message: Message = MESSAGE) -> SendResult:
    """Send one message on a fresh event loop."""
    return asyncio.run(adapter.send(message))


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A copy of the registry that registrations in a test cannot leak out of."""
    adapters = dict(registry.ADAPTERS)
    monkeypatch.setattr(registry, "ADAPTERS", adapters)
    yield adapters


# Settings


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"adapter": "console"}, None),
        ({"adapter": "console", "max_body_chars": 80, "concurrency": 4}, None),
        ({"adapter": "console", "max_body_char": 80}, "did you mean 'max_body_chars'"),
        ({"adapter": "console", "max_body_chars": 0}, "max_body_chars"),
        ({"adapter": "file"}, "missing required key 'path'"),
        ({"adapter": "file", "path": "outbox.jsonl", "rate_limit": 20}, None),
        ({"adapter": "file", "path": "outbox.jsonl", "rate_limit": 0}, "rate_limit"),
        ({"adapter": "memory", "concurrency": 0}, "concurrency"),
        ({"adapter": "memory", "max_attempts": "3"}, None),
        ({"adapter": "memory", "host": "smtp.example.com"}, "unknown key 'host'"),
        ({"adapter": "null", "from": "Acme <hello@example.com>"}, None),
        ({"adapter": "null", "form": "x"}, "did you mean 'from'"),
        ({"adapter": "smtpd"}, "unknown adapter 'smtpd'"),
    ],
)
def test_channel_table_outcomes(table: dict[str, Any], error: str | None) -> None:
    """Each channel table either builds its adapter or fails naming the problem."""
    if error is None:
        adapter = build_adapter(table)
        assert type(adapter).name == table["adapter"]
    else:
        with pytest.raises((AdapterSettingsError, UnknownAdapter), match=error):
            build_adapter(table)


def test_common_settings_defaults() -> None:
    """A table with only the adapter name gets the documented common defaults."""
    settings = validate_settings(AdapterSettings, {}, adapter="custom")
    assert settings.adapter == "custom"
    assert (settings.rate_limit, settings.concurrency, settings.max_attempts) == (None, 10, 5)
    assert settings.from_ is None


def test_from_is_accepted_by_alias_and_by_name() -> None:
    """The sender is written ``from`` in TOML and ``from_`` in Python, and dumps as ``from``."""
    by_alias = validate_settings(AdapterSettings, {"from": "+15550100"}, adapter="x")
    by_name = validate_settings(AdapterSettings, {"from_": "+15550100"}, adapter="x")
    assert by_alias.from_ == by_name.from_ == "+15550100"
    assert by_alias.model_dump(by_alias=True)["from"] == "+15550100"


def test_settings_error_lists_every_problem() -> None:
    """A table with several mistakes reports all of them in one readable error."""
    with pytest.raises(AdapterSettingsError) as caught:
        ConsoleAdapter.from_settings({"colour": "red", "concurrency": -1})
    error = caught.value
    assert error.adapter == "console"
    assert len(error.problems) == 2
    assert str(error).startswith("adapter 'console': ")
    assert isinstance(error, ValueError)


def test_table_naming_another_adapter_is_rejected() -> None:
    """Building one adapter from a table that names a different adapter fails."""
    with pytest.raises(AdapterSettingsError, match="expected 'memory'"):
        MemoryAdapter.from_settings({"adapter": "file"})


def test_missing_adapter_key_lists_known_names() -> None:
    """A channel table without ``adapter`` fails and lists the names to choose from."""
    with pytest.raises(AdapterSettingsError, match="missing required key 'adapter'") as caught:
        build_adapter({"path": "outbox.jsonl"})
    assert "console, file, mailgun, memory, null, postmark, sendgrid, smtp, twilio, webhook" in str(caught.value)


# Results and errors


def test_result_constructors_set_status_and_fields() -> None:
    """The named constructors build results with their status and details."""
    assert SendResult.sent("id-1") == SendResult(SendStatus.SENT, provider_message_id="id-1")
    assert SendResult.retryable("busy", retry_after=30).retry_after == 30
    assert SendResult.rejected("no such user").status is SendStatus.REJECTED
    assert SendResult.rejected("no such user").status == "rejected"


def test_negative_retry_after_is_refused() -> None:
    """A result cannot ask for a retry in the past."""
    with pytest.raises(ValueError, match="retry_after"):
        SendResult.retryable("busy", retry_after=-1)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AdapterError("mailbox full", retryable=True, retry_after=60), SendStatus.RETRYABLE),
        (AdapterError("no such user", retryable=False), SendStatus.REJECTED),
        (ConnectionResetError("peer went away"), SendStatus.RETRYABLE),
    ],
)
def test_exceptions_map_to_results(error: Exception, expected: SendStatus) -> None:
    """An AdapterError keeps its retryable flag; any other exception is retryable."""
    result = SendResult.from_exception(error)
    assert result.status is expected
    assert result.detail is not None and str(error) in result.detail


def test_adapter_error_passes_retry_after_on() -> None:
    """A retryable AdapterError's retry_after reaches the result."""
    result = SendResult.from_exception(AdapterError("slow down", retryable=True, retry_after=5))
    assert result.retry_after == 5


# Registry


def test_unknown_adapter_lists_known_names() -> None:
    """Looking up an unregistered name raises a KeyError that lists every known name."""
    with pytest.raises(KeyError) as caught:
        adapter_class("sendgird")
    assert isinstance(caught.value, UnknownAdapter)
    assert str(caught.value) == (
        "unknown adapter 'sendgird'; known adapters: "
        "console, file, mailgun, memory, null, postmark, sendgrid, smtp, twilio, webhook"
    )


@pytest.mark.parametrize("name", ["console", "file", "memory", "null"])
def test_built_in_adapters_satisfy_the_protocol(name: str, tmp_path: Path) -> None:
    """Every built-in adapter builds from a table and is an Adapter under its own name."""
    extra = {"path": str(tmp_path / "o.jsonl")} if name == "file" else {}
    adapter = build_adapter({"adapter": name, **extra})
    assert isinstance(adapter, Adapter)
    assert adapter_class(name) is type(adapter)
    assert adapter.settings.adapter == name


class PigeonAdapter:
    """A third-party adapter used to exercise registration."""

    name: ClassVar[str] = "pigeon"

    def __init__(self, settings: AdapterSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        return cls(validate_settings(AdapterSettings, table, adapter=cls.name))

    async def send(self, message: Message) -> SendResult:
        return SendResult.sent(f"pigeon-{message.idempotency_key}")

    async def aclose(self) -> None:
        pass


def test_registered_adapter_builds_from_config(isolated_registry: dict[str, Any]) -> None:
    """A registered third-party adapter is built by name like a built-in one."""
    assert register(PigeonAdapter) is PigeonAdapter
    adapter = build_adapter({"adapter": "pigeon", "concurrency": 2})
    assert isinstance(adapter, PigeonAdapter)
    assert adapter.settings.concurrency == 2
    assert "pigeon" in isolated_registry


def test_taken_name_needs_replace(isolated_registry: dict[str, Any]) -> None:
    """Registering a different class under a taken name fails unless replace is asked for."""

    class LoudConsole(PigeonAdapter):
        name: ClassVar[str] = "console"

    with pytest.raises(ValueError, match="'console' is taken"):
        register(LoudConsole)
    register(LoudConsole, replace=True)
    assert adapter_class("console") is LoudConsole


def test_register_refuses_a_class_without_a_name(isolated_registry: dict[str, Any]) -> None:
    """A class without a ``name`` cannot be registered."""

    class Nameless:
        async def send(self, message: Message) -> SendResult:
            return SendResult.sent()

    with pytest.raises(TypeError, match="name"):
        register(Nameless)  # type: ignore[type-var]


# Development adapters


def test_file_adapter_writes_one_json_line_per_message(tmp_path: Path) -> None:
    """Each send appends a JSON object with every message field, the sender and sent_at."""
    outbox = tmp_path / "nested" / "dir" / "outbox.jsonl"
    adapter = FileAdapter(FileSettings(path=outbox, **{"from": "Acme <hello@example.com>"}))
    before = datetime.now(UTC)
    first = send(adapter)
    send(adapter, replace(MESSAGE, to="grace@example.com", subject=None, html=None, attempt=2))
    asyncio.run(adapter.aclose())

    lines = outbox.read_text("utf-8").splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    sent_at = datetime.fromisoformat(record.pop("sent_at"))
    assert record == {
        "touchpoint_id": "tp-7",
        "idempotency_key": "enr-3:welcome",
        "channel": "email",
        "to": "ada@example.com",
        "recipient_id": "r3",
        "campaign_id": "trial-onboarding",
        "step_id": "welcome",
        "kind": "marketing",
        "subject": "Welcome to Acme",
        "text": "Hi Ada,\nthanks for signing up.",
        "html": "<p>Hi Ada,</p>",
        "headers": {"List-Unsubscribe": "<https://tact.example.com/u/abc>"},
        "attempt": 1,
        "metadata": {"locale": "en"},
        "from": "Acme <hello@example.com>",
    }
    assert sent_at.tzinfo is not None and sent_at.utcoffset() == timedelta(0)
    assert sent_at >= before.replace(microsecond=0)
    second = json.loads(lines[1])
    assert (second["to"], second["subject"], second["html"], second["attempt"]) == (
        "grace@example.com",
        None,
        None,
        2,
    )
    assert first == SendResult.sent("file-enr-3:welcome")


def test_file_adapter_opens_lazily_and_appends(tmp_path: Path) -> None:
    """The outbox is created on the first send and later adapters append to it."""
    outbox = tmp_path / "outbox.jsonl"
    adapter = FileAdapter.from_settings({"path": str(outbox)})
    asyncio.run(adapter.aclose())
    assert not outbox.exists()
    send(adapter)
    later = FileAdapter.from_settings({"path": str(outbox)})
    send(later)
    asyncio.run(adapter.aclose())
    asyncio.run(later.aclose())
    assert len(outbox.read_text("utf-8").splitlines()) == 2


def test_console_adapter_prints_a_readable_block() -> None:
    """The console block shows channel, recipient, sender, subject, headers and body."""
    stream = io.StringIO()
    adapter = ConsoleAdapter(ConsoleSettings(**{"from": "Acme <hello@example.com>"}), stream=stream)
    result = send(adapter)
    output = stream.getvalue()
    assert output.startswith("=== email to ada@example.com ===\n")
    assert "From: Acme <hello@example.com>\n" in output
    assert "Subject: Welcome to Acme\n" in output
    assert "Campaign: trial-onboarding / welcome (marketing, attempt 1)\n" in output
    assert "  List-Unsubscribe: <https://tact.example.com/u/abc>\n" in output
    assert "HTML: 14 characters (not shown)\n" in output
    assert "\n\nHi Ada,\nthanks for signing up.\n" in output
    assert output.endswith("-" * 72 + "\n")
    assert result == SendResult.sent("console-enr-3:welcome")


def test_console_adapter_truncates_long_bodies() -> None:
    """Bodies longer than max_body_chars are cut with a note of what was left out."""
    stream = io.StringIO()
    adapter = ConsoleAdapter(ConsoleSettings(max_body_chars=10), stream=stream)
    send(adapter, replace(MESSAGE, text="x" * 25))
    assert "\n" + "x" * 10 + "\n[... 15 more characters]\n" in stream.getvalue()
    assert "x" * 11 not in stream.getvalue()


def test_console_adapter_omits_subject_for_sms() -> None:
    """An SMS block has no Subject line."""
    stream = io.StringIO()
    sms = replace(MESSAGE, channel="sms", to="+15550100", subject=None, html=None, headers={})
    send(ConsoleAdapter(stream=stream), sms)
    assert stream.getvalue().startswith("=== sms to +15550100 ===\n")
    assert "Subject" not in stream.getvalue()
    assert "Headers" not in stream.getvalue()


def test_console_adapter_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream the console adapter prints to standard output."""
    send(ConsoleAdapter())
    assert "=== email to ada@example.com ===" in capsys.readouterr().out


def test_memory_adapter_follows_its_script() -> None:
    """Queued results are returned in order, then every send succeeds."""
    adapter = MemoryAdapter(script=[SendResult.retryable("busy")])
    adapter.queue_results(SendResult.rejected("bounced"))
    statuses = [send(adapter).status for _ in range(3)]
    assert statuses == [SendStatus.RETRYABLE, SendStatus.REJECTED, SendStatus.SENT]
    assert adapter.sent == [MESSAGE]
    assert [result.status for _, result in adapter.attempts] == statuses


def test_memory_adapter_records_repeats() -> None:
    """Sending one idempotency key twice records two messages with distinct provider ids."""
    adapter = MemoryAdapter()
    results = [send(adapter), send(adapter)]
    assert [r.provider_message_id for r in results] == ["memory-1", "memory-2"]
    assert len(adapter.sent) == 2
    adapter.clear()
    asyncio.run(adapter.aclose())
    assert adapter.sent == [] and adapter.attempts == [] and adapter.closed


def test_null_adapter_accepts_everything() -> None:
    """The null adapter returns sent for every message."""
    assert send(NullAdapter()).status is SendStatus.SENT


# The contract suite itself


class DoubleSendHarness(AdapterHarness):
    """A harness over a faulty adapter that delivers twice and loses headers."""

    def __init__(self) -> None:
        self.received: list[Delivery] = []

    async def make(self) -> Adapter:
        received = self.received

        class Faulty(NullAdapter):
            name: ClassVar[str] = "faulty"
            __slots__ = ()

            async def send(self, message: Message) -> SendResult:
                delivery = Delivery(message.to, message.subject, message.text, {}, message.idempotency_key)
                received.extend([delivery, delivery])
                return SendResult.sent()

        return Faulty()

    def delivered(self) -> Sequence[Delivery]:
        return self.received


@pytest.mark.parametrize(
    "check",
    [check_send_delivers_once, check_marketing_headers_carried, check_repeat_recognisable],
)
def test_contract_checks_catch_a_faulty_adapter(check: Any) -> None:
    """The contract checks fail for an adapter that duplicates deliveries and drops headers."""
    with pytest.raises(AssertionError):
        asyncio.run(check(DoubleSendHarness()))
