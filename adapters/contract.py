"""The contract every adapter keeps, as checks any adapter's tests can run.

An adapter's tests supply an :class:`AdapterHarness`: it builds the adapter and reports
what the receiving side got (a local SMTP or HTTP server, a file, a list in memory). The
checks in :data:`CONTRACT_CHECKS` then exercise the adapter through its protocol only.
The simplest way to run them all is to subclass :class:`AdapterContract` in a test module
and provide a ``harness`` fixture::

    class TestMyAdapterContract(AdapterContract):
        @pytest.fixture
        def harness(self, my_server: MyServer) -> MyHarness:
            return MyHarness(my_server)

Each check is a plain ``async`` function of the harness; it raises ``AssertionError`` when
the adapter breaks the contract and :class:`CheckSkipped` when the harness cannot observe
what the check needs. This module imports pytest and is meant for tests only.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Protocol

import pytest

from adapters.base import Adapter, Message, SendResult, SendStatus
from adapters.limits import Throttled

__all__ = [
    "CONTRACT_CHECKS",
    "THROTTLE_SECONDS",
    "AdapterContract",
    "AdapterHarness",
    "CheckSkipped",
    "ContractCheck",
    "Delivery",
    "FailureKind",
    "contract_message",
    "run_contract_check",
]

FailureKind = Literal["retryable", "rejected", "throttled"]
"""``throttled``: a temporary failure that asks for a delay of :data:`THROTTLE_SECONDS`."""

UNSUBSCRIBE_HEADERS = {
    "List-Unsubscribe": "<https://tact.example.com/u/contract-token>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
CONCURRENT_SENDS = 50
THROTTLE_SECONDS = 2
LIMITED_RATE = 40.0
LIMITED_CONCURRENCY = 3
LIMITED_SENDS = 12


@dataclass(frozen=True)
class Delivery:
    """One message as the receiving side got it."""

    to: str
    subject: str | None
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    """Whatever identifies the message on arrival: the key itself or an id derived from it
    (a Message-ID, a provider's idempotency header); ``None`` if nothing does."""
    received_at: float | None = None
    """``time.monotonic()`` when the receiving side got it, if the harness records that."""


class AdapterHarness(Protocol):
    """What a test supplies so the checks can drive one adapter.

    Subclass it explicitly to inherit the defaults: channel ``email`` with headers,
    generated recipient addresses, and no scripted failures.
    """

    channel: str = "email"
    """The channel the test messages are addressed to."""
    carries_headers: bool = True
    """Whether the channel delivers message headers (email does, SMS does not)."""

    async def make(self) -> Adapter:
        """Build a fresh adapter pointed at the receiving side."""
        ...

    def delivered(self) -> Sequence[Delivery] | None:
        """Everything received so far, in order; ``None`` if the harness cannot tell."""
        ...

    async def fail_next(self, kind: FailureKind) -> bool:
        """Make the next send fail in this way; ``False`` if the harness cannot.

        ``throttled`` is the provider's "slow down": the adapter's result must be retryable
        with ``retry_after`` equal to :data:`THROTTLE_SECONDS`.
        """
        return False

    def recipient(self, index: int) -> str:
        """The address of the ``index``-th test recipient on this channel."""
        if self.channel == "sms":
            return f"+1555{index:07d}"
        return f"recipient{index}@example.com"


ContractCheck = Callable[[AdapterHarness], Coroutine[Any, Any, None]]


class CheckSkipped(Exception):
    """The harness cannot observe or script what a check needs."""


def contract_message(harness: AdapterHarness, index: int = 1, **changes: Any) -> Message:
    """A transactional test message for recipient ``index``; ``changes`` override fields."""
    message = Message(
        touchpoint_id=f"tp-{index}",
        idempotency_key=f"enrollment-{index}:welcome",
        channel=harness.channel,
        to=harness.recipient(index),
        recipient_id=f"r{index}",
        campaign_id="contract",
        step_id="welcome",
        kind="transactional",
        subject=f"Welcome, recipient {index}" if harness.channel != "sms" else None,
        text=f"Hello recipient {index}.\nThis is the contract test message.",
    )
    return replace(message, **changes)


async def check_satisfies_protocol(harness: AdapterHarness) -> None:
    """The adapter is an ``Adapter`` with a name and returns a ``SendResult``."""
    adapter = await harness.make()
    try:
        assert isinstance(adapter, Adapter), f"{adapter!r} does not satisfy Adapter"
        assert isinstance(type(adapter).name, str) and type(adapter).name, "name is empty"
        result = await adapter.send(contract_message(harness))
        assert isinstance(result, SendResult), f"send returned {result!r}"
        assert isinstance(result.status, SendStatus)
    finally:
        await adapter.aclose()


async def check_send_delivers_once(harness: AdapterHarness) -> None:
    """One send returns SENT and arrives once with its recipient, subject and body."""
    message = contract_message(harness)
    adapter = await harness.make()
    try:
        result = await adapter.send(message)
    finally:
        await adapter.aclose()
    assert result.status is SendStatus.SENT, f"expected sent, got {result}"
    deliveries = _observed(harness)
    assert len(deliveries) == 1, f"expected one delivery, got {len(deliveries)}"
    delivery = deliveries[0]
    assert delivery.to == message.to
    if harness.channel != "sms":
        assert delivery.subject == message.subject
    assert _same_text(delivery.text, message.text), f"body differs: {delivery.text!r}"


async def check_marketing_headers_carried(harness: AdapterHarness) -> None:
    """A marketing message arrives with its List-Unsubscribe headers."""
    if not harness.carries_headers:
        raise CheckSkipped(f"channel {harness.channel!r} carries no headers")
    message = contract_message(harness, kind="marketing", headers=UNSUBSCRIBE_HEADERS)
    adapter = await harness.make()
    try:
        result = await adapter.send(message)
    finally:
        await adapter.aclose()
    assert result.status is SendStatus.SENT, f"expected sent, got {result}"
    deliveries = _observed(harness)
    assert len(deliveries) == 1, f"expected one delivery, got {len(deliveries)}"
    received = {key.lower(): value for key, value in deliveries[0].headers.items()}
    for key, value in UNSUBSCRIBE_HEADERS.items():
        assert received.get(key.lower()) == value, f"header {key} missing or changed"


async def check_repeat_recognisable(harness: AdapterHarness) -> None:
    """A message sent twice is recognisable as one message, and distinct from another."""
    first, other = contract_message(harness, 1), contract_message(harness, 2)
    adapter = await harness.make()
    try:
        results = [await adapter.send(message) for message in (first, first, other)]
    finally:
        await adapter.aclose()
    assert all(result.status is SendStatus.SENT for result in results), results
    deliveries = harness.delivered()
    if deliveries is not None and all(d.idempotency_key for d in deliveries):
        identities = [delivery.idempotency_key for delivery in deliveries]
    elif all(result.provider_message_id for result in results):
        identities = [result.provider_message_id for result in results]
    else:
        raise CheckSkipped("neither deliveries nor results carry an identity")
    assert len(identities) == 3, f"expected three deliveries, got {len(identities)}"
    assert identities[0] == identities[1], f"repeat not recognisable: {identities}"
    assert identities[0] != identities[2], f"different messages look alike: {identities}"


async def check_retryable_failure(harness: AdapterHarness) -> None:
    """A scripted temporary failure gives RETRYABLE, and the next send succeeds."""
    await _check_scripted_failure(harness, "retryable", SendStatus.RETRYABLE)


async def check_rejection(harness: AdapterHarness) -> None:
    """A scripted permanent failure gives REJECTED, and the next send succeeds."""
    await _check_scripted_failure(harness, "rejected", SendStatus.REJECTED)


async def check_concurrent_sends(harness: AdapterHarness) -> None:
    """Many sends in flight at once all succeed and all arrive."""
    messages = [contract_message(harness, index) for index in range(1, CONCURRENT_SENDS + 1)]
    adapter = await harness.make()
    try:
        results = await asyncio.gather(*(adapter.send(message) for message in messages))
    finally:
        await adapter.aclose()
    failed = [result for result in results if result.status is not SendStatus.SENT]
    assert not failed, f"{len(failed)} of {len(results)} sends failed: {failed[:3]}"
    deliveries = harness.delivered()
    if deliveries is not None:
        assert sorted(delivery.to for delivery in deliveries) == sorted(message.to for message in messages)


async def check_aclose_idempotent(harness: AdapterHarness) -> None:
    """Closing twice is harmless, with or without a send, and loses nothing sent."""
    unused = await harness.make()
    await unused.aclose()
    await unused.aclose()
    adapter = await harness.make()
    result = await adapter.send(contract_message(harness))
    await adapter.aclose()
    await adapter.aclose()
    assert result.status is SendStatus.SENT, f"expected sent, got {result}"
    deliveries = harness.delivered()
    if deliveries is not None:
        assert len(deliveries) == 1, f"expected one delivery, got {len(deliveries)}"


async def check_retry_after_kept(harness: AdapterHarness) -> None:
    """A provider's requested delay comes back as ``retry_after`` on a retryable result."""
    adapter = await harness.make()
    try:
        if not await harness.fail_next("throttled"):
            raise CheckSkipped("the harness cannot script a throttled answer")
        throttled = await adapter.send(contract_message(harness, 1))
    finally:
        await adapter.aclose()
    assert throttled.status is SendStatus.RETRYABLE, f"expected retryable, got {throttled}"
    assert throttled.retry_after == THROTTLE_SECONDS, f"retry_after lost: {throttled}"


async def check_limits_respected(harness: AdapterHarness) -> None:
    """Through :class:`~adapters.limits.Throttled`, sends are spaced by the rate and capped in flight."""
    probe = _Probe(await harness.make())
    throttled = Throttled(probe, rate_limit=LIMITED_RATE, concurrency=LIMITED_CONCURRENCY)
    messages = [contract_message(harness, index) for index in range(1, LIMITED_SENDS + 1)]
    try:
        results = await asyncio.gather(*(throttled.send(message) for message in messages))
    finally:
        await throttled.aclose()
    assert all(result.status is SendStatus.SENT for result in results), results
    assert probe.peak <= LIMITED_CONCURRENCY, f"{probe.peak} sends in flight, limit {LIMITED_CONCURRENCY}"
    # Only a lower bound on the spread: a slow machine can stretch it, never shrink it.
    spread = probe.starts[-1] - probe.starts[0]
    expected = (LIMITED_SENDS - 1) / LIMITED_RATE
    assert spread >= expected * 0.9, f"{LIMITED_SENDS} sends started within {spread:.3f}s, rate allows {expected:.3f}s"


async def check_clean_shutdown(harness: AdapterHarness) -> None:
    """Closing while sends are in flight raises nothing, and what is reported sent was delivered."""
    messages = [contract_message(harness, index) for index in range(1, 11)]
    adapter = await harness.make()
    sends = [asyncio.ensure_future(adapter.send(message)) for message in messages]
    await asyncio.sleep(0)
    await adapter.aclose()
    results = await asyncio.gather(*sends)
    assert all(isinstance(result, SendResult) for result in results), results
    deliveries = harness.delivered()
    if deliveries is not None:
        arrived = {delivery.to for delivery in deliveries}
        claimed = {message.to for message, result in zip(messages, results, strict=True) if result.status == "sent"}
        assert claimed <= arrived, f"reported sent but never arrived: {sorted(claimed - arrived)}"
    await adapter.aclose()
    gc.collect()  # a connection leaked by the close shows up now, as a ResourceWarning


CONTRACT_CHECKS: tuple[ContractCheck, ...] = (
    check_satisfies_protocol,
    check_send_delivers_once,
    check_marketing_headers_carried,
    check_repeat_recognisable,
    check_retryable_failure,
    check_rejection,
    check_concurrent_sends,
    check_aclose_idempotent,
    check_retry_after_kept,
    check_limits_respected,
    check_clean_shutdown,
)
"""Every check, in the order the contract suite runs them."""


def run_contract_check(check: ContractCheck, harness: AdapterHarness) -> None:
    """Run one check in a fresh event loop, turning :class:`CheckSkipped` into a skip."""
    try:
        asyncio.run(check(harness))
    except CheckSkipped as skipped:
        pytest.skip(str(skipped))


class AdapterContract:
    """Every contract check as a test; subclass it and provide a ``harness`` fixture."""

    @pytest.mark.parametrize(
        "contract_check",
        CONTRACT_CHECKS,
        ids=[check.__name__.removeprefix("check_") for check in CONTRACT_CHECKS],
    )
    def test_contract(self, harness: AdapterHarness, contract_check: ContractCheck) -> None:
        """The adapter keeps this part of the contract."""
        run_contract_check(contract_check, harness)


async def _check_scripted_failure(harness: AdapterHarness, kind: FailureKind, expected: SendStatus) -> None:
    failing, following = contract_message(harness, 1), contract_message(harness, 2)
    adapter = await harness.make()
    try:
        if not await harness.fail_next(kind):
            raise CheckSkipped(f"the harness cannot script a {kind} failure")
        failure = await adapter.send(failing)
        success = await adapter.send(following)
    finally:
        await adapter.aclose()
    assert failure.status is expected, f"expected {expected}, got {failure}"
    assert failure.detail, "a failure should say why in its detail"
    assert success.status is SendStatus.SENT, f"the failure outlasted one send: {success}"
    deliveries = harness.delivered()
    if deliveries is not None:
        assert [delivery.to for delivery in deliveries] == [following.to]


class _Probe:
    """Forwards to an adapter, noting when each send starts and the most in flight at once."""

    name: ClassVar[str] = "probe"

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner
        self.starts: list[float] = []
        self.in_flight = 0
        self.peak = 0

    async def send(self, message: Message) -> SendResult:
        self.starts.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.inner.send(message)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def _observed(harness: AdapterHarness) -> Sequence[Delivery]:
    deliveries = harness.delivered()
    if deliveries is None:
        raise CheckSkipped("the harness cannot see what was delivered")
    return deliveries


def _same_text(received: str, sent: str) -> bool:
    def normal(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()

    return normal(received) == normal(sent)
