"""The adapter contract, run against the development adapters: console, file, memory, null."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.base import Adapter, SendResult
from adapters.console import SEPARATOR, ConsoleAdapter, ConsoleSettings
from adapters.contract import THROTTLE_SECONDS, AdapterContract, AdapterHarness, Delivery, FailureKind
from adapters.file import FileAdapter
from adapters.memory import MemoryAdapter
from adapters.registry import build_adapter


class MemoryHarness(AdapterHarness):
    """Reads deliveries from ``MemoryAdapter.sent`` and scripts failures with its queue."""

    def __init__(self) -> None:
        self.adapter: MemoryAdapter | None = None

    async def make(self) -> Adapter:
        adapter = build_adapter({"adapter": "memory"})
        assert isinstance(adapter, MemoryAdapter)
        self.adapter = adapter
        return adapter

    def delivered(self) -> Sequence[Delivery]:
        sent = self.adapter.sent if self.adapter is not None else []
        return [Delivery(m.to, m.subject, m.text, m.headers, m.idempotency_key) for m in sent]

    async def fail_next(self, kind: FailureKind) -> bool:
        assert self.adapter is not None
        if kind == "retryable":
            self.adapter.queue_results(SendResult.retryable("scripted outage", retry_after=1))
        elif kind == "throttled":
            self.adapter.queue_results(SendResult.retryable("scripted throttle", retry_after=THROTTLE_SECONDS))
        else:
            self.adapter.queue_results(SendResult.rejected("scripted bad address"))
        return True


class FileHarness(AdapterHarness):
    """Reads deliveries back from the JSON lines outbox."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def make(self) -> Adapter:
        adapter = build_adapter({"adapter": "file", "path": str(self.outbox)})
        assert isinstance(adapter, FileAdapter)
        return adapter

    def delivered(self) -> Sequence[Delivery]:
        if not self.outbox.exists():
            return []
        records = [json.loads(line) for line in self.outbox.read_text("utf-8").splitlines()]
        return [Delivery(r["to"], r["subject"], r["text"], r["headers"], r["idempotency_key"]) for r in records]


class ConsoleHarness(AdapterHarness):
    """Parses deliveries out of the printed blocks."""

    def __init__(self) -> None:
        self.output = io.StringIO()

    async def make(self) -> Adapter:
        return ConsoleAdapter(ConsoleSettings(), stream=self.output)

    def delivered(self) -> Sequence[Delivery]:
        return parse_console_blocks(self.output.getvalue())


class NullHarness(AdapterHarness):
    """The null adapter delivers nothing anyone can see."""

    async def make(self) -> Adapter:
        return build_adapter({"adapter": "null"})

    def delivered(self) -> None:
        return None


def parse_console_blocks(output: str) -> list[Delivery]:
    """The messages in console adapter output, read back from its block format."""
    deliveries = []
    for block in output.split(SEPARATOR + "\n"):
        if not block:
            continue
        head, _, body = block.partition("\n\n")
        first, *lines = head.split("\n")
        assert first.startswith("=== ") and first.endswith(" ===")
        to = first.removesuffix(" ===").split(" to ", 1)[1]
        fields: dict[str, str] = {}
        headers: dict[str, str] = {}
        for line in lines:
            if line.startswith("  "):
                key, _, value = line.strip().partition(": ")
                headers[key] = value
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        deliveries.append(Delivery(to, fields.get("Subject"), body, headers, fields["Key"]))
    return deliveries


@pytest.fixture(params=["console", "file", "memory", "null"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AdapterHarness:
    """A fresh harness for each development adapter."""
    if request.param == "console":
        return ConsoleHarness()
    if request.param == "file":
        return FileHarness(tmp_path / "outbox" / "messages.jsonl")
    if request.param == "memory":
        return MemoryHarness()
    return NullHarness()


class TestDevelopmentAdapterContract(AdapterContract):
    """Every contract check against every development adapter."""
